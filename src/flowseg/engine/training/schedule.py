"""Training recipes, learning-rate schedules, optimizers and the loss.

Recipes
-------
``from_scratch``
    The Cellpose paper's schedule: SGD with momentum 0.9, learning rate 0.2 reached by a
    linear warm-up over 10 epochs, weight decay 1e-5, batch 8, and a final decay (the last
    ~15 % of the epochs halve the rate up to 10 times).  500 epochs by default; on a CPU,
    pass fewer (the schedule scales with ``epochs``).
``finetune``
    Human-in-the-loop defaults for a handful of corrected images starting from a trained
    model: a time budget (:data:`DEFAULT_TIME_BUDGET` seconds for the whole call) instead of
    a number of epochs, AdamW with learning rate 0.001 and weight decay 1e-4, 128-pixel
    crops, batch 8; per-step warm-up (10 steps, at most a third of the run) and a half-cosine
    decay over the last 40 % of the time (:func:`flowseg.engine.training.budget.step_lr`); each
    epoch draws at least 16 crops (two batches) however few the images.  With ``epochs=`` it runs
    100 epochs by default, with the per-epoch schedule of ``from_scratch`` and a 5-epoch
    warm-up (per step for runs too short for it).  The choice of these settings, measured on
    real images of new modalities, is in ``docs/training.md`` ("Fast fine-tuning").  The
    previous defaults (AdamW 0.005, 224-pixel crops, 100 epochs) reached AP@0.5 0.98 in 60
    epochs on 3 synthetic images for a width-8 model, but took 24 minutes for 3 real images
    with a width-32 model, and at 0.005 three epochs without warm-up could blow up the cell
    probability of a good model.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from .budget import DEFAULT_TIME_BUDGET

__all__ = ["DEFAULT_TIME_BUDGET", "RECIPES", "flow_loss", "lr_schedule", "make_optimizer",
           "resolve_recipe"]

RECIPES: dict[str, dict] = {
    "from_scratch": {
        "epochs": 500, "learning_rate": 0.2, "optimizer": "sgd", "momentum": 0.9,
        "weight_decay": 1e-5, "warmup": 10, "batch_size": 8, "min_per_epoch": 8, "crop": 224,
        "time_budget": None,
    },
    "finetune": {
        "epochs": 100, "learning_rate": 0.001, "optimizer": "adamw", "momentum": 0.9,
        "weight_decay": 1e-4, "warmup": 5, "batch_size": 8, "min_per_epoch": 16, "crop": 128,
        "time_budget": DEFAULT_TIME_BUDGET, "warmup_steps": 10, "decay": 0.4,
    },
}


def resolve_recipe(recipe: str | None, **overrides) -> dict:
    """The recipe's settings with every non-None override applied.

    Parameters
    ----------
    recipe : str or None
        A key of :data:`RECIPES` (None: ``"finetune"``).
    **overrides
        Settings given explicitly by the caller (None = use the recipe's value).

    Returns
    -------
    dict
    """
    name = "finetune" if recipe is None else str(recipe)
    if name not in RECIPES:
        raise ValueError(f"unknown training recipe {recipe!r}; choose one of {sorted(RECIPES)}")
    cfg = dict(RECIPES[name])
    cfg["recipe"] = name
    for k, v in overrides.items():
        if v is not None:
            cfg[k] = v
    if int(cfg["epochs"]) < 1:
        raise ValueError(f"epochs must be >= 1, got {cfg['epochs']}")
    if not float(cfg["learning_rate"]) > 0:
        raise ValueError(f"learning_rate must be > 0, got {cfg['learning_rate']}")
    if float(cfg["weight_decay"]) < 0:
        raise ValueError(f"weight_decay must be >= 0, got {cfg['weight_decay']}")
    if cfg.get("crop") is not None:
        cfg["crop"] = int(cfg["crop"])
    if int(cfg["batch_size"]) < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg['batch_size']}")
    opt = str(cfg["optimizer"]).lower()
    if opt not in ("sgd", "adamw"):
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {cfg['optimizer']!r}")
    cfg["optimizer"] = opt
    cfg["epochs"] = int(cfg["epochs"])
    cfg["batch_size"] = int(cfg["batch_size"])
    cfg["warmup"] = int(cfg["warmup"])
    cfg["learning_rate"] = float(cfg["learning_rate"])
    cfg["weight_decay"] = float(cfg["weight_decay"])
    return cfg


def lr_schedule(epochs: int, learning_rate: float, warmup: int = 10) -> np.ndarray:
    """Per-epoch learning rates: linear warm-up, plateau, stepwise halving at the end.

    The warm-up lasts ``min(warmup, epochs // 5)`` epochs (rates ``lr * (e + 1) / n``); the
    last ``epochs // 7`` epochs (at most 100) are split into up to 10 equal stages, each
    halving the rate -- the shape of Cellpose's schedule, scaled to any length.
    """
    epochs = int(epochs)
    lr = np.full(epochs, float(learning_rate))
    nw = min(int(warmup), epochs // 5)
    if nw > 0:
        lr[:nw] = learning_rate * np.arange(1, nw + 1) / nw
    ndecay = min(epochs // 7, 100)
    if ndecay >= 1:
        nstage = min(10, ndecay)
        stage = np.minimum(np.arange(ndecay) * nstage // ndecay + 1, nstage)
        lr[epochs - ndecay:] = learning_rate * 0.5 ** stage
    return lr


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: dict) -> torch.optim.Optimizer:
    """SGD (with momentum) or AdamW from a resolved recipe."""
    params = [p for p in params if p.requires_grad]
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["learning_rate"], momentum=cfg.get("momentum", 0.9),
                               weight_decay=cfg["weight_decay"])
    return torch.optim.AdamW(params, lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"])


def flow_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The Cellpose loss: ``MSE(out_flows, 5 * flows) / 2 + BCE(logit, foreground)``.

    Parameters
    ----------
    out : torch.Tensor
        ``(B, 3, H, W)`` network output (dY, dX, cell-probability logit).
    target : torch.Tensor
        ``(B, 3, H, W)`` unit flow Y, flow X and foreground (0/1).
    """
    mse = F.mse_loss(out[:, :2], 5.0 * target[:, :2]) / 2.0
    bce = F.binary_cross_entropy_with_logits(out[:, 2], target[:, 2])
    return mse + bce
