"""Errors a user can fix. The CLI turns each into one line on stderr and exit code 2.

Messages name what was wrong, where, and what to do, so the user never needs a traceback.
"""

import re


class ArchSearchError(Exception):
    """Base class for every user-facing error."""


class ConfigError(ArchSearchError):
    """A bad value in a flag, a trial config or a search space file."""


class UnknownNameError(ConfigError):
    """A name that is not in a registry (gate, model, dataset)."""


class GranularityError(ConfigError):
    """A granularity the chosen model has no layers for."""


class DataNotFoundError(ArchSearchError):
    """A data set whose files are missing where we looked."""


class FlopCountError(ArchSearchError):
    """fvcore skipped an operator that does real multiply-accumulates."""


class DegenerateTrialError(ArchSearchError):
    """Training diverged (NaN loss) or pruned a network into uselessness."""


# -- one line out of an error, for tags, progress lines and one-line messages -----------------

_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*")
#: the line Tune writes before each failure in a trial's error file
_TUNE_FAILURE = re.compile(r"(?m)^Failure # \d+ \(occurred at [^)\n]*\)$")


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (or its type name when it has none): what a
    one-line error quotes from a library's multi-line report."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def error_summary(text: str, limit: int = 500) -> str:
    """The line a user needs from a traceback: the exception line ending it (Ray prefixes
    pages of its own frames), else the first line of the text (a report without a
    traceback, such as Ray's out-of-memory kill, runs to pages of statistics). Of a Tune
    error file, which heads each failure with ``Failure # N (occurred at ...)``, the newest."""
    blocks = [block for block in _TUNE_FAILURE.split(text) if block.strip()]
    lines = [line.strip() for line in (blocks or [""])[-1].splitlines() if line.strip()]
    exceptions = [line for line in lines if _EXCEPTION_LINE.match(line)]
    summary = exceptions[-1] if exceptions else (lines[0] if lines else "")
    return (summary or "no error text")[:limit]


def short_error(text: str, limit: int = 200) -> str:
    """``error_summary`` without the exception's module path, for a progress line, e.g.
    ``DegenerateTrialError: loss became nan in gated epoch 1 step 1``."""
    summary = error_summary(text, limit=10_000)
    if not _EXCEPTION_LINE.match(summary):  # a sentence, not ``module.Error: message``
        return summary[:limit]
    head, sep, message = summary.partition(": ")
    name = head.rsplit(".", 1)[-1]
    return (f"{name}: {message}" if sep else name)[:limit]
