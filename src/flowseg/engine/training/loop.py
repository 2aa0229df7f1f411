"""The epoch / batch loop of :func:`flowseg.engine.training.train.train`.

One :class:`TrainLoop` holds what the loop changes -- network, optimizer, random stream,
history, the best *scored* weights -- and runs epochs until the epochs are done, the time
budget is spent or the caller cancels.  Scoring (validation images, or the quick check of a
fine-tune on its training images, :mod:`flowseg.engine.training.quickcheck`) happens every
``val_every`` epochs (fixed epochs), at half the training time (time budget) and at the end;
the start model of a fine-tune is scored first (epoch 0), so a candidate is kept only if it
scores better than the start.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..progress import Cancelled, check_cancel, report
from .batches import BatchMaker
from .budget import TimeBudget, step_lr
from .checkpoint import rng_state
from .precision import forward_autocast
from .schedule import flow_loss
from .start import epoch_indices

__all__ = ["TrainLoop"]


@dataclass
class TrainLoop:
    """State and settings of one training loop (see the module text).

    Attributes
    ----------
    net, opt
        Network (trained in place) and optimizer.
    cfg : dict
        Resolved settings (``batch_size``, ``learning_rate``, ``warmup``, ``precision`` --
        ``"bf16"``: the forward under bf16 autocast, :mod:`flowseg.engine.training.precision`
        ...).
    maker : BatchMaker
        Crops of the cached samples.
    n_samples, n_per_epoch : int
        Cached samples, crops per epoch.
    epochs : int or None
        Epochs to run in all (None: until the budget is spent).
    lrs : np.ndarray or None
        Per-epoch rates of a fixed-epoch run; None: :func:`~flowseg.engine.training.budget.step_lr`.
    warmup_steps : int
        Per-step warm-up (0: the per-epoch rates only).
    budget : TimeBudget
        The clock (``seconds`` None: no budget).
    scorer : callable or None
        ``scorer() -> (key list, loss, ap)`` for the current weights; None: keep the last.
    prefix : str
        History keys of the scores: ``"val"`` (``val_epoch``, ``val_loss``, ``val_ap``) or
        ``"check"``.
    val_every : int
        Score every this many epochs (fixed-epoch runs).
    warmup_scores : bool
        Whether states from the warm-up may be scored (and kept): not for a fine-tune,
        whose start model is the first candidate.
    min_gain : float
        How much higher a trained state's first score (AP@0.5 of the quick check) must be
        than the start model's (epoch 0) to replace it (0: strictly better).
    """

    net: torch.nn.Module
    opt: torch.optim.Optimizer
    cfg: dict
    maker: BatchMaker
    n_samples: int
    n_per_epoch: int
    epochs: int | None
    lrs: np.ndarray | None
    warmup_steps: int
    budget: TimeBudget
    scorer: Callable[[], tuple[list, float, float | None]] | None
    prefix: str
    val_every: int
    rng: np.random.Generator
    hist: dict
    warmup_scores: bool = True
    min_gain: float = 0.0
    best: dict | None = None
    epoch: int = 0
    step: int = 0
    scored_step: int = -1
    mid_scored: bool = False
    epoch_open: bool = False
    cancelled: bool = False
    timed_out: bool = False
    n_crops: int = 0
    t_loop: float = 0.0
    step_time: float = 0.0
    epoch_rng: dict = field(default_factory=dict)
    checkpoint: Callable[[int, dict], None] | None = None
    checkpoint_every: float = 10.0
    progress: Any = None
    cancel: Any = None

    # ------------------------------------------------------------------ helpers
    @property
    def batches_per_epoch(self) -> int:
        """Batches in one epoch."""
        return -(-self.n_per_epoch // self.cfg["batch_size"])

    def _fraction(self) -> float:
        if self.budget.seconds is not None and self.epochs is None:
            return self.budget.train_fraction()
        total = (self.epochs or 1) * self.batches_per_epoch
        return min(1.0, self.step / max(1, total))

    def _estimated_steps(self) -> int:
        if self.epochs is not None:
            total = self.epochs * self.batches_per_epoch
            if self.budget.seconds is None or not self.step_time:
                return total
            return min(total, self.step + int(max(0.0, self.budget.train_left()) /
                                              self.step_time))
        if not self.step_time:
            return max(self.step + 1, 2 * self.batches_per_epoch)
        return self.step + max(1, int(max(0.0, self.budget.train_left()) / self.step_time))

    def _warmup(self) -> int:
        """Warm-up steps, capped to a third of the (expected) run, at least 1."""
        if self.warmup_steps <= 0:
            return 0
        return max(1, min(self.warmup_steps, self._estimated_steps() // 3))

    def lr(self) -> float:
        """Learning rate of the next step."""
        if self.lrs is not None:
            base = float(self.lrs[min(self.epoch, len(self.lrs) - 1)])
            w = self._warmup()
            return base * (self.step + 1) / (w + 1) if self.step < w else base
        return step_lr(self.cfg["learning_rate"], self.step, self._fraction(),
                       warmup=self._warmup(), decay=float(self.cfg.get("decay", 0.4)))

    def _time_up(self) -> bool:
        if self.budget.seconds is None:
            return False
        return self.budget.train_left() < max(self.step_time, 1e-3)

    def score(self, epoch: int) -> None:
        """Score the current weights; keep them as ``best`` if they beat the best so far."""
        if self.scorer is None:
            return
        key, loss, ap = self.scorer()
        self.hist[f"{self.prefix}_epoch"].append(epoch)
        self.hist[f"{self.prefix}_loss"].append(loss)
        self.hist[f"{self.prefix}_ap"].append(ap)
        self.scored_step = self.step
        if self.best is None or self._beats(list(key)):
            self.best = {"epoch": int(epoch), "score": list(key),
                         "state_dict": {k: v.detach().clone()
                                        for k, v in self.net.state_dict().items()}}

    def _beats(self, key: list) -> bool:
        """Whether ``key`` beats the best so far; against a fine-tune's start model (epoch 0)
        its first entry (the check's AP@0.5) must be higher by ``min_gain``."""
        best = list(self.best["score"]) if self.best is not None else None
        if best is None:
            return True
        if self.min_gain > 0 and int(self.best["epoch"]) == 0:
            return key[0] >= best[0] + self.min_gain
        return key > best

    def _due(self, epoch_done: int) -> bool:
        if self.scorer is None or (not self.warmup_scores and self.step < self._warmup()):
            return False  # never a fine-tune's weights from the middle of the warm-up
        if self.epochs is not None:
            return epoch_done % self.val_every == 0 or epoch_done == self.epochs
        # time budget: once at half the training time (the end is scored after the loop)
        if self.mid_scored or self.budget.train_fraction() < 0.5:
            return False
        self.mid_scored = True
        return True

    # ------------------------------------------------------------------ the loop
    def run(self, start_epoch: int, mf: torch.memory_format, device: torch.device) -> None:
        """Train from ``start_epoch`` until done, out of time or cancelled."""
        bs = self.cfg["batch_size"]
        precision = str(self.cfg.get("precision", "fp32"))
        nb = self.batches_per_epoch
        self.epoch = start_epoch
        self.step = start_epoch * nb
        self.epoch_rng = rng_state(self.rng)
        last_ck = time.monotonic()
        try:
            while self.epochs is None or self.epoch < self.epochs:
                if self._time_up():
                    self.timed_out = True
                    break
                self.epoch_rng = rng_state(self.rng)
                self.epoch_open = True
                t0 = time.monotonic()
                self.net.train()
                order = epoch_indices(self.rng, self.n_samples, self.n_per_epoch)
                loss_sum, seen = 0.0, 0
                for idx, x, y in self.maker.epoch(self.rng, order, bs):
                    check_cancel(self.cancel)
                    if self._time_up():
                        self.timed_out = True
                        break
                    ts = time.monotonic()
                    lr = self.lr()
                    for g in self.opt.param_groups:
                        g["lr"] = lr
                    with forward_autocast(precision, device):  # bf16: the forward only
                        out = self.net(torch.from_numpy(x).to(device)
                                       .contiguous(memory_format=mf))[0]
                    loss = flow_loss(out.float(), torch.from_numpy(y).to(device))
                    self.opt.zero_grad(set_to_none=True)
                    loss.backward()
                    self.opt.step()
                    loss_sum += float(loss.item()) * len(idx)
                    seen += len(idx)
                    self.step += 1
                    self.n_crops += len(idx)
                    dt = time.monotonic() - ts
                    self.step_time = dt if not self.step_time else 0.7 * self.step_time + 0.3 * dt
                    report(self.progress, "train", self.step, self._estimated_steps(), "",
                           epoch=self.epoch + 1, loss=loss_sum / seen, lr=lr,
                           elapsed=round(self.budget.elapsed(), 2), budget=self.budget.seconds)
                dt = time.monotonic() - t0
                self.t_loop += dt
                if seen == 0:
                    break
                self.hist["epoch"].append(self.epoch + 1)
                self.hist["loss"].append(loss_sum / seen)
                self.hist["lr"].append(float(self.opt.param_groups[0]["lr"]))
                self.hist["seconds"].append(dt)
                if self.timed_out:  # a partial last epoch: recorded, not counted as done
                    break
                self.epoch += 1
                self.epoch_open = False
                info: dict = {"loss": loss_sum / seen, "lr": self.hist["lr"][-1],
                              "elapsed": round(self.budget.elapsed(), 2),
                              "budget": self.budget.seconds, "precision": precision}
                if self._due(self.epoch):
                    self.score(self.epoch)
                    self.net.to(memory_format=mf)
                    info.update(val_loss=self.hist[f"{self.prefix}_loss"][-1],
                                val_ap=self.hist[f"{self.prefix}_ap"][-1])
                total = self.epochs or max(self.epoch, math.ceil(self._estimated_steps() / nb))
                report(self.progress, "epoch", self.epoch, total, "", **info)
                if self.checkpoint is not None and (
                        self.checkpoint_every <= 0
                        or time.monotonic() - last_ck >= 60 * self.checkpoint_every):
                    self.checkpoint(self.epoch, rng_state(self.rng))
                    last_ck = time.monotonic()
            if self.scorer is not None and self.step > self.scored_step:
                self.score(self.hist["epoch"][-1] if self.hist["epoch"] else self.epoch)
        except Cancelled:
            self.cancelled = True
