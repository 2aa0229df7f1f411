"""``segment_blocks``: segment an image of any size block by block on dask.distributed.

Steps (each reported through :mod:`flowseg.engine.progress`, stages ``prepare``,
``blocks``, ``merge``, ``write`` and, for an OME-Zarr label image, ``pyramid``):

1. open the input (:mod:`~flowseg.engine.blocks.source`), measure the image-wide
   normalisation and, unless given, the object diameter on a central crop
   (:mod:`~flowseg.engine.blocks.prepare`);
2. plan blocks overlapping by >= 2 diameters (:mod:`~flowseg.engine.blocks.plan`);
3. on the workers, segment each padded block with :meth:`flowseg.Model.segment` at that
   fixed diameter and store its labels in a scratch zarr array
   (:mod:`~flowseg.engine.blocks.work`);
4. match objects of neighbouring blocks where they overlap and join them
   (:mod:`~flowseg.engine.blocks.merge`);
5. on the workers, write each core with its final ids to the int32 output zarr array
   (and an OME-Zarr label image's lower resolutions, :mod:`~flowseg.engine.blocks.pyramid`).

No process ever holds more than a few blocks; the caller only handles per-block counts and
the table of merged ids.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..flows.params import MaskParams
from ..inference.model import Model
from ..inference.prepare import check_diameter
from ..memory import estimate_segment_memory
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .cluster import ClusterOptions, open_client
from .merge import DEFAULT_MATCH_IOU, global_luts
from .plan import DEFAULT_BLOCK_SIZE, BlockPlan, make_plan
from .prepare import (
    blocks_in_mask,
    estimate_central_diameter,
    image_percentiles,
    lohi_for,
)
from .pyramid import write_label_levels
from .result import BlockResult
from .source import open_source, require_zarr
from .stage import Stage
from .store import check_output, create_output, create_scratch, scratch_dir
from .work import (
    BlockOutcome,
    FileFlag,
    RunSpec,
    match_block,
    segment_block,
    write_block,
)

__all__ = ["BlockResult", "default_block_size", "segment_blocks", "task_memory"]

#: Keyword arguments of Model.segment that blockwise runs pass on to every block.
SEGMENT_OPTIONS = ("cellprob_threshold", "flow_threshold", "min_size", "niter", "augment",
                   "tile_overlap", "batch_size", "bsize", "whole_max", "pad_extra",
                   "sampling", "stitch_threshold")


#: Largest predicted memory of one block task that a default 3D block size may need (a
#: 4 GB worker then has room for the unexpected).
TASK_BUDGET = 3 * 2 ** 30
#: Resident memory of a dask worker process before its first block (Python, torch, numba,
#: distributed, flowseg and the model sent to it).  With it the estimate was 1.15x the
#: measured worker peak for 1092 x 1092 2D blocks (1.0 GiB) and 1.14x for 112^3 3D blocks
#: (859 MB, benchmarks/bench_blocks3d.py).
WORKER_BASE = int(0.33 * 2 ** 30)
#: Bytes per padded pixel a block task holds besides ``Model.segment``'s own: the raw
#: region (``2 * channels``, uint16), its float32 network channels (``4 * nchan``, kept
#: during the run) and the block's labels (int32, twice while the core is cut out).
BLOCK_BUFFERS = 8
#: Worker processes keep freed arrays of up to 64 MB in their heap for reuse
#: (:func:`~flowseg.engine.blocks.work.tune_malloc`, 2x faster network passes), so a task's
#: peak is higher than the in-memory estimate of the same work: 196^3 3D blocks peaked at
#: 2333-2421 MB against 1447 MB predicted without this factor (benchmarks/bench_blocks3d.py).
#: It scales the task's own memory (everything but :data:`WORKER_BASE`).
WORKER_HEAP = 1.9


def task_memory(plan: BlockPlan, model: Any, nchan: int, do_3d: bool,
                diameter: float | None, anisotropy: float | None = None) -> int:
    """Predicted peak resident memory (bytes) of a worker process segmenting ``plan``'s
    largest block: :data:`WORKER_BASE` plus :data:`WORKER_HEAP` times the in-memory estimate
    of ``Model.segment`` on the padded block
    (:func:`flowseg.engine.memory.estimate_segment_memory`) and the task's own buffers.

    Parameters
    ----------
    plan : BlockPlan
    model : Model
    nchan : int
        Channels of the input image.
    do_3d : bool
    diameter, anisotropy : float or None
        As the blocks are segmented.
    """
    shape = tuple(plan.padded_max)
    three = len(shape) == 3
    est = estimate_segment_memory(model, shape, z_axis=0 if three else None,
                                  do_3d=bool(do_3d) and three, diameter=diameter,
                                  anisotropy=anisotropy if three else None, available=1)
    px = math.prod(shape)
    task = est.working + px * (2 * nchan + 4 * int(getattr(model, "nchan", 2)) + BLOCK_BUFFERS)
    return int(WORKER_BASE + WORKER_HEAP * task)


def default_block_size(shape: Sequence[int], model: Any, nchan: int, do_3d: bool,
                       diameter: float, anisotropy: float | None = None,
                       overlap: Any = None) -> int:
    """The default core block edge: 1024 in 2D; in 3D the largest multiple of 32 up to 256
    whose task (:func:`task_memory`) stays within :data:`TASK_BUDGET` (the overlap of 2
    diameters on every side makes a 3D block's memory grow fast with the objects' size)."""
    edge = DEFAULT_BLOCK_SIZE[len(shape)]
    if len(shape) == 2:
        return edge
    aniso = anisotropy if len(shape) == 3 else None
    best = None
    while edge >= 32:
        try:
            plan = make_plan(shape, edge, overlap, diameter=diameter, anisotropy=aniso)
        except ValueError:  # under one diameter: keep the smallest valid edge
            break
        best = edge
        if task_memory(plan, model, nchan, do_3d, diameter, aniso) <= TASK_BUDGET:
            break
        edge -= 32
    return DEFAULT_BLOCK_SIZE[3] if best is None else best


def _as_model(model: Any) -> Any:
    if isinstance(model, Model):
        return model
    if isinstance(model, (str, Path)):
        return Model.load(model)
    raise TypeError(f"model must be a flowseg Model, a model name or a file, got "
                    f"{type(model).__name__}")


def _segment_kwargs(kwargs: dict) -> dict:
    bad = sorted(set(kwargs) - set(SEGMENT_OPTIONS))
    if bad:
        raise TypeError(f"segment_blocks got unexpected keyword argument(s) {', '.join(bad)}; "
                        f"Model.segment options it passes on: {', '.join(SEGMENT_OPTIONS)}")
    MaskParams.from_dict(kwargs)  # a bad threshold fails here, before any block runs
    return dict(kwargs)


def segment_blocks(data: Any, model: Any, *, block_size: int | Sequence[int] | None = None,
                   overlap: int | Sequence[int] | None = None,
                   diameter: float | None = None, do_3d: bool = False,
                   anisotropy: float | None = None, channels: Sequence | None = None,
                   channel_axis: int | None = None, z_axis: int | None = None,
                   normalize: Any = True, out: Any = None, overwrite: bool = False,
                   client: Any = None, cluster: ClusterOptions | None = None,
                   mask: Any = None, skip_below: float | None = None,
                   match_iou: float = DEFAULT_MATCH_IOU, tmp_dir: str | None = None,
                   progress: ProgressCallback | None = None, cancel: CancelToken = None,
                   **segment_kwargs: Any) -> BlockResult:
    """Segment an image block by block on dask.distributed; labels stream to a zarr array.

    Parameters
    ----------
    data : np.ndarray, dask array, zarr array, str or Path
        2D ``(Y, X[, C])`` or 3D ``(Z, Y, X[, C])`` image, or the path of a zarr array, an
        OME-Zarr image (axes from its metadata) or a TIFF file (read through tifffile's zarr
        interface, never whole).  A numpy array is sent to the workers whole: for images
        that do not fit in memory give a zarr / dask array or a path.
    model : Model, str or Path
        A model, or a model name / file for :meth:`flowseg.Model.load`.
    block_size : int or sequence of int, optional
        Core block size in pixels (per axis or one for all); at least one diameter,
        best 8 or more (the overlap costs less).  Default
        :func:`default_block_size` (1024 in 2D; in 3D up to 256, as memory allows).
    overlap : int or sequence of int, optional
        Margin read around each core (default 2 diameters, the minimum).
    diameter : float, optional
        Object diameter in pixels; None: estimated once on a central crop.
    do_3d, anisotropy, channels, channel_axis, z_axis, normalize
        As in :meth:`flowseg.Model.segment` (normalisation percentiles are measured on the
        whole image once, not per block).
    out : str, Path or None
        Output ``.zarr`` path.  For an OME-Zarr input a plain name (default ``"flowseg"``)
        writes the label image ``<input>/labels/<name>``.  None otherwise: a new folder in
        the temporary directory.
    overwrite : bool
        Replace an existing output.
    client : distributed.Client or str, optional
        A client or a scheduler address; None: ``cluster`` decides (default: a LocalCluster
        sized to this machine).
    cluster : ClusterOptions, optional
        Workers, memory limit per worker, threads (see
        :class:`~flowseg.engine.blocks.cluster.ClusterOptions`).
    mask : array-like, optional
        Foreground mask (same spatial axes, any downsampled shape): blocks whose region
        holds no foreground are skipped.
    skip_below : float, optional
        Skip blocks whose selected channels stay below this raw intensity.
    match_iou : float
        IoU at which two blocks' segmentations of an object cut by their face are joined.
    tmp_dir : str, optional
        Folder for the scratch array (default: beside the output); workers must see it.
    progress, cancel
        Progress callback and cancel token (:mod:`flowseg.engine.progress`).
    **segment_kwargs
        Passed to :meth:`flowseg.Model.segment` for every block (``cellprob_threshold``,
        ``flow_threshold``, ``min_size``, ``niter``, ``augment``, ``batch_size``, ...).

    Returns
    -------
    BlockResult

    Raises
    ------
    ValueError, FileNotFoundError, FileExistsError
        Bad input, geometry or output; :class:`~flowseg.engine.progress.Cancelled` when
        cancelled (the partial output is removed).
    """
    t_start = time.perf_counter()
    seg_kw = _segment_kwargs(segment_kwargs)
    model = _as_model(model)
    diameter = check_diameter(diameter)
    if not 0.0 < float(match_iou) <= 1.0:
        raise ValueError(f"match_iou must be in (0, 1], got {match_iou}")
    stitch = MaskParams.from_dict(seg_kw).stitch_threshold
    src = open_source(data, channel_axis=channel_axis, z_axis=z_axis, do_3d=do_3d,
                      stitch_threshold=stitch)
    lay = src.layout
    check_output(out, src.ome, overwrite)
    chans = None if channels is None else tuple(channels)
    norm = lohi_for(normalize, model)
    report(progress, "prepare", 0, 2, "measuring the image's intensities")
    lohi = None if norm is None else image_percentiles(src, model.nchan, chans, *norm,
                                                       cancel=cancel)
    report(progress, "prepare", 1, 2, "object size")
    how = "given"
    if diameter is None:
        diameter, how = estimate_central_diameter(
            model, src, chans, lohi, batch_size=int(seg_kw.get("batch_size", 8)),
            cancel=cancel)
    check_cancel(cancel)
    if block_size is None:
        block_size = default_block_size(lay.spatial_shape, model, lay.n_channels, do_3d,
                                        float(diameter), anisotropy, overlap)
    plan = make_plan(lay.spatial_shape, block_size, overlap, diameter=diameter,
                     anisotropy=anisotropy if lay.ndim == 3 else None)
    keep = blocks_in_mask(mask, plan)
    report(progress, "prepare", 2, 2, f"{plan.n_blocks} blocks of {plan.block_size}")
    seconds = {"prepare": time.perf_counter() - t_start}
    kw = dict(seg_kw, diameter=float(diameter), do_3d=bool(do_3d))
    if anisotropy is not None:
        kw["anisotropy"] = anisotropy
    attrs = {"flowseg": {"model": str(model.meta.get("path") or model.meta.get("source", "")),
                         "diameter": float(diameter), "diameter_source": how,
                         "do_3d": bool(do_3d), "anisotropy": None if anisotropy is None
                         else float(anisotropy),
                         "block_size": list(plan.block_size), "overlap": list(plan.overlap),
                         "complete": False}}
    target = create_output(out, lay, plan, src.ome, overwrite=overwrite, attributes=attrs)
    scratch = create_scratch(plan, tmp_dir or scratch_dir(target))
    flag = FileFlag(scratch.path + ".cancel")
    spec = RunSpec(layout=lay, nchan=model.nchan, channels=chans, lohi=lohi,
                   segment_kwargs=kw, scratch=scratch, flag=flag.path,
                   skip_below=None if skip_below is None else float(skip_below))
    threads_before = _threads()
    try:
        need = task_memory(plan, model, lay.n_channels, do_3d, float(diameter), anisotropy)
        with open_client(client, cluster, need_per_worker=need,
                         gpu=model.device.type == "cuda") as (cl, threads):
            spec = dataclasses.replace(spec, threads=threads)
            stage = Stage(cl, f"flowseg-{uuid.uuid4().hex[:10]}", progress, cancel)
            try:
                outcome = _run(stage, src, spec, plan, keep, model, target, float(match_iou),
                               seconds)
            except BaseException:
                flag.set()
                stage.stop()
                raise
    except BaseException:
        target.discard()
        raise
    finally:
        scratch.remove()
        Path(flag.path).unlink(missing_ok=True)
        _threads(threads_before)
    n_objects, n_merged, outcomes, levels = outcome
    meta = dict(attrs["flowseg"], n_objects=n_objects, complete=True)
    target.array.attrs.update({"flowseg": meta})
    seconds["total"] = time.perf_counter() - t_start
    zarr = require_zarr()

    peak = max((o.peak_rss_mb for o in outcomes), default=0.0)
    return BlockResult(
        path=target.path, labels=zarr.open_array(target.path, mode="r"), n_objects=n_objects,
        diameter=float(diameter), diameter_source=how, plan=plan,
        n_segmented=sum(not o.skipped for o in outcomes),
        n_skipped=sum(o.skipped for o in outcomes), n_merged=n_merged, seconds=seconds,
        peak_rss_mb=peak, workers=len({o.worker for o in outcomes if not o.skipped}),
        label_name=None if target.label_of is None else target.label_of[2],
        levels=tuple(levels))


def _threads(restore: tuple[int, int] | None = None) -> tuple[int, int]:
    """This process's (torch, numba) threads; with ``restore``, set them back first."""
    import numba
    import torch

    if restore is not None:
        if torch.get_num_threads() != restore[0]:
            torch.set_num_threads(restore[0])
        numba.set_num_threads(restore[1])
    return torch.get_num_threads(), numba.get_num_threads()


def _run(stage: Stage, src: Any, spec: RunSpec, plan: BlockPlan, keep: dict, model: Any,
         target: Any, match_iou: float, seconds: dict
         ) -> tuple[int, int, list[BlockOutcome], list[str]]:
    cl = stage.client
    t0 = time.perf_counter()
    model_f = cl.scatter(model, broadcast=True, hash=False)
    data_f = cl.scatter(src.array, hash=False) if src.kind == "numpy" else src.array
    blocks = list(plan)
    futs, skipped = [], []
    for b in blocks:
        if not keep[b.index]:
            skipped.append(BlockOutcome(b.index, 0, True))
            continue
        if src.kind == "dask":
            region = cl.compute(src.array[spec.layout.raw_index(b.padded)])
            stage.futures.append(region)  # cancelled with the rest
            futs.append(stage.submit(segment_block, spec, b, model_f, region, True))
        else:
            futs.append(stage.submit(segment_block, spec, b, model_f, data_f, False))
    outcomes = stage.gather(futs, "blocks", "segmenting blocks") + skipped
    seconds["blocks"] = time.perf_counter() - t0
    seconds["block_tasks"] = float(sum(o.seconds for o in outcomes))  # summed over workers
    # ---- merge: ids unique per block -> pairs across faces -> connected components
    t0 = time.perf_counter()
    by_index = {o.index: o for o in outcomes}
    counts = [by_index[b.index].n_objects for b in blocks]
    pos = {b.index: k for k, b in enumerate(blocks)}
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    mfuts, owners = [], []
    for b in blocks:
        if not counts[pos[b.index]]:
            continue
        nbs = [plan.block(j) for j in plan.forward_neighbours(b.index) if counts[pos[j]]]
        if nbs:
            mfuts.append(stage.submit(match_block, spec, b, nbs, match_iou))
            owners.append(b.index)
    edges = []
    for owner, found in zip(owners, stage.gather(mfuts, "merge", "joining objects cut by "
                                                               "block faces")):
        for j, pairs in found:
            edges.append(np.stack([pairs[:, 0] + offsets[pos[owner]],
                                   pairs[:, 1] + offsets[pos[j]]], 1))
    all_edges = np.concatenate(edges, 0) if edges else np.zeros((0, 2), np.int64)
    luts, n_objects = global_luts(counts, all_edges)
    seconds["merge"] = time.perf_counter() - t0
    # ---- write the cores with their final ids
    t0 = time.perf_counter()
    wfuts = [stage.submit(write_block, spec, b, luts[pos[b.index]], target)
             for b in blocks if counts[pos[b.index]]]
    stage.gather(wfuts, "write", "writing labels")
    seconds["write"] = time.perf_counter() - t0
    levels = [target.path]
    if target.label_of is not None and len(target.label_of[1].levels) > 1:
        gpath, ome, name = target.label_of
        report(stage.progress, "pyramid", 0, 1, "writing lower resolutions")
        group = require_zarr().open_group(f"{gpath}/labels/{name}", mode="r+")
        levels = [f"{gpath}/labels/{name}/{p}"
                  for p in write_label_levels(cl, group, target.array, ome)]
        report(stage.progress, "pyramid", 1, 1, "writing lower resolutions")
    return n_objects, int(sum(counts) - n_objects), outcomes, levels
