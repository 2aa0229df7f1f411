"""Train the generalist recipes together on one lent GPU, sized to a time budget, in one command.

Usage (from the repository root, on the lent machine)::

    python recipes/gpu_generalist.py --minutes 7 --data DATA [--resume] [--evaluate]

1. ``recipes/gpu_bench.py`` measures the network and crop-worker rates (5 s) and prints the
   epochs of 1024 crops that fill 80 % of ``--minutes`` for one run; with ``k`` models
   trained at once each gets ``1/k`` of them (the GPU is shared; conservative when the
   steps are launch-bound).
2. ``recipes/build_model.py MODEL --epochs E`` runs for every model at once (each with
   ``16 / k - 1`` crop workers, checkpoints every minute in ``--runs``, stopped cleanly
   after ``--minutes`` + 2 whatever happens), writing ``--runs/MODEL.pt``, never the bundled
   files.
3. Every minute, and at the end, ``recipes/gpu_snapshot.py`` copies each run's log and
   float16 snapshots of its checkpoint to ``$OUT/MODEL/`` (when ``$OUT`` is set), so a
   machine taken back early still returns usable weights.  ``--resume`` continues from the
   checkpoints in ``--runs`` (same machine, or the folder carried back).
4. With ``--evaluate``: ``recipes/evaluate_model.py`` on each finished model.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = ("cyto_generalist", "nuclei_generalist")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, required=True, help="training time of the runs")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--runs", default=str(ROOT / "runs" / "gen"))
    p.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    p.add_argument("--epochs", type=int, default=None, help="skip the benchmark")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--evaluate", action="store_true")
    a = p.parse_args(argv)
    models = [m for m in a.models.split(",") if m]
    k = len(models)
    workers = max(1, a.cores // k - 1)
    py = sys.executable
    epochs = a.epochs
    if epochs is None:
        bench = subprocess.run([py, str(HERE / "gpu_bench.py"), str(a.minutes), "--workers",
                                str(workers), "--seconds", "5"], capture_output=True, text=True,
                               check=True).stdout
        print(bench, flush=True)
        epochs = max(1, int(re.search(r"EPOCHS (\d+)", bench).group(1)) // k)
    print(f"{k} models, {epochs} epochs each, {workers} crop workers each", flush=True)
    runs = Path(a.runs)
    runs.mkdir(parents=True, exist_ok=True)
    procs = {}
    for m in models:
        cmd = [py, str(HERE / "build_model.py"), m, "--epochs", str(epochs), "--runs", str(runs),
               "--out", str(runs / f"{m}.pt"), "--data", a.data, "--workers", str(workers),
               "--max-minutes", str(a.minutes + 2)] + (["--resume"] if a.resume else [])
        procs[m] = subprocess.Popen(cmd, stdout=open(runs / f"{m}.out", "a"),  # noqa: SIM115
                                    stderr=subprocess.STDOUT)
    out = os.environ.get("OUT")

    def snapshot() -> None:
        for m in models:
            if out:
                subprocess.run([py, str(HERE / "gpu_snapshot.py"), str(runs), m,
                                str(Path(out) / m)], check=False)
    while any(pr.poll() is None for pr in procs.values()):
        time.sleep(60)
        snapshot()
    snapshot()
    codes = {m: pr.returncode for m, pr in procs.items()}
    print("exit codes", codes, flush=True)
    if a.evaluate:
        for m in models:
            if (runs / f"{m}.pt").exists():
                subprocess.run([py, str(HERE / "evaluate_model.py"), m, "--model-file",
                                str(runs / f"{m}.pt"), "--data", a.data], check=False)
                if out and (ROOT / "runs" / f"{m}_eval.json").exists():
                    (Path(out) / m).mkdir(parents=True, exist_ok=True)
                    (Path(out) / m / f"{m}_eval.json").write_bytes(
                        (ROOT / "runs" / f"{m}_eval.json").read_bytes())
    return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
