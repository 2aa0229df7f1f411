"""Training and human-in-the-loop fine-tuning: :func:`train`.

The loop follows the Cellpose method: targets are the unit flows of each label image
(computed once, :mod:`flowseg.engine.trainprep`), every epoch draws random crops rotated,
mirrored and zoomed around the model's object diameter (:mod:`flowseg.engine.augment`),
and the loss is ``MSE(flows_out, 5 * flows) / 2 + BCE(cellprob_logit, foreground)``
(:mod:`flowseg.engine.schedule`, which also holds the two recipes ``from_scratch`` and
``finetune``).

Runs are resumable: a checkpoint (:mod:`flowseg.engine.checkpoint`) is written every
``checkpoint_every`` minutes, at the end and on cancel; ``train(..., resume=path)``
continues it (the same data must be passed again).  With the same ``seed``, a resumed
run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from .batches import BatchMaker
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .progress import Cancelled, check_cancel, report
from .schedule import RECIPES, flow_loss, lr_schedule, make_optimizer, resolve_recipe
from .trainprep import SampleSet, prepare_samples
from .validate import validate

__all__ = ["train", "TrainResult", "RECIPES"]


@dataclass
class TrainResult:
    """What :func:`train` returns; unpacks as ``model, history = train(...)``.

    Attributes
    ----------
    model : flowseg.Model
        The trained model (the best by validation when validation data was given,
        else the last), in eval mode, with its training record in ``model.meta``.
    history : dict
        Per-epoch lists: ``epoch``, ``loss``, ``lr``, ``seconds``; per validation:
        ``val_epoch``, ``val_loss``, ``val_ap`` (AP@0.5 mean, None when unavailable).
    best_epoch : int or None
        1-based epoch whose weights were kept, None when no validation ran.
    cancelled : bool
        Whether ``cancel`` stopped the run early.
    save_path, checkpoint_path : Path or None
        Files written.
    seconds : float
        Wall-clock training time, including the earlier runs of a resumed training.
    crops_per_second : float
        Training throughput of this call's epochs.
    """

    model: Any
    history: dict
    best_epoch: Optional[int] = None
    cancelled: bool = False
    save_path: Optional[Path] = None
    checkpoint_path: Optional[Path] = None
    seconds: float = 0.0
    crops_per_second: float = 0.0
    extra: dict = field(default_factory=dict)

    def __iter__(self):
        yield self.model
        yield self.history


def _check_writable(path: Optional[os.PathLike], overwrite: bool, what: str) -> Optional[Path]:
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"{what} {p} is a folder; give a file name")
    if not p.parent.is_dir():
        raise FileNotFoundError(f"the folder of the {what} {p} does not exist")
    try:  # a real write also catches read-only file systems (and works for root)
        if not os.access(p.parent, os.W_OK | os.X_OK):
            raise OSError
        fd, tmp = tempfile.mkstemp(prefix=".flowseg-write-test.", dir=p.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError:
        raise PermissionError(f"cannot write the {what} {p}: folder {p.parent} is read-only"
                              ) from None
    if p.exists() and not overwrite:
        raise FileExistsError(f"{what} {p} already exists (pass overwrite=True to replace it)")
    return p


def _resolve_model(model: Any, width: int, diam_mean: Optional[float], seed: Optional[int]):
    from .model import Model

    if model is None:
        return Model.new(width=width, nchan=2, diam_mean=30.0 if diam_mean is None else diam_mean,
                         seed=seed)
    if isinstance(model, Model):
        return model.copy()
    if isinstance(model, (str, os.PathLike)):
        return Model.load(model)
    raise ValueError(f"model must be a flowseg Model, a model name or path, or None; got "
                     f"{type(model).__name__}")


def _epoch_indices(rng: np.random.Generator, n: int, n_per_epoch: int) -> np.ndarray:
    reps = -(-n_per_epoch // n)
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:n_per_epoch]


def _base_scales(samples: SampleSet, diam_mean: float, rescale: bool,
                 diameter: Optional[float]) -> np.ndarray:
    if not rescale:
        return np.ones(len(samples))
    d = np.full(len(samples), float(diameter)) if diameter else samples.diameters
    return np.clip(diam_mean / np.maximum(d, 1e-3), 0.125, 8.0)


def train(
    model: Any = None,
    images: Sequence[np.ndarray] = (),
    labels: Sequence[np.ndarray] = (),
    *,
    val_images: Optional[Sequence[np.ndarray]] = None,
    val_labels: Optional[Sequence[np.ndarray]] = None,
    recipe: Optional[str] = None,
    epochs: Optional[int] = None,
    learning_rate: Optional[float] = None,
    batch_size: Optional[int] = None,
    optimizer: Optional[str] = None,
    weight_decay: Optional[float] = None,
    momentum: Optional[float] = None,
    warmup: Optional[int] = None,
    crop: int = 224,
    rescale: bool = True,
    diameter: Optional[float] = None,
    channels: Optional[Sequence[Optional[int]]] = None,
    min_masks: int = 1,
    n_per_epoch: Optional[int] = None,
    val_every: Optional[int] = None,
    names: Optional[Sequence[str]] = None,
    anisotropy: Optional[float] = None,
    width: int = 32,
    diam_mean: Optional[float] = None,
    save_path: Optional[os.PathLike] = None,
    overwrite: bool = False,
    checkpoint_path: Optional[os.PathLike] = None,
    checkpoint_every: float = 10.0,
    resume: Optional[os.PathLike] = None,
    progress=None,
    cancel=None,
    seed: Optional[int] = None,
    threads: Optional[int] = None,
    workers: int = 0,
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
        every ``val_every`` epochs; the best weights by AP are kept.
    recipe : {"from_scratch", "finetune"}, optional
        Defaults for the settings below (see :data:`RECIPES`); default ``"finetune"``.
    epochs, learning_rate, batch_size, optimizer, weight_decay, momentum, warmup
        Override the recipe (``optimizer``: ``"sgd"`` or ``"adamw"``).
    crop : int
        Side of the square training crops (a multiple of 8).
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
        Validate every this many epochs (default: ``max(1, epochs // 10)``) and at the end.
    names : sequence of str, optional
        Image names for the training record.
    anisotropy : float, optional
        For 3D training volumes: also train on XZ / YZ slices resampled by this factor.
    width, diam_mean : int, float
        Size and diameter of a new model (``model=None`` only).
    save_path : path, optional
        Save the final model here (atomically; an existing file only with ``overwrite``).
    checkpoint_path : path, optional
        Checkpoint file (default: ``save_path`` + ``".ckpt"`` when saving).
    checkpoint_every : float
        Minutes between checkpoints (0: every epoch); one is also written at the end and
        on cancel.
    resume : path, optional
        A checkpoint to continue from (pass the same data and settings).
    progress, cancel
        The engine's progress / cancel protocol.  Stages: ``"flows"``, ``"train"`` (one
        event per batch, ``info`` has ``epoch``, ``loss``, ``lr``), ``"epoch"``,
        ``"validate"``.  On cancel, training stops after the current batch and the best
        (or last) model is returned and saved.
    seed : int, optional
        Makes crops and their order reproducible.
    threads : int, optional
        Torch CPU threads (default: all cores available to the process).
    workers : int
        0 (default): crops are made in this process from one random stream.  >= 1: each
        batch gets its own seed and ``workers`` forked processes make them ahead of the
        network (for a GPU, whose steps outrun one CPU core); any ``workers >= 1`` gives the
        same batches, which differ from ``workers=0``'s.

    Returns
    -------
    TrainResult
        Unpacks as ``(model, history)``.

    Raises
    ------
    ValueError, FileNotFoundError, PermissionError, FileExistsError
        Bad settings, shapes, labels or output paths -- all checked before training.
    """
    t_start = time.monotonic()
    cfg = resolve_recipe(recipe, epochs=epochs, learning_rate=learning_rate,
                         batch_size=batch_size, optimizer=optimizer, weight_decay=weight_decay,
                         momentum=momentum, warmup=warmup)
    crop = int(crop)
    if crop < 16 or crop % 8:
        raise ValueError(f"crop must be a multiple of 8 and >= 16, got {crop}")
    if diameter is not None and not float(diameter) > 0:
        raise ValueError(f"diameter must be > 0, got {diameter}")
    if (val_images is None) != (val_labels is None):
        raise ValueError("give both val_images and val_labels, or neither")
    if int(workers) < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    save_path = _check_writable(save_path, overwrite, "model file")
    if checkpoint_path is None and save_path is not None:
        checkpoint_path = save_path.with_name(save_path.name + ".ckpt")
    checkpoint_path = _check_writable(checkpoint_path, True, "checkpoint file")
    ck = load_checkpoint(resume) if resume is not None else None
    seed = int(np.random.SeedSequence().entropy % (2 ** 31)) if seed is None else int(seed)
    if ck is not None and model is None:  # rebuild the checkpoint's network (any width)
        from .model import Model

        model = Model.from_state_dict(ck["net"], dict(ck["meta"]))
    else:
        model = _resolve_model(model, width, diam_mean, seed)
    net = model.net
    normalize = model.normalize
    samples = prepare_samples(images, labels, nchan=model.nchan, channels=channels,
                              normalize=normalize, min_masks=min_masks, names=names,
                              anisotropy=anisotropy, progress=progress, cancel=cancel)
    val = None
    if val_images is not None:
        val = prepare_samples(val_images, val_labels, nchan=model.nchan, channels=channels,
                              normalize=normalize, min_masks=min_masks, what="validation",
                              cancel=cancel)
    if ck is not None:
        if list(ck["meta"].get("nbase", net.nbase)) != list(net.nbase):
            raise ValueError(f"checkpoint {resume} is for a network of widths "
                             f"{ck['meta'].get('nbase')}, not {net.nbase}")
        net.load_state_dict(ck["net"])
        old = ck["config"]
        for k in ("epochs", "learning_rate", "optimizer", "batch_size", "crop"):
            if k in old and old[k] != {**cfg, "crop": crop}[k]:
                warnings.warn(f"resuming with {k}={({**cfg, 'crop': crop})[k]!r}, the "
                              f"checkpoint used {old[k]!r}", stacklevel=2)
        seed = int(old.get("seed", seed))
        if bool(old.get("batch_seeds", False)) != (int(workers) > 0):
            warnings.warn(f"resuming with workers={workers}: the checkpoint's batches were made "
                          f"with workers {'>= 1' if old.get('batch_seeds') else '= 0'}, so the "
                          "crops will differ from an uninterrupted run", stacklevel=2)

    dm = model.diam_mean
    scales = _base_scales(samples, dm, rescale, diameter)
    nper = (int(n_per_epoch) if n_per_epoch
            else max(len(samples), cfg["batch_size"], int(cfg.get("min_per_epoch", 0))))
    nep = cfg["epochs"]
    vevery = int(val_every) if val_every else max(1, nep // 10)
    lrs = lr_schedule(nep, cfg["learning_rate"], cfg["warmup"])
    cfg.update(crop=crop, rescale=bool(rescale), diameter=diameter, n_per_epoch=nper,
               val_every=vevery, seed=seed, min_masks=int(min_masks), anisotropy=anisotropy,
               batch_seeds=int(workers) > 0,
               channels=None if channels is None else list(channels))
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    opt = make_optimizer(net.parameters(), cfg)
    hist: dict = {"epoch": [], "loss": [], "lr": [], "seconds": [], "val_epoch": [],
                  "val_loss": [], "val_ap": []}
    best: Optional[dict] = None
    start = 0
    if ck is not None:
        opt.load_state_dict(ck["optimizer"])
        set_rng_state(rng, ck["rng"])
        hist = ck["history"]
        best = ck["best"]
        start = int(ck["epoch"])
        t_start -= float(ck.get("seconds", 0.0))  # earlier runs count in the training time

    old_threads = torch.get_num_threads()
    ncores = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                         else os.cpu_count() or 1)
    torch.set_num_threads(int(ncores))
    on_cpu = next(net.parameters()).device.type == "cpu"
    mf = torch.channels_last if on_cpu else torch.contiguous_format
    net.to(memory_format=mf)
    device = next(net.parameters()).device
    nb = -(-nper // cfg["batch_size"])
    total = nep * nb
    cancelled = False
    epoch = start
    epoch_rng = rng_state(rng)
    last_ck = time.monotonic()
    n_crops, t_loop = 0, 0.0
    maker = BatchMaker(samples.images, samples.flows, samples.fgs, scales, crop, int(workers))

    def _checkpoint(done_epochs: int, rstate: dict) -> None:
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, net_state=net.state_dict(),
                            optimizer_state=opt.state_dict(), epoch=done_epochs, config=cfg,
                            history=hist, rng=rstate, meta=model.meta, best=best,
                            seconds=time.monotonic() - t_start)

    try:
        for epoch in range(start, nep):
            epoch_rng = rng_state(rng)
            t0 = time.monotonic()
            for g in opt.param_groups:
                g["lr"] = float(lrs[epoch])
            net.train()
            order = _epoch_indices(rng, len(samples), nper)
            loss_sum = 0.0
            for b, (idx, x, y) in enumerate(maker.epoch(rng, order, cfg["batch_size"])):
                check_cancel(cancel)
                xt = torch.from_numpy(x).to(device).contiguous(memory_format=mf)
                out = net(xt)[0]
                loss = flow_loss(out, torch.from_numpy(y).to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += float(loss.item()) * len(idx)
                n_crops += len(idx)
                report(progress, "train", epoch * nb + b + 1, total, "",
                       epoch=epoch + 1, loss=loss_sum / ((b * cfg["batch_size"]) + len(idx)),
                       lr=float(lrs[epoch]))
            dt = time.monotonic() - t0
            t_loop += dt
            hist["epoch"].append(epoch + 1)
            hist["loss"].append(loss_sum / nper)
            hist["lr"].append(float(lrs[epoch]))
            hist["seconds"].append(dt)
            info: dict = {"loss": loss_sum / nper, "lr": float(lrs[epoch])}
            if val is not None and ((epoch + 1) % vevery == 0 or epoch + 1 == nep):
                vloss, vap = validate(model, val, val_images, val_labels, crop=crop,
                                      rescale=rescale, channels=channels, progress=progress,
                                      cancel=cancel)
                net.to(memory_format=mf)
                hist["val_epoch"].append(epoch + 1)
                hist["val_loss"].append(vloss)
                hist["val_ap"].append(vap)
                info.update(val_loss=vloss, val_ap=vap)
                # best by AP@0.5, ties (e.g. all 0 early on) broken by the validation loss
                score = [float(vap) if vap is not None else 0.0, -float(vloss)]
                if best is None or score > list(best["score"]):
                    best = {"epoch": epoch + 1, "score": score,
                            "state_dict": {k: v.detach().clone() for k, v in
                                           net.state_dict().items()}}
            report(progress, "epoch", epoch + 1, nep, "", **info)
            if checkpoint_every <= 0 or time.monotonic() - last_ck >= 60 * checkpoint_every:
                _checkpoint(epoch + 1, rng_state(rng))
                last_ck = time.monotonic()
        epoch = nep
        _checkpoint(nep, rng_state(rng))
    except Cancelled:
        cancelled = True
        if len(hist["epoch"]) > epoch:  # stopped during validation: the epoch is complete
            _checkpoint(epoch + 1, rng_state(rng))
            epoch += 1
        else:  # the interrupted epoch is redone on resume: store the state at its start
            _checkpoint(epoch, epoch_rng)
    finally:
        maker.close()
        torch.set_num_threads(old_threads)
        net.to(memory_format=torch.contiguous_format)
        net.eval()

    if best is not None:
        net.load_state_dict(best["state_dict"])
    from .trainfinish import finish_model

    finish_model(model, samples, labels, cfg, hist, best, cancelled=cancelled, epochs_done=epoch,
                 seconds=time.monotonic() - t_start, progress=progress)
    if save_path is not None:
        model.save(save_path, overwrite=overwrite)
    best_epoch = None if best is None else int(best["epoch"])
    return TrainResult(model=model, history=hist, best_epoch=best_epoch,
                       cancelled=cancelled, save_path=save_path, checkpoint_path=checkpoint_path,
                       seconds=time.monotonic() - t_start,
                       crops_per_second=n_crops / t_loop if t_loop > 0 else 0.0)
