"""The yardstick and its exact hypervolume, checked against hand values and brute force."""

from __future__ import annotations

import itertools
import math
import random
import time

import numpy as np
import pytest

from archsearch.hypervolume import (
    ACCURACY_RANGE,
    LOG10_COST_RANGE,
    YARDSTICK,
    box_point,
    dominated_volume,
    exclusive_shares,
    front_hypervolume,
    normalised_point,
)

ACC_FLOPS = {"val_accuracy": "max", "flops": "min"}
ACC_FLOPS_LATENCY = {"val_accuracy": "max", "flops": "min", "latency": "min"}


def _inclusion_exclusion(points: list[list[float]], reference: list[float]) -> float:
    """Brute force: the union of boxes [p, ref) summed over every subset with alternating
    signs (the intersection of boxes is the box from their coordinate-wise maximum)."""
    total = 0.0
    for size in range(1, len(points) + 1):
        for subset in itertools.combinations(points, size):
            corner = np.max(np.array(subset), axis=0)
            total += (-1) ** (size + 1) * float(np.prod(np.array(reference) - corner))
    return total


def _grid_count(points: list[tuple[int, ...]], side: int) -> int:
    """Brute force on integer points, reference (side, ..., side): count the unit cells whose
    lower corner some point is at or below in every coordinate."""
    dims = len(points[0])
    return sum(
        any(all(p <= c for p, c in zip(point, cell, strict=True)) for point in points)
        for cell in itertools.product(range(side), repeat=dims)
    )


# -- the yardstick on rows -----------------------------------------------------------------


def test_the_box_is_chance_to_perfect_accuracy_and_three_decades_of_cost() -> None:
    assert ACCURACY_RANGE == YARDSTICK.accuracy == (0.1, 1.0)
    assert LOG10_COST_RANGE == YARDSTICK.log10_cost == (-3.0, 0.0)


def test_a_perfect_trial_at_a_thousandth_of_the_cost_fills_the_box() -> None:
    rows = [{"val_accuracy": 1.0, "flops_ratio": 0.001}]
    assert front_hypervolume(rows, ACC_FLOPS) == pytest.approx(1.0)


def test_halfway_accuracy_at_a_tenth_of_the_cost_is_one_sixth() -> None:
    # accuracy 0.55 is half way from chance; a tenth of the cost is one decade of three
    rows = [{"val_accuracy": 0.55, "flops_ratio": 0.1}]
    assert normalised_point(rows[0], ACC_FLOPS) == pytest.approx([0.5, 2 / 3])
    assert front_hypervolume(rows, ACC_FLOPS) == pytest.approx(1 / 6)


@pytest.mark.parametrize(
    "row",
    [
        {"val_accuracy": 0.1, "flops_ratio": 0.001},
        {"val_accuracy": 0.05, "flops_ratio": 0.01},
        {"val_accuracy": 0.9, "flops_ratio": 1.0},
        {"val_accuracy": 0.9, "flops_ratio": 3.0},
    ],
)
def test_chance_accuracy_or_the_dense_cost_earns_nothing(row: dict[str, float]) -> None:
    assert front_hypervolume([row], ACC_FLOPS) == 0.0


def test_two_trials_count_their_union_not_their_sum() -> None:
    rows = [
        {"val_accuracy": 1.0, "flops_ratio": 0.1},  # point (0, 2/3): area 1/3
        {"val_accuracy": 0.55, "flops_ratio": 0.001},  # point (0.5, 0): area 1/2
    ]
    # overlap [0.5, 1] x [2/3, 1] = 1/6
    assert front_hypervolume(rows, ACC_FLOPS) == pytest.approx(1 / 3 + 1 / 2 - 1 / 6)


def test_a_cost_below_the_box_or_zero_sits_on_its_best_edge() -> None:
    for ratio in (1e-6, 0.0, -1.0):
        row = {"val_accuracy": 1.0, "flops_ratio": ratio}
        assert normalised_point(row, ACC_FLOPS) == [0.0, 0.0]


@pytest.mark.parametrize(
    "row",
    [
        {"flops_ratio": 0.1},
        {"val_accuracy": 0.9},
        {"val_accuracy": None, "flops_ratio": 0.1},
        {"val_accuracy": math.nan, "flops_ratio": 0.1},
        {"val_accuracy": 0.9, "flops_ratio": math.inf},
        {"val_accuracy": "0.9", "flops_ratio": 0.1},
        {"val_accuracy": True, "flops_ratio": 0.1},
    ],
)
def test_a_row_without_usable_values_is_skipped(row: dict[str, object]) -> None:
    assert normalised_point(row, ACC_FLOPS) is None
    good = {"val_accuracy": 0.55, "flops_ratio": 0.1}
    assert front_hypervolume([row, good], ACC_FLOPS) == pytest.approx(1 / 6)


def test_a_min_objective_may_be_named_by_its_ratio_column() -> None:
    row = {"val_accuracy": 0.55, "params_ratio": 0.01}
    named = normalised_point(row, {"val_accuracy": "max", "params": "min"})
    assert named == normalised_point(row, {"val_accuracy": "max", "params_ratio": "min"})
    assert named == pytest.approx([0.5, 1 / 3])


def test_an_unknown_direction_is_refused() -> None:
    with pytest.raises(ValueError, match="'max' or 'min'"):
        normalised_point({"val_accuracy": 0.5}, {"val_accuracy": "up"})


def test_three_objectives_measure_the_share_of_the_cube() -> None:
    rows = [
        # (0.5, 2/3, 0): a box of 0.5 * 1/3 * 1
        {"val_accuracy": 0.55, "flops_ratio": 0.1, "latency_ratio": 0.001},
        # (0, 0, 2/3): a box of 1 * 1 * 1/3
        {"val_accuracy": 1.0, "flops_ratio": 0.0005, "latency_ratio": 0.1},
        # beaten by the first in every objective: adds nothing
        {"val_accuracy": 0.50, "flops_ratio": 0.2, "latency_ratio": 0.002},
        # no latency measured: skipped
        {"val_accuracy": 1.0, "flops_ratio": 0.001},
    ]
    overlap = 0.5 * (1 / 3) * (1 / 3)  # from (0.5, 2/3, 2/3) to (1, 1, 1)
    expected = 0.5 / 3 + 1 / 3 - overlap
    assert front_hypervolume(rows, ACC_FLOPS_LATENCY) == pytest.approx(expected)
    assert front_hypervolume(rows[:1], ACC_FLOPS_LATENCY) == pytest.approx(1 / 6)
    assert front_hypervolume([], ACC_FLOPS_LATENCY) == 0.0


def test_the_yardstick_stays_in_the_unit_interval() -> None:
    rng = random.Random(3)
    rows = [
        {
            "val_accuracy": rng.uniform(-0.2, 1.2),
            "flops_ratio": 10 ** rng.uniform(-5, 1),
            "latency_ratio": 10 ** rng.uniform(-5, 1),
        }
        for _ in range(200)
    ]
    for objectives in (ACC_FLOPS, ACC_FLOPS_LATENCY):
        assert 0.0 < front_hypervolume(rows, objectives) <= 1.0


# -- dominated_volume ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_2d_matches_inclusion_exclusion(seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1, 2, size=(11, 2)).tolist()
    reference = [2.0, 2.5]
    expected = _inclusion_exclusion(points, reference)
    assert dominated_volume(points, reference) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(6))
def test_3d_matches_inclusion_exclusion(seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, 1, size=(9, 3)).tolist()
    reference = [1.0, 1.0, 1.0]
    expected = _inclusion_exclusion(points, reference)
    assert dominated_volume(points, reference) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("seed", "dims"), [(0, 3), (1, 3), (2, 3), (3, 4), (4, 4)])
def test_integer_points_match_a_cell_count(seed: int, dims: int) -> None:
    rng = random.Random(seed)
    side = 6
    points = [tuple(rng.randrange(side) for _ in range(dims)) for _ in range(12)]
    expected = _grid_count(points, side)
    assert dominated_volume(points, [side] * dims) == pytest.approx(expected)


def test_one_dimension_is_the_distance_from_the_best_point() -> None:
    assert dominated_volume([[0.7], [0.2], [0.5]], [1.0]) == pytest.approx(0.8)
    assert dominated_volume([[1.5]], [1.0]) == 0.0


def test_a_dominated_point_changes_nothing() -> None:
    rng = np.random.default_rng(7)
    points = rng.uniform(0, 1, size=(30, 3))
    reference = [1.0, 1.0, 1.0]
    before = dominated_volume(points.tolist(), reference)
    beaten = points[0] + 0.01 * (1 - points[0])
    after = dominated_volume([*points.tolist(), beaten.tolist()], reference)
    assert after == pytest.approx(before, abs=1e-12)


def test_order_and_duplicates_do_not_matter() -> None:
    rng = np.random.default_rng(11)
    points = rng.uniform(0, 1, size=(25, 3)).tolist()
    reference = [1.0, 1.0, 1.0]
    value = dominated_volume(points, reference)
    shuffled = list(reversed(points))
    random.Random(0).shuffle(shuffled)
    assert dominated_volume(shuffled, reference) == pytest.approx(value, abs=1e-12)
    assert dominated_volume(points + points[:10], reference) == pytest.approx(value, abs=1e-12)


def test_points_outside_the_reference_or_not_finite_add_nothing() -> None:
    reference = [1.0, 1.0, 1.0]
    inside = [[0.5, 0.5, 0.5]]
    outside = [
        [0.1, 0.1, 1.0],  # on the reference in one coordinate
        [0.1, 2.0, 0.1],
        [math.nan, 0.1, 0.1],
        [0.1, -math.inf, 0.1],
    ]
    assert dominated_volume(inside + outside, reference) == pytest.approx(0.125)
    assert dominated_volume(outside, reference) == 0.0
    assert dominated_volume([], reference) == 0.0


def test_a_points_exclusive_share_is_what_the_yardstick_loses_without_it() -> None:
    rows = [
        {"val_accuracy": 0.9, "flops_ratio": 0.5},
        {"val_accuracy": 0.85, "flops_ratio": 0.05},
        {"val_accuracy": 0.7, "flops_ratio": 0.001},
        {"val_accuracy": 0.6, "flops_ratio": 0.2},  # beaten by the second
    ]
    points = [(r["val_accuracy"], r["flops_ratio"]) for r in rows]
    whole = front_hypervolume(rows, ACC_FLOPS)
    shares = exclusive_shares(points)
    for index, share in enumerate(shares):
        others = rows[:index] + rows[index + 1 :]
        assert share == pytest.approx(whole - front_hypervolume(others, ACC_FLOPS))
    assert shares[3] == 0.0
    # a twin holds nothing alone; chance accuracy or a diverged result holds nothing at all
    assert exclusive_shares([(0.8, 0.1), (0.8, 0.1)]) == [0.0, 0.0]
    assert exclusive_shares([(0.1, 0.01), (math.nan, 0.01)]) == [0.0, 0.0]


def test_under_an_accuracy_floor_a_share_is_what_the_feasible_front_loses() -> None:
    """A search's front holds its feasible trials only, measured from chance: a point's share
    under a floor is what that front loses without it, and an infeasible point holds and
    shades nothing, however cheap."""
    rows = [
        {"val_accuracy": 0.90, "flops_ratio": 0.3},
        {"val_accuracy": 0.84, "flops_ratio": 0.002},
        {"val_accuracy": 0.75, "flops_ratio": 0.0005},  # infeasible under 0.8
        {"val_accuracy": 0.86, "flops_ratio": 0.02},
    ]
    feasible = [r for r in rows if r["val_accuracy"] >= 0.8]
    whole = front_hypervolume(feasible, ACC_FLOPS)
    shares = exclusive_shares([(r["val_accuracy"], r["flops_ratio"]) for r in rows], 0.8)
    assert shares[2] == 0.0
    for row, share in zip(rows, shares, strict=True):
        if row in feasible:
            others = [r for r in feasible if r is not row]
            assert share == pytest.approx(whole - front_hypervolume(others, ACC_FLOPS))


@pytest.mark.parametrize("seed", range(5))
def test_exclusive_shares_match_removing_each_point(seed: int) -> None:
    """The one-sweep shares against the exact volume without each point, on sets with
    twins, beaten points, costs below the box and accuracies at or below chance."""
    rng = random.Random(seed)
    points = [
        (rng.choice([0.05, 0.1, 0.5, 0.8, 0.9]), 10 ** rng.uniform(-4, 0.2)) for _ in range(12)
    ]
    points += points[:2]  # twins hold nothing alone
    boxed = [box_point(a, c) for a, c in points]
    whole = dominated_volume(boxed, [1.0, 1.0])
    for index, share in enumerate(exclusive_shares(points)):
        without = dominated_volume(boxed[:index] + boxed[index + 1 :], [1.0, 1.0])
        assert share == pytest.approx(whole - without, abs=1e-12)


def test_a_mismatched_point_or_reference_is_refused() -> None:
    with pytest.raises(ValueError, match="coordinates"):
        dominated_volume([[0.1, 0.2]], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="reference"):
        dominated_volume([[0.1]], [])


def test_a_few_hundred_points_in_3d_are_quick() -> None:
    rng = np.random.default_rng(5)
    # points on a sphere's octant: every one of them is on the front
    directions = np.abs(rng.normal(size=(300, 3)))
    points = 1 - directions / np.linalg.norm(directions, axis=1, keepdims=True)
    start = time.perf_counter()
    value = dominated_volume(points.tolist(), [1.0, 1.0, 1.0])
    assert time.perf_counter() - start < 5.0
    # the union of boxes under the octant of the unit sphere approaches its volume, pi/6
    assert 0.45 < value < math.pi / 6
