"""The front and its hypervolume on points small enough to check by hand."""

from __future__ import annotations

import csv
import io
import math

import pytest

from archsearch.pareto import (
    FRONT_COLUMNS,
    format_front_table,
    front_csv,
    non_dominated,
)

ACC_FLOPS = ("max", "min")


def test_front_keeps_the_trade_offs_and_drops_the_beaten() -> None:
    points = [
        (0.90, 100),  # best accuracy
        (0.80, 50),  # cheaper, less accurate: a trade-off
        (0.85, 120),  # beaten by the first on both
        (0.70, 50),  # as cheap as the second, less accurate: beaten
        (0.60, 10),  # cheapest
    ]
    assert non_dominated(points, ACC_FLOPS) == [True, True, False, False, True]


def test_equal_points_do_not_push_each_other_off_the_front() -> None:
    points = [(0.9, 100), (0.9, 100), (0.9, 120)]
    assert non_dominated(points, ACC_FLOPS) == [True, True, False]


def test_a_tie_in_one_objective_still_dominates_when_the_other_is_better() -> None:
    assert non_dominated([(0.9, 100), (0.9, 90)], ACC_FLOPS) == [False, True]
    assert non_dominated([(0.9, 100), (0.8, 100)], ACC_FLOPS) == [True, False]


def test_directions_are_respected() -> None:
    points = [(1, 1), (2, 2)]
    assert non_dominated(points, ("min", "min")) == [True, False]
    assert non_dominated(points, ("max", "max")) == [False, True]
    assert non_dominated(points, ("max", "min")) == [True, True]


def test_three_objectives() -> None:
    points = [(1, 1, 1), (2, 0, 1), (2, 2, 2)]
    assert non_dominated(points, ("min", "min", "min")) == [True, True, False]


def test_a_diverged_trial_is_not_a_trade_off_and_hides_nothing() -> None:
    points = [(math.nan, 10), (0.8, 100), (0.7, math.inf)]
    assert non_dominated(points, ACC_FLOPS) == [False, True, False]
    assert non_dominated([], ACC_FLOPS) == []


def test_unknown_direction_is_rejected() -> None:
    with pytest.raises(ValueError, match="'max' or 'min'"):
        non_dominated([(1, 2)], ("max", "lowest"))


ROWS = [
    {
        "run_id": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        "trial_id": "t2",
        "gate": "hard_concrete",
        "granularity": "neuron",
        "penalty.lambda": 0.5,
        "val_accuracy": 0.95,
        "test_accuracy": 0.94,
        "flops": 100_000,
        "flops_ratio": 1.0,
        "params_ratio": 1.0,
        "architecture": "64-32-10",
    },
    {
        "run_id": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "trial_id": "t1",
        "gate": "arm",
        "granularity": "neuron",
        "penalty.lambda": None,
        "val_accuracy": 0.9,
        "test_accuracy": 0.89,
        "flops": 25_000,
        "flops_ratio": 0.25,
        "params_ratio": 0.3,
        "architecture": "64-8-10",
    },
]


def test_table_is_sorted_by_flops_and_readable() -> None:
    lines = format_front_table(ROWS).splitlines()
    assert lines[0].split()[:3] == ["run", "gate", "granularity"]
    assert lines[1].startswith("aaaaaaaa  arm")  # the cheaper one first, run id shortened
    assert "aaaaaaaaa" not in lines[1]
    assert "25,000" in lines[1] and "25.00%" in lines[1] and "64-8-10" in lines[1]
    assert "100.00%" in lines[2]
    assert lines[1].split()[3] == "-"  # no lambda: a dash, not "None"
    # right-aligned numbers: the FLOPs column ends at the same place on every line
    last = lines[0].index("FLOPs") + len("FLOPs") - 1
    assert lines[1][last] == lines[2][last] == "0"


def test_empty_front_says_so() -> None:
    assert "empty" in format_front_table([])


def test_csv_has_run_ids_and_sorted_rows() -> None:
    rows = list(csv.DictReader(io.StringIO(front_csv(ROWS))))
    assert list(rows[0]) == list(FRONT_COLUMNS)
    assert [r["run_id"][0] for r in rows] == ["a", "b"]
    assert rows[0]["penalty.lambda"] == "" and rows[1]["penalty.lambda"] == "0.5"
