"""Link per-frame labels into tracks with laptrack (Jaqaman et al. 2008 LAP tracking).

:func:`link_masks` measures every frame, hands laptrack ``(frame, index)`` coordinates and
the overlap/distance costs of :class:`~flowseg.engine.tracking.costs.PairCosts`, and turns
laptrack's graph into a :class:`~flowseg.engine.tracking.result.TrackResult`:

1. frame-to-frame linking: one linear assignment per pair of consecutive frames;
2. gap closing (a cell missed for up to ``max_gap`` frames) and divisions (a track starting
   next to / inside a cell of the previous frame) in one global assignment of track pieces;
   merging is not allowed (cells do not fuse);
3. divisions whose daughter vanishes within ``min_daughter_frames`` frames are undone (a
   cell cut in two for a frame is a segmentation error, not a mitosis);
4. ids: a cell keeps its id through time (also across closed gaps); each daughter gets a
   new id with its mother as parent.

Distances are measured in units of the median cell diameter ``D`` of the movie, so the
defaults work for any magnification.  Linking is cheap compared with segmentation: numpy
bincounts per frame pair plus laptrack's sparse assignments.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .costs import PairCosts
from .lineage import assign_tracks, prune_short_divisions, relabel_frames
from .objects import measure_frame, median_diameter
from .result import TrackResult

__all__ = ["LinkParams", "link_masks"]


@dataclass(frozen=True)
class LinkParams:
    """How labels are linked over time.

    Parameters
    ----------
    max_distance : float, optional
        Largest centroid displacement between consecutive frames, in pixels (or in the units
        of ``spacing``); None: one median cell diameter.  Over a gap of ``k`` frames
        ``sqrt(k)`` times this is allowed.
    max_gap : int
        Frames a cell may be missing and still keep its track (0: no gap closing).
    divisions : bool
        Detect divisions (daughters get new ids with a parent link).
    division_cutoff : float
        Largest division cost ``(1 - share of the daughter inside its mother) + (d / D)**2``;
        lower is stricter.
    min_daughter_frames : int
        A "daughter" that disappears again within fewer frames (before the movie ends) is
        not a division.
    spacing : tuple of float, optional
        Pixel size along each spatial axis (for anisotropic 3D frames).
    """

    max_distance: float | None = None
    max_gap: int = 2
    divisions: bool = True
    division_cutoff: float = 1.0
    min_daughter_frames: int = 3
    spacing: tuple | None = None

    def checked(self) -> LinkParams:
        """Return self, or raise ValueError naming the bad parameter."""
        if self.max_distance is not None and not (
                math.isfinite(float(self.max_distance)) and float(self.max_distance) > 0):
            raise ValueError(f"max_distance must be a number > 0 (or None), got "
                             f"{self.max_distance!r}")
        if int(self.max_gap) != self.max_gap or not 0 <= int(self.max_gap) <= 10:
            raise ValueError(f"max_gap must be an integer from 0 to 10, got {self.max_gap!r}")
        if not (math.isfinite(float(self.division_cutoff)) and self.division_cutoff > 0):
            raise ValueError(f"division_cutoff must be > 0, got {self.division_cutoff!r}")
        if int(self.min_daughter_frames) < 1:
            raise ValueError(f"min_daughter_frames must be >= 1, got {self.min_daughter_frames!r}")
        return self


Frames = np.ndarray | Sequence[np.ndarray]


def _check_frames(masks: Frames) -> list:
    frames = list(masks) if not isinstance(masks, np.ndarray) else [masks[t] for t in
                                                                    range(masks.shape[0])]
    if not frames:
        raise ValueError("no frames to link")
    shape = np.shape(frames[0])
    if len(shape) not in (2, 3):
        raise ValueError(f"masks must be (T, Y, X) or (T, Z, Y, X); a frame has shape {shape}")
    for t, f in enumerate(frames):
        if np.shape(f) != shape:
            raise ValueError(f"frame {t} has shape {np.shape(f)}, frame 0 has {shape}")
    return frames


def link_masks(masks: Frames, params: LinkParams | None = None, *, keep_ids: bool = False,
               progress: ProgressCallback | None = None,
               cancel: CancelToken = None) -> TrackResult:
    """Link the objects of a label time-lapse into tracks.

    Parameters
    ----------
    masks : np.ndarray or sequence of np.ndarray
        ``(T, Y, X)`` / ``(T, Z, Y, X)`` labels, or a list of frames; each frame's label
        values are independent of the other frames'.
    params : LinkParams, optional
    keep_ids : bool
        Re-link: keep the input label values as track ids where they are consistent (each
        track keeps its most common input value not already taken), so editing a frame and
        re-linking changes as few ids as possible.
    progress, cancel
        See :mod:`flowseg.engine.progress`; stages ``"measuring"``, ``"linking"`` (per frame
        pair) and ``"lineage"``.

    Returns
    -------
    TrackResult
    """
    from laptrack import LapTrack

    p = (params or LinkParams()).checked()
    t0 = time.perf_counter()
    frames = [np.asarray(f) for f in _check_frames(masks)]
    n = len(frames)
    spacing = None if p.spacing is None else tuple(float(s) for s in p.spacing)
    objects = []
    for t, f in enumerate(frames):
        check_cancel(cancel)
        objects.append(measure_frame(f, spacing))
        report(progress, "measuring", t + 1, n, "measuring cells")
    diam = median_diameter(objects, spacing)
    info = {"params": asdict(p), "diameter": diam, "n_frames": n}
    if diam <= 0:  # no cells anywhere
        return TrackResult(np.zeros((n,) + frames[0].shape, np.int32), {}, info)
    max_d = float(p.max_distance) if p.max_distance is not None else diam
    cutoff = 1.0 + (max_d / diam) ** 2
    div_cut = float(p.division_cutoff) if p.divisions else 0.0
    alt = 1.05 * max(cutoff, div_cut)
    costs = PairCosts(frames, objects, diam, progress=progress, cancel=cancel)
    tracker = LapTrack(
        metric=costs.link, cutoff=cutoff,
        gap_closing_metric=costs.link,
        gap_closing_cutoff=cutoff if p.max_gap > 0 else False,
        gap_closing_max_frame_count=int(p.max_gap) + 1,
        splitting_metric=costs.division,
        splitting_cutoff=div_cut if p.divisions else False,
        merging_cutoff=False,
        track_start_cost=alt, track_end_cost=alt, segment_start_cost=alt,
        segment_end_cost=alt, no_splitting_cost=alt, no_merging_cost=alt)
    coords = [np.column_stack([np.full(len(o), float(t)), np.arange(len(o), dtype=float)])
              for t, o in enumerate(objects)]
    graph = tracker.predict(coords)
    check_cancel(cancel)
    report(progress, "lineage", 0, 1, "divisions and ids")
    pruned = prune_short_divisions(graph, int(p.min_daughter_frames), n - 1) if p.divisions else 0
    order = {(t, i): tuple(o.centroids[i]) for t, o in enumerate(objects) for i in range(len(o))}
    prefer = ({(t, i): int(o.ids[i]) for t, o in enumerate(objects) for i in range(len(o))}
              if keep_ids else None)
    track_of, parents = assign_tracks(graph, order, prefer)
    labels = relabel_frames(frames, objects, track_of)
    report(progress, "lineage", 1, 1, "divisions and ids")
    info.update(pruned_divisions=pruned, seconds=time.perf_counter() - t0)
    return TrackResult(labels, parents, info)
