"""Training and human-in-the-loop fine-tuning: :func:`train`.

The loop follows the Cellpose method: targets are the unit flows of each label image
(computed once, :mod:`flowseg.engine.training.prep`), every epoch draws random crops rotated,
mirrored and zoomed around the model's object diameter (:mod:`flowseg.engine.training.augment`),
and the loss is ``MSE(flows_out, 5 * flows) / 2 + BCE(cellprob_logit, foreground)``
(:mod:`flowseg.engine.training.schedule`, which also holds the two recipes ``from_scratch`` and
``finetune``).  The epochs run in :mod:`flowseg.engine.training.loop`.

A fine-tune (recipe ``finetune``) from a trained model runs for a *time budget* by default
(:mod:`flowseg.engine.training.budget`): the whole call -- targets, training, the check, the size
model and the save -- ends within about ``time_budget`` seconds.  It never returns a model
worse than its start: the start model is scored first (on validation images, or by the quick
check on windows of the training images, :mod:`flowseg.engine.training.quickcheck`) and a trained
candidate is kept only if it scores better; the size model keeps the start model's
regression and only re-fits its offset (:func:`flowseg.engine.inference.size.calibrate_size_model`).

Runs of fixed epochs are resumable: a checkpoint (:mod:`flowseg.engine.training.checkpoint`) is
written every ``checkpoint_every`` minutes, at the end and on cancel; ``train(...,
resume=path)`` continues it (the same data must be passed again).  With the same ``seed``, a
resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..inference.model import Model
from ..io.registry import default_checkpoint_path
from .batches import BatchMaker
from .budget import TimeBudget
from .checkpoint import load_checkpoint, resume_checks, rng_state, save_checkpoint, set_rng_state
from .finetune import make_scorer, outcome, reserve_time
from .finish import finish_model, images_style, size_views
from .intensity import IntensityAug
from .loop import TrainLoop
from .precision import resolve_precision
from .prep import check_pairs, prepare_samples, split_binary_masks
from .quickcheck import MIN_GAIN
from .schedule import RECIPES, lr_schedule, make_optimizer, resolve_recipe
from .start import TrainResult, base_scales, check_writable, resolve_model

__all__ = ["RECIPES", "TrainResult", "train"]


def train(
    model: Any = None,
    images: Sequence[np.ndarray] = (),
    labels: Sequence[np.ndarray] = (),
    *,
    val_images: Sequence[np.ndarray] | None = None,
    val_labels: Sequence[np.ndarray] | None = None,
    recipe: str | None = None,
    epochs: int | None = None,
    time_budget: float | None = None,
    learning_rate: float | None = None,
    batch_size: int | None = None,
    optimizer: str | None = None,
    weight_decay: float | None = None,
    momentum: float | None = None,
    warmup: int | None = None,
    crop: int | None = None,
    rescale: bool = True,
    diameter: float | None = None,
    channels: Sequence[int | None] | None = None,
    min_masks: int = 1,
    n_per_epoch: int | None = None,
    val_every: int | None = None,
    names: Sequence[str] | None = None,
    anisotropy: float | None = None,
    width: int = 32,
    diam_mean: float | None = None,
    save_path: os.PathLike | None = None,
    overwrite: bool = False,
    checkpoint_path: os.PathLike | None = None,
    checkpoint_every: float = 10.0,
    resume: os.PathLike | None = None,
    progress=None,
    cancel=None,
    seed: int | None = None,
    threads: int | None = None,
    workers: int = 0,
    intensity: IntensityAug | dict | bool | str | None = None,
    scale_range: Sequence[float] | None = None,
    precision: str = "auto",
) -> TrainResult:
    """Train a model from scratch or fine-tune one on image / label pairs.

    Parameters
    ----------
    model : flowseg.Model, str, path or None
        Starting model (copied, never modified in place); a name or path is loaded with
        :meth:`Model.load`; None makes a new model of base ``width`` and ``diam_mean``.
    images, labels : sequences of np.ndarray
        Training images (2D, 2D + channels, or 3D volumes, as for inference) and their
        integer instance labels (0 = background).
    val_images, val_labels : sequences of np.ndarray, optional
        Held-out pairs: validation loss and AP@0.5 (segmenting with the true diameter)
        every ``val_every`` epochs; the best weights by AP are kept (for a fine-tune, the
        start model is validated first and kept unless a trained state beats it).
    recipe : {"from_scratch", "finetune"}, optional
        Defaults for the settings below (see :data:`RECIPES`); default ``"finetune"``.
    epochs : int, optional
        Train this many epochs.  Without it a fine-tune runs for its time budget, a
        ``from_scratch`` run for the recipe's epochs.
    time_budget : float, optional
        Seconds of wall-clock time for the *whole* call: targets, training, checks, size
        model and save (training stops early enough to finish the rest in time).  Default:
        the ``finetune`` recipe's budget (about 100 s, so ``flowseg train`` on 1-3 images
        of ~1 MP ends within 2 minutes on a 2-core CPU) when neither ``epochs`` nor
        ``resume`` is given, else none.  With ``epochs`` too, training stops at whichever
        comes first.  Runs under a budget write no checkpoint and cannot be resumed.
    learning_rate, batch_size, optimizer, weight_decay, momentum, warmup
        Override the recipe (``optimizer``: ``"sgd"`` or ``"adamw"``; ``warmup`` in epochs).
    crop : int, optional
        Side of the square training crops (a multiple of 8; default: the recipe's).
    rescale : bool
        Zoom every image so its median object diameter becomes the model's ``diam_mean``.
    diameter : float, optional
        Object diameter of all training images (default: measured from each label image).
    channels : (int, int or None), optional
        0-based (cytoplasm, nucleus) channels, as in :meth:`Model.segment`.
    min_masks : int
        Images with fewer objects are skipped (with a warning).
    n_per_epoch : int, optional
        Crops per epoch (default: the number of 2D training samples, at least the
        recipe's ``min_per_epoch`` and ``batch_size``).
    val_every : int, optional
        Score every this many epochs (default: ``max(1, epochs // 10)``; the check of a
        fine-tune of under 8 epochs without validation images: at the end only) and at the
        end.  Under a time budget: at half the training time and at the end.
    names : sequence of str, optional
        Image names for the training record.
    anisotropy : float, optional
        For 3D training volumes: also train on XZ / YZ slices resampled by this factor.
    width, diam_mean : int, float
        Size and diameter of a new model (``model=None`` only).
    save_path : path, optional
        Save the final model here (atomically; an existing file only with ``overwrite``).
    checkpoint_path : path, optional
        Checkpoint file (default when saving: ``save_path`` + ``".ckpt"``, or for a model
        in the user model folder the same name in the checkpoint folder,
        :func:`flowseg.engine.io.registry.default_checkpoint_path`); not written under a
        time budget.
    checkpoint_every : float
        Minutes between checkpoints (0: every epoch); one is also written at the end and
        on cancel.
    resume : path, optional
        A checkpoint to continue from (pass the same data and settings).
    progress, cancel
        The engine's progress / cancel protocol.  Stages, in order: ``"flows"`` (targets,
        one event per image), ``"check"`` (scoring the start model of a fine-tune, and
        later candidates), ``"train"`` (one event per batch; ``done`` / ``total`` count
        batches, ``total`` is an estimate under a time budget; ``info`` has ``epoch``,
        ``loss``, ``lr``, ``elapsed`` -- seconds since the call began -- and ``budget`` --
        seconds or None), ``"epoch"`` (``info``: ``loss``, ``lr``, ``elapsed``, ``budget``,
        ``precision``, and ``val_loss`` / ``val_ap`` when scored), ``"validate"``
        (validation images), ``"size"`` (the size model).  On cancel, training stops after
        the current batch and the best *scored* weights are returned and saved: for a
        fine-tune the start model's unless a trained state checked better; never an
        unscored state.
    seed : int, optional
        Makes crops and their order reproducible.
    threads : int, optional
        Torch CPU threads (default: all cores available to the process).
    workers : int
        0 (default): crops are made in this process from one random stream.  >= 1: each
        batch gets its own seed and ``workers`` forked processes make them ahead of the
        network (for a GPU, whose steps outrun one CPU core); any ``workers >= 1`` gives the
        same batches, which differ from ``workers=0``'s.
    intensity : IntensityAug, dict, True or None
        Intensity augmentation of each crop (:mod:`flowseg.engine.training.intensity`;
        ``True`` or ``"default"``: the default settings, a dict: the default with these
        settings).  None (the default): none, as before; the training record keeps it.
    scale_range : (float, float), optional
        Random zoom of each crop around its image's base scale (default 0.75-1.25).
    precision : {"auto", "fp32", "bf16"}
        ``"bf16"``: the network's forward of each training batch under bfloat16 autocast
        (CPU only; weights, optimizer, loss, scoring and the saved model stay float32).
        ``"auto"``: bf16 on a CPU with native bf16 (``avx512_bf16`` / ``amx_bf16``), else
        fp32 (always on CUDA / MPS); the environment variable ``FLOWSEG_PRECISION`` replaces
        ``"auto"``.  Recorded as ``config["precision"]`` of the training record
        (:mod:`flowseg.engine.training.precision`).

    Returns
    -------
    TrainResult
        Unpacks as ``(model, history)``; ``improved`` and ``note`` say whether a fine-tune
        kept trained weights or its start's, and why.

    Raises
    ------
    ValueError, FileNotFoundError, PermissionError, FileExistsError
        Bad settings, shapes, labels or output paths -- all checked before training.
    """
    t_start = time.monotonic()
    cfg = resolve_recipe(recipe, epochs=epochs, learning_rate=learning_rate,
                         batch_size=batch_size, optimizer=optimizer, weight_decay=weight_decay,
                         momentum=momentum, warmup=warmup, crop=crop)
    if time_budget is None and epochs is None and resume is None:
        time_budget = cfg.get("time_budget")
    budget = TimeBudget(time_budget, start=t_start)
    n_epochs = cfg["epochs"] if (epochs is not None or budget.seconds is None) else None
    crop = int(cfg["crop"])
    if crop < 16 or crop % 8:
        raise ValueError(f"crop must be a multiple of 8 and >= 16, got {crop}")
    if diameter is not None and not float(diameter) > 0:
        raise ValueError(f"diameter must be > 0, got {diameter}")
    if (val_images is None) != (val_labels is None):
        raise ValueError("give both val_images and val_labels, or neither")
    if int(workers) < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    intensity = IntensityAug.from_config(intensity)
    if resume is not None and budget.seconds is not None:
        raise ValueError("a run under a time budget cannot resume a checkpoint; give epochs= "
                         "to resume, or fine-tune the saved model again")
    save_path = check_writable(save_path, overwrite, "model file")
    if budget.seconds is not None:
        checkpoint_path = None
    elif checkpoint_path is None and save_path is not None:
        checkpoint_path = default_checkpoint_path(save_path)
    checkpoint_path = check_writable(checkpoint_path, True, "checkpoint file")
    ck = load_checkpoint(resume) if resume is not None else None
    seed = int(np.random.SeedSequence().entropy % (2 ** 31)) if seed is None else int(seed)
    if ck is not None and model is None:  # rebuild the checkpoint's network (any width)

        model = Model.from_state_dict(ck["net"], dict(ck["meta"]))
    else:
        model = resolve_model(model, width, diam_mean, seed)
    net = model.net
    prec = resolve_precision(precision, next(net.parameters()).device)
    check_pairs(images, labels)
    labels = split_binary_masks(labels)
    if val_labels is not None:
        check_pairs(val_images, val_labels, "validation")
        val_labels = split_binary_masks(val_labels, "validation")
    samples = prepare_samples(images, labels, nchan=model.nchan, channels=channels,
                              normalize=model.normalize, min_masks=min_masks, names=names,
                              anisotropy=anisotropy, progress=progress, cancel=cancel)
    val = None
    if val_images is not None:
        val = prepare_samples(val_images, val_labels, nchan=model.nchan, channels=channels,
                              normalize=model.normalize, min_masks=min_masks,
                              what="validation", cancel=cancel)
    if ck is not None:
        resume_checks(ck, net, cfg, crop, int(workers), resume, prec)
        seed = int(ck["config"].get("seed", seed))

    scales = base_scales(samples, model.diam_mean, rescale, diameter)
    nper = (int(n_per_epoch) if n_per_epoch
            else max(len(samples), cfg["batch_size"], int(cfg.get("min_per_epoch", 0))))
    vevery = int(val_every) if val_every else max(1, (n_epochs or 10) // 10)
    if not val_every and val is None and n_epochs is not None and n_epochs < 8:
        vevery = n_epochs  # a short checked run is checked once, at its end
    nb = -(-nper // cfg["batch_size"])
    lrs, warm_steps = _schedule(cfg, n_epochs, nb)
    cfg.update(crop=crop, rescale=bool(rescale), diameter=diameter, n_per_epoch=nper,
               val_every=vevery, seed=seed, min_masks=int(min_masks), anisotropy=anisotropy,
               batch_seeds=int(workers) > 0, time_budget=budget.seconds, epochs=n_epochs,
               channels=None if channels is None else list(channels), precision=prec)
    if intensity is not None:
        cfg.update(intensity=intensity.to_dict())
    if scale_range is not None:
        cfg.update(scale_range=[float(v) for v in scale_range])
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    opt = make_optimizer(net.parameters(), cfg)
    hist: dict = {"epoch": [], "loss": [], "lr": [], "seconds": [], "val_epoch": [],
                  "val_loss": [], "val_ap": [], "check_epoch": [], "check_loss": [],
                  "check_ap": []}
    start = 0
    best = None
    if ck is not None:
        opt.load_state_dict(ck["optimizer"])
        set_rng_state(rng, ck["rng"])
        hist = {**hist, **ck["history"]}
        best = ck["best"]
        start = int(ck["epoch"])
        t_start -= float(ck.get("seconds", 0.0))  # earlier runs count in the training time

    # a fine-tune from a trained model is checked: scored before training, kept if not beaten
    checked = cfg["recipe"] == "finetune" and model.meta.get("source") != "new"
    style = images_style(images, channels, cancel)  # before the budget's training time
    scorer, prefix = make_scorer(model, samples, labels, scales, val, val_images, val_labels,
                                 checked=checked, crop=crop, rescale=rescale,
                                 channels=channels, seed=seed, progress=progress,
                                 cancel=cancel)
    start_size_model = model.meta.get("size_model") if checked else None
    old_threads = torch.get_num_threads()
    ncores = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                         else os.cpu_count() or 1)
    on_cpu = next(net.parameters()).device.type == "cpu"
    mf = torch.channels_last if on_cpu else torch.contiguous_format
    maker = BatchMaker(samples.images, samples.flows, samples.fgs, scales, crop, int(workers),
                       intensity=intensity, **({} if scale_range is None else
                                               {"scale_range": tuple(scale_range)}))
    loop = TrainLoop(net=net, opt=opt, cfg=cfg, maker=maker, n_samples=len(samples),
                     n_per_epoch=nper, epochs=n_epochs, lrs=lrs, warmup_steps=warm_steps,
                     budget=budget, scorer=scorer, prefix=prefix, val_every=vevery, rng=rng,
                     hist=hist, warmup_scores=not checked, best=best,
                     min_gain=MIN_GAIN if checked and prefix == "check" else 0.0,
                     checkpoint_every=checkpoint_every,
                     progress=progress, cancel=cancel)

    def _checkpoint(done_epochs: int, rstate: dict) -> None:
        if checkpoint_path is not None:  # (a partial last epoch is not in the checkpoint)
            h = {k: (v[:done_epochs] if k in ("epoch", "loss", "lr", "seconds") else v)
                 for k, v in hist.items()}
            save_checkpoint(checkpoint_path, net_state=net.state_dict(),
                            optimizer_state=opt.state_dict(), epoch=done_epochs, config=cfg,
                            history=h, rng=rstate, meta=model.meta, best=loop.best,
                            seconds=time.monotonic() - t_start)

    loop.checkpoint = _checkpoint
    torch.set_num_threads(int(ncores))
    try:
        try:
            t0 = time.monotonic()
            if checked and loop.best is None:  # the start model is the first candidate
                loop.score(start)
            reserve_time(budget, model, score_seconds=time.monotonic() - t0,
                         views=size_views(cfg, start_size_model, samples))
            net.to(memory_format=mf)
            budget.start_training()
            loop.run(start, mf, next(net.parameters()).device)
            if checkpoint_path is not None:  # an interrupted epoch is redone on resume
                _checkpoint(loop.epoch, loop.epoch_rng if loop.epoch_open else rng_state(rng))
        finally:
            maker.close()
            net.to(memory_format=torch.contiguous_format)
            net.eval()
        improved, note = outcome(loop, checked, prefix)
        if loop.best is not None:
            net.load_state_dict(loop.best["state_dict"])
        finish_model(model, samples, labels, cfg, hist, loop.best, cancelled=loop.cancelled,
                     epochs_done=loop.epoch, seconds=time.monotonic() - t_start,
                     progress=progress, start_size_model=start_size_model,
                     improved=improved, note=note, style=style)
    finally:
        torch.set_num_threads(old_threads)
    if save_path is not None:
        model.save(save_path, overwrite=overwrite)
    best_epoch = None if loop.best is None else int(loop.best["epoch"])
    return TrainResult(model=model, history=hist, best_epoch=best_epoch,
                       cancelled=loop.cancelled, save_path=save_path,
                       checkpoint_path=checkpoint_path, seconds=time.monotonic() - t_start,
                       crops_per_second=loop.n_crops / loop.t_loop if loop.t_loop > 0 else 0.0,
                       improved=improved, note=model.meta["training"]["note"], precision=prec)


def _schedule(cfg: dict, n_epochs: int | None, nb: int) -> tuple[np.ndarray | None, int]:
    """Per-epoch rates (None under a time budget) and per-step warm-up of a run.

    Fixed epochs: the recipe's per-epoch schedule (:func:`lr_schedule`).  Its warm-up is
    whole epochs, at most a fifth of the run -- none for runs under 5 epochs -- so a run too
    short for the whole warm-up warms up per step instead, over the same number of steps
    (capped to a third of the run by the loop).  Time budget: :func:`step_lr` with the
    recipe's ``warmup_steps``.
    """
    if n_epochs is None:
        return None, int(cfg.get("warmup_steps", 10))
    w = int(cfg["warmup"])
    if w <= n_epochs // 5:
        return lr_schedule(n_epochs, cfg["learning_rate"], w), 0
    return lr_schedule(n_epochs, cfg["learning_rate"], 0), max(1, w * nb)
