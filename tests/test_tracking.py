"""Linking labels over time: objects, costs, laptrack linking, gaps, divisions, ids."""

from __future__ import annotations

import numpy as np
import pytest

from flowseg.engine.progress import Cancelled, ProgressCollector
from flowseg.engine.tracking.link import LinkParams, link_masks
from flowseg.engine.tracking.objects import measure_frame, overlap_matrix
from flowseg.engine.tracking.perturb import perturb_frames
from flowseg.engine.tracking.result import TrackResult
from flowseg.engine.tracking.synthetic import make_timelapse


def _disk(shape, center, r, value, out=None):
    out = np.zeros(shape, np.int32) if out is None else out
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    out[(yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= r * r] = value
    return out


def _mapping(truth: np.ndarray, result: np.ndarray) -> list[dict]:
    """Per frame: truth id -> result id (by the pixels they share)."""
    return [{int(a): int(b) for a, b in set(zip(t.ravel(), r.ravel())) if a > 0 and b > 0}
            for t, r in zip(truth, result)]


@pytest.fixture(scope="module")
def movie():
    return make_timelapse(14, (128, 128), 20.0, kind="cells", n_divisions=3, speed=0.1, seed=3)


def test_measure_frame_and_overlaps():
    a = _disk((40, 40), (10, 10), 4, 3)
    _disk((40, 40), (30, 25), 5, 9, a)
    o = measure_frame(a)
    assert o.ids.tolist() == [3, 9]
    np.testing.assert_allclose(o.centroids, [[10, 10], [30, 25]], atol=1e-9)
    assert o.sizes.tolist() == [np.count_nonzero(a == 3), np.count_nonzero(a == 9)]
    b = np.roll(a, 2, axis=1)
    ov = overlap_matrix(a, b, o, measure_frame(b))
    assert ov.shape == (2, 2) and ov[0, 1] == 0 and ov[1, 0] == 0
    assert 0 < ov[0, 0] < o.sizes[0]
    huge = np.where(a == 9, 2**31 - 5, a)  # label values far beyond the pixel count
    assert measure_frame(huge).ids.tolist() == [3, 2**31 - 5]
    with pytest.raises(ValueError, match="integer"):
        measure_frame(a.astype(np.float32))


def test_perfect_masks_keep_every_identity_and_division(movie):
    truth = movie.truth
    frames = perturb_frames(truth.labels, np.random.default_rng(0), border=0, drop=0, split=0)
    res = link_masks(frames)
    maps = _mapping(truth.labels, res.labels)
    for t in range(1, truth.n_frames):  # a cell keeps its id from frame to frame
        for cell, tid in maps[t].items():
            if cell in maps[t - 1]:
                assert maps[t - 1][cell] == tid, (t, cell)
    # every true division is found, with both daughters pointing at the mother
    assert truth.n_divisions == 3
    found = {}
    for daughter, mother in truth.parents.items():
        t0 = truth.spans()[daughter][0]
        found[maps[t0][daughter]] = maps[t0 - 1][mother]
    assert found == res.parents
    assert res.n_tracks == truth.n_tracks


def test_gap_closing_keeps_the_id_across_a_missing_frame():
    shape = (60, 60)
    frames = np.zeros((5,) + shape, np.int32)
    for t in range(5):
        _disk(shape, (15 + 2 * t, 15), 6, 1, frames[t])
        if t != 2:  # the second cell is missed in frame 2
            _disk(shape, (40, 20 + 3 * t), 6, 2 if t % 2 else 5, frames[t])
    res = link_masks(frames, LinkParams(max_gap=2))
    ids = [set(np.unique(f)[1:].tolist()) for f in res.labels]
    moving = [int(res.labels[t][40, 20 + 3 * t]) for t in (0, 1, 3, 4)]
    assert len(set(moving)) == 1 and moving[0] not in ids[2]
    assert res.has_gaps() and res.n_tracks == 2
    # the CTC form splits the gap: a new label whose parent is the piece before it
    ctc = res.to_ctc()
    table = {int(r[0]): tuple(int(v) for v in r[1:]) for r in ctc.table()}
    assert len(table) == 3
    after = int(ctc.labels[3][40, 29])
    assert table[after][0] == 3 and table[after][2] == moving[0]
    assert not ctc.has_gaps()
    # without gap closing the cell gets a new id after the gap
    res0 = link_masks(frames, LinkParams(max_gap=0))
    assert int(res0.labels[1][40, 23]) != int(res0.labels[3][40, 29])


def test_short_lived_split_is_not_a_division():
    shape = (60, 60)
    frames = np.zeros((6,) + shape, np.int32)
    for t in range(6):
        _disk(shape, (30, 30), 9, 1, frames[t])
    frames[2][frames[2] > 0] = 1
    frames[2][:, 30:][frames[2][:, 30:] > 0] = 2  # cut in two for one frame only
    res = link_masks(frames)
    assert res.parents == {}
    assert res.info["pruned_divisions"] == 1
    ids = {int(res.labels[t][30, 25]) for t in (0, 1, 3, 4, 5)}
    assert len(ids) == 1  # the cell keeps one id around the bad frame
    assert res.n_tracks == 2  # the extra piece is a one-frame track of its own
    # a real division (both pieces live on) is kept
    for t in range(2, 6):
        frames[t][:] = 0
        _disk(shape, (30, 24 - t), 7, 4, frames[t])
        _disk(shape, (30, 36 + t), 7, 8, frames[t])
    res = link_masks(frames)
    assert len(res.parents) == 2 and len(set(res.parents.values())) == 1


def test_relink_keeps_ids_after_an_edit(movie):
    res = link_masks(movie.truth.labels)
    edited = res.labels.copy()
    # a cell far from any division (so erasing it leaves nothing else to re-decide)
    nodes = res.nodes()
    lineage = set(res.parents) | set(res.parents.values())
    busy = nodes[np.isin(nodes[:, 0], list(lineage)) & (np.abs(nodes[:, 1] - 5) <= 1)][:, 2:]
    here = nodes[(nodes[:, 1] == 5) & ~np.isin(nodes[:, 0], list(lineage))]
    far = np.min(np.linalg.norm(here[:, None, 2:] - busy[None], axis=-1), 1)
    victim = int(here[np.argmax(far), 0])
    assert far.max() > 2 * movie.diameter
    edited[5][edited[5] == victim] = 0  # the user erases a cell in one frame
    again = link_masks(edited, keep_ids=True)
    for t in (0, 1, 9, 13):  # frames far from the edit keep their ids
        np.testing.assert_array_equal(again.labels[t], res.labels[t])
    assert victim not in np.unique(again.labels[5])
    assert victim in np.unique(again.labels[6])  # gap closed: the same cell after the edit


def test_linking_tolerates_segmentation_errors(movie):
    rng = np.random.default_rng(1)
    frames = perturb_frames(movie.truth.labels, rng, border=0.5, drop=0.02, split=0.02)
    res = link_masks(frames)
    maps = _mapping(movie.truth.labels, res.labels)
    kept = total = 0
    for t in range(1, len(maps)):
        for cell, tid in maps[t].items():
            if cell in maps[t - 1]:
                total += 1
                kept += maps[t - 1][cell] == tid
    assert kept / total > 0.97


def test_progress_cancel_and_bad_input(movie):
    events = ProgressCollector()
    link_masks(movie.truth.labels[:4], progress=events)
    assert events.stages() == ["measuring", "linking", "lineage"]
    assert [e.done for e in events.events if e.stage == "linking"] == [1, 2, 3]
    with pytest.raises(Cancelled):
        link_masks(movie.truth.labels[:4], cancel=lambda: True)
    with pytest.raises(ValueError, match="max_gap"):
        link_masks(movie.truth.labels[:2], LinkParams(max_gap=-1))
    with pytest.raises(ValueError, match="max_distance"):
        LinkParams(max_distance=0).checked()
    with pytest.raises(ValueError, match="frame 1 has shape"):
        link_masks([np.zeros((8, 8), int), np.zeros((9, 8), int)])
    with pytest.raises(ValueError, match="no frames"):
        link_masks([])
    empty = link_masks(np.zeros((3, 16, 16), np.int32))
    assert empty.n_tracks == 0 and empty.labels.shape == (3, 16, 16)


def test_single_frame_and_3d_frames():
    one = link_masks(_disk((30, 30), (15, 15), 5, 7)[None])
    assert one.n_tracks == 1 and one.table().tolist() == [[1, 0, 0, 0]]
    vol = np.zeros((3, 12, 30, 30), np.int32)
    zz, yy, xx = np.ogrid[:12, :30, :30]
    for t in range(3):
        vol[t][(zz - 6) ** 2 + (yy - 10 - t) ** 2 + (xx - 15) ** 2 <= 16] = 3 + t
        vol[t][(zz - 6) ** 2 + (yy - 22) ** 2 + (xx - 15 + t) ** 2 <= 16] = 9 - t
    res = link_masks(vol)
    assert res.n_tracks == 2 and not res.has_gaps()
    nodes = res.nodes()
    assert nodes.shape == (6, 5)  # id, t, z, y, x


def test_track_result_views():
    lab = np.zeros((4, 20, 20), np.int32)
    lab[0, 2:6, 2:6] = 1
    lab[1, 2:6, 2:6] = 1
    lab[2, 2:6, 2:5] = 2
    lab[2, 8:12, 2:5] = 3
    lab[3, 8:12, 2:5] = 3
    res = TrackResult(lab, {2: 1, 3: 1})
    assert res.spans() == {1: (0, 1), 2: (2, 2), 3: (2, 3)}
    assert res.graph() == {2: [1], 3: [1]}
    assert res.n_divisions == 1
    np.testing.assert_array_equal(res.table(), [[1, 0, 1, 0], [2, 2, 2, 1], [3, 2, 3, 1]])
    nodes = res.nodes()
    assert nodes[:, :2].tolist() == [[1, 0], [1, 1], [2, 2], [3, 2], [3, 3]]
    back = TrackResult.from_ctc(lab, res.table())
    assert back.parents == res.parents
    with pytest.raises(ValueError, match=r"\(T, Y, X\)"):
        TrackResult(np.zeros((4, 4), np.int32))
