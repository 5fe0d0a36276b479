"""Runs that failed to learn: flagged in their record, listed (with their curves) by the report
instead of being ranked as successes.

- `val_loss_rose`: validation loss after training is above the base model's.
- `train_loss_stuck`: the training loss, as a rolling mean over `w = max(5, steps // 10)` steps,
  stays above the mean of its first `w` steps for a sustained stretch: at least
  `max(w, steps // 4)` consecutive steps. A loss that spikes and recovers is not flagged; one
  that climbs and stays up (e.g. prefix tuning at a high rate) is.
"""

from __future__ import annotations

from collections.abc import Sequence

FLAGS = ("val_loss_rose", "train_loss_stuck")


def stuck(losses: Sequence[float]) -> bool:
    n = len(losses)
    w = max(5, n // 10)
    if n < 2 * w:
        return False  # too short to tell a stretch from noise
    start = sum(losses[:w]) / w
    run = longest = 0
    for i in range(w, n + 1):
        above = sum(losses[i - w : i]) / w > start
        run = run + 1 if above else 0
        longest = max(longest, run)
    return longest >= max(w, n // 4)


def learning_flags(
    loss_curve: Sequence[Sequence[float]], val_before: float, val_after: float
) -> list[str]:
    out = []
    if not val_after <= val_before:  # NaN counts as worse
        out.append("val_loss_rose")
    if stuck([v for _, v in loss_curve]):
        out.append("train_loss_stuck")
    return out
