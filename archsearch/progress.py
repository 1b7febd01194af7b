"""Progress bars for long work, written to stderr so stdout stays machine-readable."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


class EpochProgress:
    """One bar over all epochs of a trial (warm-up, gated, fine-tune) with the latest figures."""

    def __init__(self, total: int, *, enabled: bool = True) -> None:
        self._bar = tqdm(
            total=total, unit="epoch", file=sys.stderr, disable=not enabled, dynamic_ncols=True
        )

    def update(self, record: dict[str, Any]) -> None:
        figures = {"phase": record["phase"], "val_acc": f"{record['val_accuracy']:.4f}"}
        if "hard_cost_ratio" in record:
            figures["cost"] = f"{100 * record['hard_cost_ratio']:.1f}%"
        self._bar.set_postfix(figures, refresh=False)
        self._bar.update(1)

    def __enter__(self) -> EpochProgress:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._bar.close()
