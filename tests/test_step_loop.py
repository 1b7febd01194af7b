"""The training step loop never waits for the device, and trains in bf16 when asked.

On a GPU every read of a tensor's value on the host (``float(loss)``, ``bool(mask.any())``,
``.item()``) is a synchronisation that empties the queue of kernels; a loop that reads one per
step runs at the speed of the round trip. There is no GPU here, so the test counts the reads a
whole trial makes on the CPU, at two batch sizes: the small one has 20 times the steps, and
the reads must not grow with them (a read every ``FINITE_CHECK_STEPS`` steps is allowed).
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from archsearch.cli import main
from archsearch.config import TrialConfig
from archsearch.data import DataSplits
from archsearch.errors import ConfigError, DegenerateTrialError
from archsearch.train import FINITE_CHECK_STEPS
from archsearch.trial import load_data, run_trial

READS = ("__bool__", "__float__", "__int__", "__index__", "item", "tolist")

BASE = TrialConfig(
    model="mlp",
    data="digits",
    gate="hard_concrete",
    granularity="neuron",
    penalty_target=0.3,  # the per-step hard-mask cost is measured, dead layers revived
    penalty_lambda=1.0,
    epochs=2,
    finetune_epochs=1,
    latency_runtime="off",
)


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_data(BASE)


def count_reads(monkeypatch: pytest.MonkeyPatch, config: TrialConfig, data: DataSplits) -> int:
    """Host reads of tensor values during one whole trial."""
    count = 0

    def counting(original):
        def read(self, *args, **kwargs):
            nonlocal count
            count += 1
            return original(self, *args, **kwargs)

        return read

    with monkeypatch.context() as patch:
        # count what an accelerator's step does: the CPU's cheaper host-side checks are off
        patch.setattr("archsearch.pruning.host_reads.DEVICES", ())
        for name in READS:
            patch.setattr(torch.Tensor, name, counting(getattr(torch.Tensor, name)))
        run_trial(config, data=data)
    return count


@pytest.mark.parametrize("gate", ["hard_concrete", "learned_threshold"])
def test_a_trial_reads_nothing_per_step(monkeypatch, digits, gate) -> None:
    few = replace(BASE, gate=gate, batch_size=256)
    many = replace(BASE, gate=gate, batch_size=8)
    steps = {c.batch_size: math.ceil(digits.size("train") / c.batch_size) for c in (few, many)}
    assert steps[8] >= 20 * steps[256] / 2
    epochs = many.resolved_pretrain_epochs + many.epochs + many.finetune_epochs
    extra_steps = epochs * (steps[8] - steps[256])
    grown = count_reads(monkeypatch, many, digits) - count_reads(monkeypatch, few, digits)
    # one finiteness read per FINITE_CHECK_STEPS steps; before, three or more per step
    assert grown <= extra_steps / FINITE_CHECK_STEPS + 4, (grown, extra_steps)


def test_a_loss_that_is_not_a_number_still_fails_the_trial(digits) -> None:
    diverging = replace(BASE, lr=1e20, batch_size=32)
    with pytest.raises(DegenerateTrialError, match=r"loss became nan in gated epoch 1 by step"):
        run_trial(diverging, data=digits)


def test_bf16_trains_as_well_as_fp32(digits) -> None:
    plain = run_trial(replace(BASE, batch_size=64), data=digits).metrics
    bf16 = run_trial(replace(BASE, batch_size=64, precision="bf16"), data=digits).metrics
    assert bf16["val_accuracy"] > 0.8, bf16
    assert abs(bf16["val_accuracy"] - plain["val_accuracy"]) < 0.05, (bf16, plain)


def test_an_unknown_precision_is_one_line(capsys) -> None:
    with pytest.raises(ConfigError, match="precision"):
        replace(BASE, precision="fp8")
    code = main(["train", "--model", "mlp", "--data", "digits", "--precision", "fp8"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "precision" in err and "fp32 or bf16" in err
