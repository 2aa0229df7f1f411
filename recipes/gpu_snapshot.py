"""Copy a running training's log and float16 snapshots of its checkpoint to a folder.

Usage::

    python recipes/gpu_snapshot.py RUNS_DIR MODEL [OUT_DIR]     # OUT_DIR default: $OUT

For a run on a lent machine that may be taken back at any time: each call copies the log
(per-batch lines dropped), the finished model ``RUNS_DIR/MODEL.pt`` if it exists, and the
checkpoint's last and best weights as float16 model files (``snap_last.pt``,
``snap_best.pt``, each about half the checkpoint's network size), so that something usable
comes back from every call.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    runs, name = Path(argv[0]), argv[1]
    out = Path(argv[2] if len(argv) == 3 else os.environ["OUT"])
    out.mkdir(parents=True, exist_ok=True)
    log = runs / f"{name}.log"
    if log.exists():
        lines = [ln for ln in log.read_text().splitlines()
                 if not re.search(r"(validate|size|train) \d+/", ln)]
        (out / f"{name}.log").write_text("\n".join(lines) + "\n")
        print("\n".join(lines[-6:]))
    if (runs / f"{name}.pt").exists():
        shutil.copy(runs / f"{name}.pt", out / f"{name}_final.pt")
        print("finished model copied")
    ck = runs / f"{name}.ckpt"
    if ck.exists():
        from flowseg.engine.inference.model import Model
        from flowseg.engine.training.checkpoint import load_checkpoint

        c = load_checkpoint(ck)
        m = Model.from_state_dict(c["net"], dict(c["meta"]))
        m.save(out / "snap_last.pt", overwrite=True, half=True)
        if c.get("best"):
            m.net.load_state_dict(c["best"]["state_dict"])
            m.save(out / "snap_best.pt", overwrite=True, half=True)
        print("checkpoint epoch", c["epoch"], "best", (c.get("best") or {}).get("epoch"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
