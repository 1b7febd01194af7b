"""A spread start (``sampler.start: spread``): a study's first trials laid out as a Latin
hypercube over the space, not drawn one by one at random.

Why: a sampler's first trials are independent uniform draws (TPE models nothing before its
10 start-up trials have ended; NSGA-II's first generation is random), so where they land is
luck. Ten log-uniform draws of ``penalty.lambda`` miss its top tenth, where the front's cheap
end is, 35% of the time (0.9 ** 10), and the hypervolume waits for a lucky later draw; in a
90-minute LeNet-5-Caffe search, about 11 trials per granularity, the start-up draws are nearly
the whole search (benchmarks/RESULTS.md, "LeNet-5-Caffe, 90 minutes, seed 0"). Here every
range is cut into as many equal slices as there are start trials (equal in log space for a
log-uniform range) and each slice gets one trial; every choice is dealt as evenly as the count
allows. A parameter drawn only under a condition is spread over the trials it applies to.
Not the default: on ``lenet300_fashion.yaml`` (12-minute searches, two seeds) it gained on one
seed and lost on the other (benchmarks/RESULTS.md, "A spread start").

The points are handed to Ray's ``OptunaSearch`` as ``points_to_evaluate``, which enqueues them
in the study: the sampler runs them first and counts them as its start-up, and a resumed search
restores them with the study. This module only computes values; Optuna stays in
``archsearch.search``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from archsearch.space.spec import Param, SearchSpec

#: trials per study the spread start lays out: TPE's start-up count, after which it models
START_TRIALS = 10


def spread_points(spec: SearchSpec, count: int = START_TRIALS) -> list[dict[str, Any]]:
    """``count`` points of ``spec``'s space, each range sliced ``count`` ways (one point per
    slice, slices in random order) and each choice list dealt evenly; seeded by
    ``spec.seed``, so a stratum (which has its own seed) gets its own layout."""
    rng = np.random.default_rng([spec.seed, 0x5EED])
    points: list[dict[str, Any]] = [{} for _ in range(count)]
    for param in spec.params:
        applies = [point for point in points if param.applies(point, spec.base)]
        for point, value in zip(applies, _layout(param, len(applies), rng), strict=True):
            point[param.name] = value
    return points


def _layout(param: Param, count: int, rng: np.random.Generator) -> list[Any]:
    """``count`` values of one parameter, as evenly spread as ``count`` allows."""
    if count == 0:
        return []
    if param.kind == "choices":
        order = rng.permutation(len(param.values))  # which choices get the extra ones
        return [param.values[order[i % len(param.values)]] for i in rng.permutation(count)]
    slots = (rng.permutation(count) + rng.random(count)) / count  # one in each 1/count of [0, 1)
    return [_at(param, float(u)) for u in slots]


def _at(param: Param, u: float) -> Any:
    """The value a fraction ``u`` of the way through a range (in log space when log-uniform)."""
    lo, hi = param.values
    if param.kind == "int":
        return min(int(hi), int(lo) + math.floor(u * (int(hi) - int(lo) + 1)))
    if param.kind == "loguniform":
        value = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    else:
        value = lo + u * (hi - lo)
    return min(float(hi), max(float(lo), value))
