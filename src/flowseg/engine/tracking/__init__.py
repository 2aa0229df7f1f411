"""Time-lapse tracking: segment every frame, link cells over time, export, evaluate.

Modules
-------
objects    per-frame ids, sizes, centroids; frame-to-frame overlaps (numpy)
costs      IoU + centroid-distance linking and division costs for laptrack
lineage    laptrack graph -> track ids, parents; pruning of spurious divisions
link       ``LinkParams`` and ``link_masks`` (laptrack LAP linking, gap closing, divisions)
result     ``TrackResult``: track labels + lineage; CTC conversion; napari Tracks data
driver     ``segment_frames`` / ``track``: one model, one diameter, every frame
export     CTC result / dataset folders, tracks CSV
ctc        reading CTC sequences (images, TRA / SEG truth) for training and evaluation
evaluate   CTC scores (TRA, DET, SEG) with py-ctcmetrics
synthetic  seeded synthetic time-lapses of moving, touching, dividing cells

Names are imported lazily, so ``import flowseg.engine.tracking`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CTCSequence",
    "FrameMasks",
    "LinkParams",
    "SyntheticTimelapse",
    "TrackResult",
    "ctc_scores",
    "link_masks",
    "make_timelapse",
    "open_sequence",
    "read_track_table",
    "segment_frames",
    "track",
    "write_ctc",
    "write_ctc_dataset",
    "write_tracks_csv",
]

_WHERE = {
    "LinkParams": "link", "link_masks": "link", "TrackResult": "result",
    "FrameMasks": "driver", "segment_frames": "driver", "track": "driver",
    "write_ctc": "export", "write_ctc_dataset": "export", "write_tracks_csv": "export",
    "CTCSequence": "ctc", "open_sequence": "ctc", "read_track_table": "ctc",
    "ctc_scores": "evaluate", "SyntheticTimelapse": "synthetic", "make_timelapse": "synthetic",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
