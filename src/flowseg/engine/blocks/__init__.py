"""Blockwise segmentation of images bigger than memory, on dask.distributed.

:func:`segment_blocks` (exported as :func:`flowseg.segment_blocks`) cuts a 2D image or a
3D volume (numpy, dask, zarr / OME-Zarr, TIFF) into overlapping blocks, segments each with
:meth:`flowseg.Model.segment` on dask workers, joins objects cut by block faces and streams
int32 labels to a zarr array.

Modules
-------
plan     the block grid (cores and overlapping padded regions), default block sizes
source   inputs: arrays, zarr / OME-Zarr paths, TIFF through tifffile's zarr interface
ome      OME-Zarr (NGFF 0.4 / 0.5) metadata and ``labels/`` images
prepare  image-wide normalisation, diameter estimate, foreground mask
store    output array and scratch array
work     the worker tasks (segment, match, write)
merge    unique ids, IoU matching across faces, connected components
cluster  LocalCluster sized to the machine, or an existing scheduler
run      the orchestration (``segment_blocks``)
stage    submitting / gathering a run's dask tasks with progress and cancel
result   ``BlockResult``
pyramid  lower-resolution levels of an OME-Zarr label image
quality  objects split at block faces (for tests and benchmarks)
lazy     for callers holding a lazy image (the napari widget): when to go blockwise, where
         to write
"""

from .cluster import ClusterOptions
from .plan import BlockPlan, make_plan
from .run import BlockResult, segment_blocks

__all__ = ["BlockPlan", "BlockResult", "ClusterOptions", "make_plan", "segment_blocks"]
