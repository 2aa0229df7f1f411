"""Seeded synthetic time-lapses with ground truth: moving, touching cells that divide.

Built on :mod:`flowseg.engine.data.synthetic`: the first frame's layout comes from
:func:`~flowseg.engine.data.synthetic.make_labels` (well-spread, touching cells) and every frame
is drawn with :func:`~flowseg.engine.data.synthetic.render`.  In between, each cell is a
star-shaped blob (radius, elongation, orientation, boundary harmonics) that moves with a
persistent random velocity, is pushed away from its neighbours, grows slowly, wobbles its
outline, and may divide into two daughters (new ids, parent = mother) that move apart.
Where blobs overlap the pixel goes to the cell whose shape-normalised centre is closest,
so neighbours touch along irregular borders.

The ground truth is a :class:`~flowseg.engine.tracking.result.TrackResult`;
:func:`~flowseg.engine.tracking.export.write_ctc_dataset` writes images and truth in the
Cell Tracking Challenge layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..data.synthetic import make_labels, render
from .objects import measure_frame
from .result import TrackResult

__all__ = ["SyntheticTimelapse", "make_timelapse"]

_MIN_PIXELS = 20


@dataclass
class SyntheticTimelapse:
    """A rendered time-lapse with its ground truth.

    Attributes
    ----------
    images : np.ndarray
        ``(T, Y, X, C)`` float32 (C = 1 for nuclei, 2 for cells: cytoplasm + nuclei).
    truth : TrackResult
        Ground-truth track labels and division parents.
    diameter : float
        Median cell diameter of the first frame, in pixels.
    """

    images: np.ndarray
    truth: TrackResult
    diameter: float


class _Cells:
    """State of the living cells (one row each)."""

    def __init__(self, centers: np.ndarray, radii: np.ndarray, rng: np.random.Generator,
                 irregularity: float, elongation: float) -> None:
        n = len(centers)
        self.rng = rng
        self.irr = irregularity
        self.elong = elongation
        self.pos = centers.astype(np.float64)
        self.r = radii.astype(np.float64)
        self.r_birth = self.r.copy()
        self.vel = np.zeros((n, 2))
        self.ids = np.arange(1, n + 1)
        self.angle = rng.uniform(0, np.pi, n)
        self.ax = 1.0 + (elongation - 1.0) * rng.uniform(0.5, 1.0, n)
        self.coef = irregularity * rng.standard_normal((n, 4)) / np.arange(1, 5)
        self.phase = rng.uniform(0, 2 * np.pi, (n, 4))
        self.next_id = n + 1

    def keep(self, rows: np.ndarray) -> None:
        for name in ("pos", "r", "r_birth", "vel", "ids", "angle", "ax", "coef", "phase"):
            setattr(self, name, getattr(self, name)[rows])

    def divide(self, row: int) -> tuple[int, list[int]]:
        """Replace cell ``row`` by two daughters along its long axis, moving apart.

        Returns the mother's id and the daughters' ids.
        """
        a = float(self.angle[row])
        axis = np.array([np.cos(a), np.sin(a)])
        r_d = float(self.r[row]) / np.sqrt(2.0)
        pos, vel, mother = self.pos[row].copy(), self.vel[row].copy(), int(self.ids[row])
        self.keep(np.flatnonzero(np.arange(len(self.ids)) != row))
        kids = []
        for sign in (1.0, -1.0):
            kid = self.next_id
            self.next_id += 1
            self.add(pos + sign * 0.55 * r_d * axis, r_d, vel + sign * 0.15 * r_d * axis, kid,
                     a + np.pi / 2)
            kids.append(kid)
        return mother, kids

    def add(self, pos: np.ndarray, r: float, vel: np.ndarray, cid: int, angle: float) -> None:
        rng = self.rng
        self.pos = np.vstack([self.pos, pos[None]])
        self.r = np.append(self.r, r)
        self.r_birth = np.append(self.r_birth, r)
        self.vel = np.vstack([self.vel, vel[None]])
        self.ids = np.append(self.ids, cid)
        self.angle = np.append(self.angle, angle)
        self.ax = np.append(self.ax, 1.0 + (self.elong - 1.0) * rng.uniform(0.5, 1.0))
        self.coef = np.vstack([self.coef, self.irr * rng.standard_normal(4) / np.arange(1, 5)])
        self.phase = np.vstack([self.phase, rng.uniform(0, 2 * np.pi, 4)])


def _rasterize(shape: tuple, cells: _Cells) -> np.ndarray:
    """Labels of the cells' blobs; overlaps go to the closest shape-normalised centre."""
    best = np.full(shape, np.inf, np.float32)
    labels = np.zeros(shape, np.int32)
    for i in range(len(cells.ids)):
        r, ax, a = float(cells.r[i]), float(cells.ax[i]), float(cells.angle[i])
        ext = r * np.sqrt(ax) * (1 + 3 * np.abs(cells.coef[i]).sum()) + 2
        lo = np.maximum(np.floor(cells.pos[i] - ext).astype(int), 0)
        hi = np.minimum(np.ceil(cells.pos[i] + ext).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        yy, xx = np.meshgrid(np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]), indexing="ij")
        dy, dx = yy - cells.pos[i, 0], xx - cells.pos[i, 1]
        u = (dy * np.cos(a) + dx * np.sin(a)) / (r * np.sqrt(ax))
        v = (-dy * np.sin(a) + dx * np.cos(a)) / (r / np.sqrt(ax))
        rho, theta = np.hypot(u, v), np.arctan2(v, u)
        rr = 1.0 + sum(cells.coef[i, k] * np.cos((k + 2) * theta + cells.phase[i, k])
                       for k in range(4))
        score = (rho / np.maximum(rr, 0.3)).astype(np.float32)
        sl = (slice(lo[0], hi[0]), slice(lo[1], hi[1]))
        win = (score < 1.0) & (score < best[sl])
        best[sl][win] = score[win]
        labels[sl][win] = int(cells.ids[i])
    return _largest_pieces(labels)


def _largest_pieces(labels: np.ndarray) -> np.ndarray:
    """Keep each label's largest connected piece; drop labels under ``_MIN_PIXELS``."""
    out = np.zeros_like(labels)
    for i, sl in enumerate(ndi.find_objects(labels)):
        if sl is None:
            continue
        m = labels[sl] == i + 1
        cc, n = ndi.label(m)
        if n > 1:
            m = cc == 1 + int(np.argmax(np.bincount(cc.ravel())[1:]))
        if m.sum() >= _MIN_PIXELS:
            out[sl][m] = i + 1
    return out


def _move(cells: _Cells, shape: tuple, diameter: float, speed: float) -> None:
    """One frame of motion: persistent random velocity, neighbour repulsion, borders,
    slow growth and outline wobble."""
    rng, n = cells.rng, len(cells.ids)
    if n == 0:
        return
    cells.vel = 0.8 * cells.vel + 0.6 * speed * diameter * rng.standard_normal((n, 2))
    # no jumps past a neighbour (cells do not pass through each other): the truth must be
    # trackable, also for small, crowded daughters
    vmax = np.minimum(2.0 * speed * diameter, 0.3 * cells.r)[:, None]
    norm = np.sqrt((cells.vel ** 2).sum(1, keepdims=True))
    cells.vel = cells.vel * np.minimum(1.0, vmax / np.maximum(norm, 1e-9))
    cells.pos = cells.pos + cells.vel
    for _ in range(4):  # push overlapping neighbours apart
        diff = cells.pos[:, None, :] - cells.pos[None, :, :]
        dist = np.sqrt((diff ** 2).sum(-1)) + np.eye(n)
        target = 0.9 * (cells.r[:, None] + cells.r[None, :])
        push = np.clip(target - dist, 0, None) * (1 - np.eye(n)) / 2
        cells.pos = cells.pos + (diff / dist[..., None] * push[..., None]).sum(1) * 0.5
    lo = 0.6 * cells.r[:, None]
    hi = np.asarray(shape, float)[None, :] - lo
    out = (cells.pos < lo) | (cells.pos > hi)
    cells.vel[out] *= -1
    cells.pos = np.clip(cells.pos, lo, hi)
    cells.r = np.minimum(cells.r * 1.012, 1.3 * cells.r_birth)
    cells.phase = cells.phase + rng.normal(0, 0.12, cells.phase.shape)
    cells.angle = cells.angle + rng.normal(0, 0.04, n)


def make_timelapse(n_frames: int = 12, shape: Sequence[int] = (128, 128),
                   diameter: float = 20.0, *, kind: str = "nuclei", n_divisions: int = 3,
                   speed: float = 0.1, density: float = 1.0, elongation: float = 1.2,
                   irregularity: float = 0.08, seed: int = 0,
                   **render_kwargs) -> SyntheticTimelapse:
    """A 2D time-lapse of moving, touching, dividing cells with ground-truth tracks.

    Parameters
    ----------
    n_frames : int
        Number of frames (>= 2).
    shape : (int, int)
        Frame shape.
    diameter : float
        Typical cell diameter in pixels.
    kind : {"nuclei", "cells"}
        ``nuclei``: bright nuclei, one channel; ``cells``: fluorescent cytoplasm plus a
        nuclear channel.
    n_divisions : int
        Number of divisions (each at least 3 frames before the end).
    speed : float
        Typical displacement per frame, in cell diameters.
    density : float
        Seed spacing of the first frame in diameters (< 1: crowded, touching cells).
    elongation, irregularity : float
        Shape of the cells (see :func:`flowseg.engine.data.synthetic.make_labels`).
    seed : int
        Random seed; everything is deterministic given it.
    **render_kwargs
        ``noise``, ``blur``, ``background`` for :func:`flowseg.engine.data.synthetic.render`.

    Returns
    -------
    SyntheticTimelapse
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2:
        raise ValueError(f"synthetic time-lapses are 2D; got frame shape {shape}")
    if int(n_frames) < 2:
        raise ValueError(f"n_frames must be >= 2, got {n_frames}")
    if kind not in ("nuclei", "cells"):
        raise ValueError(f"unknown kind {kind!r}; use 'nuclei' or 'cells'")
    rng = np.random.default_rng(seed)
    first = make_labels(shape, diameter, density=density, elongation=1.0,
                        irregularity=irregularity, seed=seed)
    objs = measure_frame(first)
    cells = _Cells(objs.centroids, 1.1 * np.sqrt(objs.sizes / np.pi), rng, irregularity,
                   max(float(elongation), 1.0))
    last_div = int(n_frames) - 3
    div_frames = (sorted(rng.integers(1, last_div, int(n_divisions)).tolist())
                  if last_div > 1 and n_divisions > 0 else [])
    born = {int(i): -100 for i in cells.ids}  # the first cells may divide at once
    parents: dict[int, int] = {}
    frames = []
    for t in range(int(n_frames)):
        if t > 0:
            _move(cells, shape, diameter, speed)
        for _ in range(div_frames.count(t)):
            ok = [i for i in range(len(cells.ids)) if t - born[int(cells.ids[i])] >= 3]
            if not ok:
                continue
            row = int(rng.choice(ok))
            mother, kids = cells.divide(row)
            for k in kids:
                parents[k], born[k] = mother, t
        frames.append(_rasterize(shape, cells))
    labels = np.stack(frames)
    truth = TrackResult(labels, parents, {"synthetic": True, "seed": int(seed)})
    present = set(truth.presence())
    truth.parents = {d: m for d, m in parents.items() if d in present and m in present}
    images = np.stack([_render(f, kind, seed, render_kwargs) for f in labels])
    d0 = float(np.median(2 * np.sqrt(measure_frame(labels[0]).sizes / np.pi)))
    return SyntheticTimelapse(images=images, truth=truth, diameter=d0)


def _render(frame: np.ndarray, kind: str, seed: int, kw: dict) -> np.ndarray:
    """One frame through :func:`flowseg.engine.data.synthetic.render` (same seed every frame, so
    a cell keeps its brightness)."""
    if kind == "nuclei":
        return render(frame, kind="nuclei", seed=seed + 1, **kw)
    return render(frame, kind="fluorescence", with_nuclei=True, seed=seed + 1, **kw)
