"""Errors a user can fix. The CLI turns each into one line on stderr and exit code 2.

Messages name what was wrong, where, and what to do, so the user never needs a traceback.
"""


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
