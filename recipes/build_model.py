"""Rebuild a bundled model from the shared training data with a fixed seed.

Usage (from the repository root)::

    python recipes/build_model.py nuclei            # -> src/flowseg/models/nuclei.pt
    python recipes/build_model.py cyto              # -> src/flowseg/models/cyto.pt
    python recipes/build_model.py nuclei --resume   # continue from the last checkpoint
    python recipes/build_model.py nuclei --stage 3 --resume   # one stage only

The data are read from ``../shared/data`` (never copied into the repository).  A fixed
validation split (listed in ``recipes/splits/<model>_val.txt``) is held out and never
trained on.  Long runs write a checkpoint every few minutes to ``runs/<model>.ckpt`` and can
be resumed in a later session with ``--resume``; the training log goes to
``runs/<model>.log``.  A recipe with ``stages`` trains them in turn, each stage starting
from the previous stage's model (``runs/<model>_stage<k>.pt``); the last stage writes the
bundled model.  A stage with ``average=w`` then averages its weights with the model it
started from (``recipes/soup.py``) and refits the size model.  After training,
``recipes/evaluate_model.py`` scores the model on the validation split and writes the
numbers used by the model card.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from data import RECIPES, load_training_set, stage_configs  # noqa: E402


def rebase_model(model, diam_mean: float):
    """The model's network as the start of a model working at another object diameter.

    Only the weights are kept: the size model, style centroid and training record of the
    start describe objects at its own ``diam_mean`` and are dropped.
    """
    import copy

    return type(model)(copy.deepcopy(model.net),
                       {"diam_mean": float(diam_mean), "diam_labels": float(diam_mean),
                        "normalize": list(model.normalize), "source": "flowseg"},
                       device=model.device)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=sorted(RECIPES))
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--out", default=None, help="default: src/flowseg/models/<model>.pt")
    p.add_argument("--runs", default=str(ROOT / "runs"))
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--resume", action="store_true",
                   help="continue from the stage's checkpoint in --runs")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workers", type=int, default=None,
                   help="processes making the crops of stages whose recipe uses worker "
                        "processes (default: the recipe's); any value >= 1 gives the same "
                        "crops, 0 the single-stream crops of the CPU recipes (stages with "
                        "single-stream crops keep them)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop cleanly (keeping a checkpoint) after this many minutes")
    p.add_argument("--stage", default="all",
                   help="recipes with 'stages': run all stages from the first (default) or "
                        "only stage K (1, 2, ...), which starts from stage K-1's model")
    args = p.parse_args(argv)

    import flowseg
    from flowseg.engine.progress import ProgressEvent

    stages = stage_configs(args.model)
    if args.stage != "all" and not (args.stage.isdigit() and 1 <= int(args.stage) <= len(stages)):
        p.error(f"--stage must be 'all' or 1..{len(stages)} for {args.model}")
    k = 1 if args.stage == "all" else int(args.stage)
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    final = Path(args.out or ROOT / "src" / "flowseg" / "models" / f"{args.model}.pt")

    def stage_out(i: int) -> Path:
        return final if i == len(stages) else runs / f"{args.model}_stage{i}.pt"

    # the log stays open (line-buffered) for the whole run and closes with the process
    log = open(runs / f"{args.model}.log", "a", buffering=1)  # noqa: SIM115
    cfg = dict(stages[k - 1])
    if args.epochs and k == 1:  # as before: --epochs sets the first stage's length
        cfg["epochs"] = args.epochs
    # stage 1 starts from the recipe's "start" model (a bundled name or a path), or anew
    start = cfg.get("start") if k == 1 else stage_out(k - 1)
    if k > 1 and not start.exists():
        p.error(f"stage {k} starts from {start}, which does not exist: run stage {k - 1} first")
    if cfg.get("widen") and cfg.get("average"):
        p.error(f"stage {k} both widens and averages with its start; the two do not mix")
    if cfg.get("widen"):  # grow the previous stage's model to this stage's width
        from widen import widen_model

        start = widen_model(flowseg.Model.load(start), cfg["width"], seed=cfg["seed"])
    if cfg.get("start_diam_mean") and k == 1:  # the start's weights at another object size
        start = rebase_model(flowseg.Model.load(start), float(cfg["start_diam_mean"]))
    out = stage_out(k)
    ckpt = runs / (f"{args.model}.ckpt" if k == 1 else f"{args.model}_stage{k}.ckpt")
    from flowseg.engine.inference.base import device_name, resolve_device

    print(f"stage {k}/{len(stages)}: {cfg} -> {out} (on {device_name(resolve_device())})",
          file=log)

    t0 = time.time()
    data = load_training_set(args.model, Path(args.data), oversample=cfg.get("oversample", 1),
                             cfg=cfg)
    print(f"{args.model}: {len(data['train_images'])} training images, "
          f"{len(data['val_images'])} validation images ({time.time() - t0:.0f} s to read)",
          file=log)

    deadline = None if args.max_minutes is None else t0 + 60 * args.max_minutes

    def progress(ev: ProgressEvent) -> None:
        if ev.stage in ("epoch", "validate", "size") or (ev.stage == "train" and ev.done % 50 == 0):
            info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in ev.info.items())
            print(f"{time.strftime('%H:%M:%S')} {ev.stage} {ev.done}/{ev.total} {ev.message} "
                  f"{info}", file=log)

    def cancel() -> bool:
        return deadline is not None and time.time() > deadline

    res = flowseg.train(
        start,
        data["train_images"],
        data["train_labels"],
        val_images=data["val_images"],
        val_labels=data["val_labels"],
        names=data["train_names"],
        recipe=cfg["recipe"],
        epochs=cfg["epochs"],
        learning_rate=cfg.get("learning_rate"),
        optimizer=cfg.get("optimizer"),
        momentum=cfg.get("momentum"),
        weight_decay=cfg.get("weight_decay"),
        warmup=cfg.get("warmup"),
        batch_size=cfg["batch_size"],
        crop=cfg["crop"],
        width=cfg["width"],
        diam_mean=cfg["diam_mean"],
        channels=cfg["channels"],
        n_per_epoch=cfg.get("n_per_epoch"),
        val_every=cfg.get("val_every"),
        save_path=out,
        overwrite=True,
        checkpoint_path=ckpt,
        checkpoint_every=cfg.get("checkpoint_every", 5.0),
        resume=ckpt if (args.resume and ckpt.exists()) else None,
        progress=progress,
        cancel=cancel,
        seed=cfg["seed"],
        threads=args.threads,
        # --workers changes how many processes make a stage's crops, never which crops: a
        # stage with single-stream crops (workers 0) keeps them
        workers=cfg.get("workers", 0) if args.workers is None or not cfg.get("workers")
        else args.workers,
        intensity=cfg.get("intensity"),  # intensity augmentation (None: off)
        scale_range=cfg.get("scale_range"),
        # "auto": bf16 autocast on a CPU with native bf16, else fp32 (recorded in the model)
        precision=cfg.get("precision", "auto"),
    )
    if not res.cancelled and (cfg.get("average") or cfg.get("half")):
        model = res.model
        if cfg.get("average"):
            # weight-space average of the trained stage with the model it started from
            from soup import average_weights, refit_size

            begin = start if isinstance(start, flowseg.Model) else flowseg.Model.load(start)
            model = average_weights(begin, model, cfg["average"])
            refit_size(model, data["train_images"], data["train_labels"],
                       channels=cfg["channels"], seed=cfg["seed"])
            print(f"{time.strftime('%H:%M:%S')} averaged with the stage's start (weight "
                  f"{cfg['average']}) and refitted the size model -> {out}", file=log)
        # half: float16 weights (half the size; validation AP unchanged); a later stage
        # starts from the rounded weights, as the runs in docs/training.md did
        model.save(out, overwrite=True, half=bool(cfg.get("half")))
    summary = {
        "model": args.model,
        "cancelled": res.cancelled,
        "best_epoch": res.best_epoch,
        "seconds": res.seconds,
        "crops_per_second": res.crops_per_second,
        "final_loss": res.history["loss"][-1] if res.history.get("loss") else None,
        "val_ap": res.history.get("val_ap"),
    }
    print(json.dumps(summary), file=log)
    print(json.dumps(summary))
    if args.stage == "all" and k < len(stages) and not res.cancelled:
        rest = ["--stage", str(k + 1), "--runs", str(runs), "--data", args.data,
                "--out", str(final)]
        rest += [] if args.threads is None else ["--threads", str(args.threads)]
        rest += [] if args.workers is None else ["--workers", str(args.workers)]
        rest += ["--resume"] if args.resume else []
        return main([args.model] + rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
