"""``flowseg train`` and ``flowseg eval``: argument definitions and the work behind them.

:mod:`flowseg.cli` calls :func:`add_train_args` / :func:`run_train` and
:func:`add_eval_args` / :func:`run_eval`.  Progress goes to tqdm through the engine's
progress protocol; the first Ctrl-C stops training cleanly (the best or last model is
saved and a checkpoint written, so ``--resume`` can continue), a second one aborts.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import signal
import sys
import threading
from pathlib import Path

import numpy as np

from ._cli_batch import Batch
from ._cli_common import add_mask_args, mask_params, parse_channels
from .engine.training.budget import DEFAULT_TIME_BUDGET


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``flowseg train``."""
    p.add_argument("--dir", required=True, help="folder of images + NAME_masks.* / NAME_seg.npy")
    p.add_argument("--mask-filter", default="_masks", help="label file suffix (default _masks)")
    p.add_argument("--img-filter", default="", help="only images whose name ends with this")
    p.add_argument("--val-dir", help="folder of validation images + masks")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="hold out this fraction of --dir for validation (when no --val-dir)")
    p.add_argument("--model", help="starting model (bundled name or file); default: a new one")
    p.add_argument("--recipe", choices=["from_scratch", "finetune"],
                   help="default: finetune with --model, from_scratch without")
    p.add_argument("--epochs", type=int, help="train this many epochs (default: a fine-tune "
                   "runs for its time budget, a new model for the recipe's epochs)")
    p.add_argument("--time-budget", type=float, metavar="S",
                   help="seconds for the whole training call: targets, training, check, size "
                   f"model and save (default for a fine-tune without --epochs: "
                   f"{DEFAULT_TIME_BUDGET:g} s)")
    p.add_argument("--lr", type=float, help="learning rate (default: the recipe's)")
    p.add_argument("--optimizer", choices=["sgd", "adamw"])
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--crop", type=int, help="training crop side (default: the recipe's, 224)")
    p.add_argument("--width", type=int, default=32, help="base width of a new model (32)")
    p.add_argument("--diam-mean", type=float, default=None,
                   help="object diameter a new model works at (default 30)")
    p.add_argument("--diameter", type=float, help="object diameter of all training images "
                   "(default: measured from each mask)")
    p.add_argument("--no-rescale", action="store_true", help="do not zoom images to diam-mean")
    p.add_argument("--channels", nargs=2, metavar=("CYTO", "NUC"),
                   help="0-based cytoplasm and nucleus channels ('none' for no nucleus)")
    p.add_argument("--min-masks", type=int, default=1, help="skip images with fewer objects")
    p.add_argument("--max-images", type=int, help="use at most this many training images")
    p.add_argument("--n-per-epoch", type=int, help="crops per epoch (default: #images)")
    p.add_argument("--val-every", type=int, help="validate every N epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="bf16: the network's forward in bfloat16 autocast (CPU only); auto "
                   "(default): bf16 on a CPU with native bf16 (avx512_bf16 / amx_bf16), else "
                   "fp32; the environment variable FLOWSEG_PRECISION=fp32|bf16 replaces auto")
    p.add_argument("--out", help="model file to write (default DIR/models/flowseg_<recipe>_"
                   "<time>.pt)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--checkpoint", help="checkpoint file (default OUT.ckpt)")
    p.add_argument("--checkpoint-every", type=float, default=10.0,
                   help="minutes between checkpoints (default 10; 0 = every epoch)")
    p.add_argument("--resume", metavar="CKPT", help="continue the run saved in this checkpoint")


class _TqdmProgress:
    """Progress callback drawing tqdm bars for the ``flows`` and ``train`` stages."""

    def __init__(self) -> None:
        self.bars: dict = {}

    def _bar(self, stage: str, total: int, desc: str):
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="it" if stage != "flows" else "img",
                       dynamic_ncols=True, file=sys.stderr)
            self.bars[stage] = bar
        elif bar.total != total:  # a time budget's estimate of the batches changes
            bar.total = total
        return bar

    def __call__(self, ev) -> None:
        if ev.stage in ("flows", "read"):
            bar = self._bar(ev.stage, ev.total, "reading" if ev.stage == "read" else "flows")
            bar.update(ev.done - bar.n)
            if ev.done >= ev.total:
                bar.close()
                del self.bars[ev.stage]
        elif ev.stage == "train":
            bar = self._bar("train", ev.total, "training")
            bar.set_postfix(epoch=ev.info.get("epoch"), loss=f"{ev.info.get('loss', 0):.4f}",
                            lr=f"{ev.info.get('lr', 0):.3g}", refresh=False)
            bar.update(ev.done - bar.n)
        elif ev.stage == "epoch" and "val_loss" in ev.info:
            from tqdm import tqdm

            ap = ev.info.get("val_ap")
            tqdm.write(f"epoch {ev.done}: loss {ev.info['loss']:.4f}, scored loss "
                       f"{ev.info['val_loss']:.4f}" + ("" if ap is None else f", AP@0.5 {ap:.3f}"),
                       file=sys.stderr)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _sigint_event() -> tuple[threading.Event, object]:
    ev = threading.Event()

    def handler(signum, frame):  # first Ctrl-C: stop cleanly; second: abort
        if ev.is_set():
            raise KeyboardInterrupt
        ev.set()
        print("\nstopping after this batch (Ctrl-C again to abort) ...", file=sys.stderr)

    old = signal.signal(signal.SIGINT, handler)
    return ev, old


def run_train(args: argparse.Namespace) -> int:
    """``flowseg train``."""
    from .engine.io.datasets import load_folder, split_validation
    from .engine.training.train import train

    recipe = args.recipe or ("finetune" if args.model else "from_scratch")
    for d in (args.dir, args.val_dir):
        if d and not Path(d).is_dir():
            raise FileNotFoundError(f"training folder {d} does not exist")
    channels = parse_channels(args.channels)
    if args.out:
        out = Path(args.out)
    else:
        stamp = _dt.datetime.now().strftime("%Y%m%d_%H%M%S")
        out = Path(args.dir) / "models" / f"flowseg_{recipe}_{stamp}.pt"
        out.parent.mkdir(exist_ok=True)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
    prog = _TqdmProgress()
    data = load_folder(args.dir, args.mask_filter, args.img_filter, args.max_images,
                       progress=prog)
    images, labels, names = data.images, data.labels, data.names
    vi = vl = None
    if args.val_dir:
        vd = load_folder(args.val_dir, args.mask_filter, args.img_filter)
        vi, vl = vd.images, vd.labels
    elif args.val_fraction > 0:
        tr, va = split_validation(len(images), args.val_fraction, seed=args.seed)
        vi, vl = [images[i] for i in va], [labels[i] for i in va]
        images, labels, names = ([images[i] for i in tr], [labels[i] for i in tr],
                                 [names[i] for i in tr])
    print(f"training on {len(images)} image(s) from {args.dir}"
          + (f", validating on {len(vi)}" if vi else "") + f"; recipe {recipe}", file=sys.stderr)
    stop, old = _sigint_event()
    try:
        res = train(args.model, images, labels, val_images=vi, val_labels=vl, recipe=recipe,
                    epochs=args.epochs, time_budget=args.time_budget, learning_rate=args.lr,
                    batch_size=args.batch_size,
                    optimizer=args.optimizer, weight_decay=args.weight_decay, crop=args.crop,
                    rescale=not args.no_rescale, diameter=args.diameter, channels=channels,
                    min_masks=args.min_masks, n_per_epoch=args.n_per_epoch,
                    val_every=args.val_every, names=names, width=args.width,
                    diam_mean=args.diam_mean, save_path=out, overwrite=args.overwrite,
                    checkpoint_path=args.checkpoint, checkpoint_every=args.checkpoint_every,
                    resume=args.resume, progress=prog, cancel=stop, seed=args.seed,
                    threads=args.threads, precision=args.precision)
    finally:
        signal.signal(signal.SIGINT, old)
        prog.close()
    h = res.history
    msg = (f"{'stopped' if res.cancelled else 'finished'} after {len(h['epoch'])} epoch(s) in "
           f"{res.seconds:.0f} s ({res.crops_per_second:.2f} crops/s, {res.precision}); final loss "
           f"{h['loss'][-1]:.4f}" if h["loss"] else "stopped before the first epoch")
    print(msg, file=sys.stderr)
    if res.note:
        print(res.note, file=sys.stderr)
    print(f"model saved to {res.save_path}"
          + (f"; checkpoint {res.checkpoint_path}" if res.checkpoint_path else ""),
          file=sys.stderr)
    print(res.save_path)
    return 0


def add_eval_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``flowseg eval``."""
    p.add_argument("--dir", required=True, help="folder of images + NAME_masks.* / NAME_seg.npy")
    p.add_argument("--model", required=True, help="bundled model name or model file")
    p.add_argument("--mask-filter", default="_masks")
    p.add_argument("--img-filter", default="")
    p.add_argument("--diameter", type=float, default=None,
                   help="object diameter in pixels (default: estimated by the model; "
                        "0 = the model's own diameter)")
    p.add_argument("--true-diameter", action="store_true",
                   help="use each image's median ground-truth diameter")
    p.add_argument("--channels", nargs=2, metavar=("CYTO", "NUC"))
    add_mask_args(p, ("flow_threshold", "cellprob_threshold"))
    p.add_argument("--max-images", type=int)
    p.add_argument("--csv", help="write per-image results to this CSV file")


def run_eval(args: argparse.Namespace) -> int:
    """``flowseg eval``: AP@0.5/0.75/0.9 averaged over the images, per-image CSV.

    Each pair is read and checked at its turn; one that fails is reported on one line and
    skipped (:class:`~flowseg._cli_batch.Batch`); the means are over the scored images.
    """
    from tqdm import tqdm

    from .engine.inference.checks import check_diameter
    from .engine.inference.model import Model
    from .engine.io.datasets import find_pairs

    if args.csv and not Path(args.csv).expanduser().parent.is_dir():
        raise FileNotFoundError(f"the folder of --csv {args.csv} does not exist")
    if args.diameter is not None and args.diameter != 0:
        check_diameter(args.diameter)
    model = Model.load(args.model)
    pairs = find_pairs(args.dir, args.mask_filter, args.img_filter)
    if not pairs:
        raise ValueError(f"no image / mask pairs in {args.dir}")
    if args.max_images:
        pairs = pairs[: args.max_images]
    channels = parse_channels(args.channels)
    mask = mask_params(args)
    thr = (0.5, 0.75, 0.9)
    rows: list[dict] = []
    batch = Batch("evaluated")
    for ip, lp in tqdm(pairs, desc="eval", unit="img", file=sys.stderr, dynamic_ncols=True):
        row = batch.step(ip.name, lambda ip=ip, lp=lp: _score_pair(
            args, model, ip, lp, channels=channels, mask=mask, thresholds=thr))
        if row is not None:
            rows.append(row)
    if rows:
        mean = {t: float(np.mean([r[f"ap{int(t * 100)}"] for r in rows])) for t in thr}
        print(f"{len(rows)} image(s), model {args.model}: "
              + ", ".join(f"AP@{t:g} = {mean[t]:.3f}" for t in thr))
    if args.csv and rows:
        from .engine.io.images import atomic_path

        with atomic_path(Path(args.csv).expanduser()) as tmp, \
                open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print(f"per-image results written to {args.csv}", file=sys.stderr)
    return batch.finish()


def _score_pair(args: argparse.Namespace, model, ip: Path, lp: Path, *, channels, mask,
                thresholds) -> dict:
    """Read, segment and score one image / labels pair: its CSV row."""
    from .engine.errors import InputError
    from .engine.flows.metrics import average_precision
    from .engine.io.datasets import read_image, read_labels
    from .engine.training.prep import median_diameter

    img, gt = read_image(ip), np.asarray(read_labels(lp))
    if gt.dtype.kind not in "iub":
        raise InputError(f"labels {lp.name} hold {gt.dtype} values, not integer ids")
    d = median_diameter(gt) if args.true_diameter else args.diameter
    if d == 0:  # 0: the model's own diameter; no objects in the labels: estimate
        d = None if args.true_diameter else model.diam_mean
    seg = model.segment(img, diameter=d, channels=channels, **mask.as_dict())
    if seg.masks.shape != gt.shape:
        raise InputError(f"labels {lp.name} have shape {gt.shape}, the image's masks "
                         f"{seg.masks.shape}")
    res = average_precision(gt, seg.masks, thresholds=thresholds)
    ap = np.asarray(res[0] if isinstance(res, tuple) else res, float).ravel()
    return {"image": ip.name, "n_true": int(len(np.unique(gt)) - (gt.min() == 0)),
            "n_pred": int(len(np.unique(seg.masks)) - (seg.masks.min() == 0)),
            "diameter": round(float(seg.diameter), 2) if seg.diameter else "",
            **{f"ap{int(t * 100)}": round(float(a), 4) for t, a in zip(thresholds, ap)}}
