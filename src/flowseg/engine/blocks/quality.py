"""How well a blockwise result joined objects across block faces (tests and benchmarks).

:func:`face_splits` compares a blockwise segmentation with a reference segmentation of the
same image (e.g. the in-memory result): a reference object crossing a core face is *split*
when two different blockwise labels, on the two sides of the face, each cover a good part
of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .plan import BlockPlan

__all__ = ["FaceSplits", "face_splits"]


@dataclass(frozen=True)
class FaceSplits:
    """Objects crossing block faces and those of them split there.

    Attributes
    ----------
    crossing : int
        Reference objects with pixels on both sides of a core face.
    split : int
        Of those, objects covered by two blockwise labels meeting at the face.
    split_ids : tuple of int
        Reference ids of the split objects.
    """

    crossing: int
    split: int
    split_ids: tuple[int, ...] = ()

    @property
    def fraction(self) -> float:
        """``split / crossing`` (0 when nothing crosses a face)."""
        return self.split / self.crossing if self.crossing else 0.0


def face_splits(labels: np.ndarray, reference: np.ndarray, plan: BlockPlan,
                min_cover: float = 0.2) -> FaceSplits:
    """Count reference objects cut in two by a block face of ``plan``.

    Parameters
    ----------
    labels : np.ndarray
        Blockwise labels (spatial shape ``plan.shape``).
    reference : np.ndarray
        Reference labels of the same image.
    plan : BlockPlan
        The blocks ``labels`` came from.
    min_cover : float
        A blockwise label counts as a piece of a reference object when it covers at least
        this fraction of it.
    """
    labels = np.asarray(labels)
    reference = np.asarray(reference)
    if labels.shape != tuple(plan.shape) or reference.shape != labels.shape:
        raise ValueError(f"labels {labels.shape} and reference {reference.shape} must have "
                         f"the plan's shape {plan.shape}")
    crossing: set[int] = set()
    candidates: set[tuple[int, int, int]] = set()
    for axis, c in plan.faces():
        before = [slice(None)] * labels.ndim
        after = [slice(None)] * labels.ndim
        before[axis], after[axis] = slice(c - 1, c), slice(c, c + 1)
        ra, rb = reference[tuple(before)].ravel(), reference[tuple(after)].ravel()
        la, lb = labels[tuple(before)].ravel(), labels[tuple(after)].ravel()
        same = (ra == rb) & (ra > 0)
        crossing.update(np.unique(ra[same]).tolist())
        cut = same & (la > 0) & (lb > 0) & (la != lb)
        for r, a, b in zip(ra[cut].tolist(), la[cut].tolist(), lb[cut].tolist()):
            candidates.add((r, a, b))
    if not candidates:
        return FaceSplits(len(crossing), 0)
    area = np.bincount(reference.ravel())
    fg = reference > 0
    key = reference[fg].astype(np.int64) * (int(labels.max()) + 1) + labels[fg]
    pairs, counts = np.unique(key, return_counts=True)
    cover = dict(zip(pairs.tolist(), counts.tolist()))
    n_lab = int(labels.max()) + 1
    split = sorted({r for r, a, b in candidates
                    if cover.get(r * n_lab + a, 0) >= min_cover * area[r]
                    and cover.get(r * n_lab + b, 0) >= min_cover * area[r]})
    return FaceSplits(len(crossing), len(split), tuple(split))
