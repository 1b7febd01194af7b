"""`archsearch gates` reads the built-in methods' cards without torch; the cards must say
what the registered classes really accept, or a user would copy options that fail."""

from __future__ import annotations

import subprocess
import sys

import pytest

from archsearch.gate_cards import BUILT_IN, built_in_card
from archsearch.gates import GATES, list_gates
from archsearch.registry import option_defaults


@pytest.mark.parametrize("card", BUILT_IN, ids=lambda card: card.name)
def test_each_card_lists_the_options_its_class_accepts_with_their_defaults(card) -> None:
    assert dict(card.options) == option_defaults(GATES.get(card.name).cls)


@pytest.mark.parametrize("card", BUILT_IN, ids=lambda card: card.name)
def test_the_registry_describes_each_built_in_method_as_its_card_does(card) -> None:
    info = GATES.get(card.name)
    assert (info.description, info.stochastic, info.estimator, info.fractional_scale) == (
        card.description,
        card.stochastic,
        card.estimator,
        card.fractional_scale,
    )


def test_the_cards_come_in_the_registry_order() -> None:
    assert [card.name for card in BUILT_IN] == list_gates()


def test_an_unknown_name_has_no_card() -> None:
    with pytest.raises(KeyError, match="no built-in gate card named 'nope'"):
        built_in_card("nope")


def _gates_output(first: str) -> str:
    script = (
        f"{first}\nimport sys\nfrom archsearch.cli import main\nmain(['gates'])\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray', 'mlflow'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_gates_answers_without_torch_and_prints_what_the_registry_would() -> None:
    """The command alone imports none of the heavy stacks; with the classes loaded it lists
    the registry, and the two listings are the same text."""
    alone = _gates_output("pass").splitlines()
    loaded = _gates_output("import archsearch.gates").splitlines()
    assert alone[-1] == "[]"
    assert loaded[-1] == "['torch']"
    assert alone[:-1] == loaded[:-1]
    assert len(alone[:-1]) == 2 * len(BUILT_IN)
