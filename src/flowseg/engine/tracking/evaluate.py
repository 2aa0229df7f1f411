"""Cell Tracking Challenge scores of a result folder with py-ctcmetrics.

py-ctcmetrics (``pip install py-ctcmetrics``; in the ``test`` extra) implements the official
measures: TRA (tracking, from the acyclic-oriented-graph matching cost AOGM), DET
(detection) and SEG (mean Jaccard index of the matched ground-truth cells).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ctc_scores"]


def ctc_scores(result_dir: str | os.PathLike, gt_dir: str | os.PathLike,
               metrics: Sequence[str] = ("TRA", "DET", "SEG")) -> dict:
    """Score a CTC result folder against a ground-truth folder.

    Parameters
    ----------
    result_dir : path
        Holds ``maskTTT.tif`` and ``res_track.txt`` (e.g. from ``flowseg track --ctc-out``).
    gt_dir : path
        The ``NN_GT`` folder with ``TRA/`` (and ``SEG/`` for SEG).
    metrics : sequence of str
        py-ctcmetrics metric names.

    Returns
    -------
    dict
        Metric name -> value (``None`` for all when the result is not a valid CTC result;
        then ``"Valid"`` is 0).
    """
    try:
        from ctc_metrics.scripts.evaluate import calculate_metrics, load_data
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("scoring needs py-ctcmetrics: pip install py-ctcmetrics") from None
    res, gt = Path(result_dir), Path(gt_dir)
    if not (res / "res_track.txt").is_file():
        raise FileNotFoundError(f"{res} has no res_track.txt (not a CTC result folder)")
    if not (gt / "TRA" / "man_track.txt").is_file():
        raise FileNotFoundError(f"{gt} has no TRA/man_track.txt (not a CTC ground-truth folder)")
    metrics = list(metrics)
    want_seg = "SEG" in metrics
    if want_seg and not (gt / "SEG").is_dir():
        raise FileNotFoundError(f"{gt} has no SEG folder: drop SEG from the metrics")
    with contextlib.redirect_stdout(io.StringIO()):
        comp, ref, traj, segm, _, valid = load_data(str(res), str(gt), True, want_seg,
                                                    threads=1)
        out = calculate_metrics(comp, ref, traj, segm, metrics + ["Valid"], valid)
    return {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in out.items()}
