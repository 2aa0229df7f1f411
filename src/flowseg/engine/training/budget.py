"""Time budgets and per-step learning rates of fine-tuning.

A fine-tune with ``time_budget=S`` must return within about ``S`` seconds of wall-clock time
*in all* (targets, training, the check, the size model and the save).  :class:`TimeBudget`
is the clock: the work after training reserves its (measured or estimated) time, and the
training loop runs while :meth:`TimeBudget.train_left` stays above the time of one more
step.

The learning rate of a fine-tune is set per *step* so that it is safe for any length:
:func:`step_lr` warms up linearly over the first ``warmup`` steps (at most a third of the
run, at least one step) and then decays along a half cosine over the last ``decay`` part of
the run, down to 2 % of the peak.  In a time-budgeted run the position in the run is the
fraction of the training time used so far (steps take about the same time), in a run of
fixed epochs the fraction of the steps.  A run of one epoch of two steps thus trains at
half the rate, then at the full rate decaying -- never at full rate from the first step
(the 3-epoch fine-tunes of the old epoch-wise schedule had no warm-up at all and could blow
up the cell probability of a good model).
"""

from __future__ import annotations

import math
import time

__all__ = ["DEFAULT_TIME_BUDGET", "TimeBudget", "step_lr"]

#: seconds of a fine-tune without ``epochs``: the whole ``flowseg train`` of 1-3 images of
#: ~1 MP (start-up and reading included) then ends within 2 minutes on a 2-core CPU
DEFAULT_TIME_BUDGET = 100.0


class TimeBudget:
    """Wall-clock budget of one call.

    Parameters
    ----------
    seconds : float or None
        The budget; None: unlimited.
    start : float, optional
        ``time.monotonic()`` at the start of the call (default: now).
    """

    def __init__(self, seconds: float | None, start: float | None = None) -> None:
        if seconds is not None and not float(seconds) > 0:
            raise ValueError(f"time_budget must be a number of seconds > 0, got {seconds}")
        self.seconds = None if seconds is None else float(seconds)
        self.start = time.monotonic() if start is None else float(start)
        self.reserved = 0.0
        self.train_start: float | None = None
        self.train_total: float | None = None

    def elapsed(self) -> float:
        """Seconds since the start of the call."""
        return time.monotonic() - self.start

    def remaining(self) -> float:
        """Seconds left (``inf`` without a budget)."""
        return math.inf if self.seconds is None else self.seconds - self.elapsed()

    def reserve(self, seconds: float) -> None:
        """Keep ``seconds`` for the work after training."""
        self.reserved = max(0.0, float(seconds))

    def start_training(self) -> None:
        """Mark the start of the training loop; fixes the training time available."""
        self.train_start = time.monotonic()
        self.train_total = max(0.0, self.remaining() - self.reserved)

    def train_left(self) -> float:
        """Training seconds left (``inf`` without a budget)."""
        return self.remaining() - self.reserved

    def train_fraction(self) -> float:
        """Fraction of the training time used (0 without a budget)."""
        if self.seconds is None or self.train_start is None or not self.train_total:
            return 0.0
        return min(1.0, (time.monotonic() - self.train_start) / self.train_total)


def step_lr(base: float, step: int, fraction: float, *, warmup: int, decay: float = 0.4,
            floor: float = 0.02) -> float:
    """Learning rate of step ``step`` (0-based) of a fine-tune.

    Parameters
    ----------
    base : float
        Peak learning rate.
    step : int
        Steps done before this one.
    fraction : float
        Position in the run, 0..1 (time used or steps done, see the module text).
    warmup : int
        Warm-up steps (linear from ``base / (warmup + 1)``); callers cap it to a third of
        the run.
    decay : float
        Last part of the run (fraction) over which the rate falls along a half cosine.
    floor : float
        The rate at the end of the decay, as a fraction of ``base``.

    Returns
    -------
    float
    """
    lr = float(base)
    if step < warmup:
        lr *= (step + 1) / (warmup + 1)
    start = 1.0 - float(decay)
    if decay > 0 and fraction > start:
        t = min(1.0, (fraction - start) / decay)
        lr *= floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
    return lr
