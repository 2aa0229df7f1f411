"""``TrackResult``: a label time-lapse in which a cell keeps its id, plus its lineage.

Conventions
-----------
* ``labels`` is ``(T, Y, X)`` or ``(T, Z, Y, X)`` int32; 0 is background and a label value
  is one cell (one *track*) in every frame where it appears.
* ``parents`` maps a daughter's id to its mother's id (divisions).  A mother's track ends in
  the frame before its daughters' tracks begin.
* A track may skip frames (a closed gap: the cell was not detected for 1-2 frames but is
  the same cell).  The Cell Tracking Challenge (CTC) format cannot hold gaps, so
  :meth:`TrackResult.to_ctc` gives each continuous piece after a gap a new label whose
  parent is the piece before it, as the CTC specification asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .objects import measure_frame

__all__ = ["TrackResult"]


@dataclass
class TrackResult:
    """Tracked labels and their lineage.

    Attributes
    ----------
    labels : np.ndarray
        ``(T, *spatial)`` int32 track labels, 0 = background.
    parents : dict of int to int
        Daughter id -> mother id.
    info : dict
        How the result was made (parameters, diameter, timings); JSON-able.
    """

    labels: np.ndarray
    parents: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        lab = np.asarray(self.labels)
        if lab.ndim not in (3, 4):
            raise ValueError(f"track labels must be (T, Y, X) or (T, Z, Y, X), got shape "
                             f"{lab.shape}")
        if not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"track labels must be integers, got dtype {lab.dtype}")
        self.labels = lab
        self.parents = {int(k): int(v) for k, v in dict(self.parents).items() if int(v) != 0}
        self._frames: list | None = None

    # ------------------------------------------------------------------ basic views
    @property
    def n_frames(self) -> int:
        """Number of time points."""
        return int(self.labels.shape[0])

    def frame_ids(self) -> list[np.ndarray]:
        """The track ids present in each frame (cached)."""
        if self._frames is None:
            self._frames = [measure_frame(f).ids for f in self.labels]
        return self._frames

    def presence(self) -> dict[int, np.ndarray]:
        """Track id -> sorted frames where it appears."""
        out: dict[int, list] = {}
        for t, ids in enumerate(self.frame_ids()):
            for i in ids.tolist():
                out.setdefault(int(i), []).append(t)
        return {k: np.asarray(v, np.int64) for k, v in sorted(out.items())}

    @property
    def ids(self) -> np.ndarray:
        """All track ids, increasing."""
        return np.asarray(sorted(self.presence()), np.int64)

    @property
    def n_tracks(self) -> int:
        """Number of tracks (distinct ids)."""
        return int(self.ids.size)

    @property
    def n_divisions(self) -> int:
        """Number of mothers with daughters."""
        return len(set(self.parents.values()))

    def has_gaps(self) -> bool:
        """Whether some track skips frames."""
        return any(bool(np.any(np.diff(f) > 1)) for f in self.presence().values())

    def spans(self) -> dict[int, tuple[int, int]]:
        """Track id -> (first frame, last frame)."""
        return {k: (int(v[0]), int(v[-1])) for k, v in self.presence().items()}

    def nodes(self, spacing: tuple | None = None) -> np.ndarray:
        """One row per cell and frame: ``(id, t, [z,] y, x)`` centroids, sorted by id then t.

        This is the ``data`` of a napari Tracks layer.
        """
        rows = []
        for t, frame in enumerate(self.labels):
            objs = measure_frame(frame, spacing)
            if len(objs):
                rows.append(np.column_stack([objs.ids.astype(np.float64),
                                             np.full(len(objs), float(t)), objs.centroids]))
        if not rows:
            return np.zeros((0, 2 + self.labels.ndim - 1), np.float64)
        data = np.concatenate(rows)
        return data[np.lexsort((data[:, 1], data[:, 0]))]

    def graph(self) -> dict[int, list[int]]:
        """``{daughter: [mother]}`` for present tracks (a napari Tracks layer's ``graph``)."""
        present = set(self.presence())
        return {d: [m] for d, m in sorted(self.parents.items()) if d in present and m in present}

    def table(self) -> np.ndarray:
        """CTC track table ``(N, 4)``: label, first frame, last frame, parent (0 = none).

        Raises
        ------
        ValueError
            If a track has a gap (use :meth:`to_ctc` first).
        """
        if self.has_gaps():
            raise ValueError("tracks with gaps cannot be written as a CTC table; "
                             "convert with to_ctc() first")
        rows = [(k, b, e, self.parents.get(k, 0)) for k, (b, e) in self.spans().items()]
        return np.asarray(rows, np.int64).reshape(-1, 4)

    # ------------------------------------------------------------------ conversions
    def to_ctc(self) -> TrackResult:
        """The same tracks with every gap split into a new label whose parent is the piece
        before it (the Cell Tracking Challenge convention); divisions are kept."""
        pres = self.presence()
        next_id = int(max(pres, default=0)) + 1
        relabel: dict[int, list[tuple[int, int, int]]] = {}  # id -> [(first, last, new id)]
        parents: dict[int, int] = {}
        for k, frames in pres.items():
            cuts = np.flatnonzero(np.diff(frames) > 1) + 1
            pieces = np.split(frames, cuts)
            out = []
            for j, piece in enumerate(pieces):
                new = k if j == 0 else next_id
                if j > 0:
                    next_id += 1
                    parents[new] = out[-1][2]
                out.append((int(piece[0]), int(piece[-1]), new))
            relabel[k] = out
        for d, m in self.parents.items():
            if d in relabel and m in relabel:
                parents[d] = relabel[m][-1][2]
        labels = self.labels
        if any(len(v) > 1 for v in relabel.values()):
            top = max(next_id - 1, int(labels.max(initial=0)))
            labels = labels.astype(np.int32, copy=True)
            for t in range(self.n_frames):
                moves = [(k, new) for k, pieces in relabel.items() for (b, e, new) in pieces[1:]
                         if b <= t <= e]
                if moves:
                    lut = np.arange(top + 1, dtype=np.int32)
                    for k, new in moves:
                        lut[k] = new
                    labels[t] = lut[labels[t]]
        return TrackResult(labels, parents, {**self.info, "ctc": True})

    @classmethod
    def from_ctc(cls, labels: np.ndarray, table: np.ndarray,
                 info: dict | None = None) -> TrackResult:
        """Build a result from CTC masks and an ``L B E P`` table."""
        table = np.asarray(table, np.int64).reshape(-1, 4)
        parents = {int(r[0]): int(r[3]) for r in table if r[3] != 0}
        return cls(np.asarray(labels), parents, dict(info or {}))
