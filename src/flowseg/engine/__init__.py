"""The segmentation engine: numpy / scipy / numba / torch only, never napari, Qt or magicgui.

Internal: the public API is what :mod:`flowseg` exports (``flowseg.Model``,
``flowseg.train``, ``flowseg.masks_to_flows``, ...).  The layout of this package may change
between releases and old module paths are not kept as aliases (there are no compatibility
shims); model files and ``_seg.npy`` files store no module paths, so they load whatever the
layout.

Sub-packages, by topic
----------------------
flows      labels -> flows -> masks, stitching, metrics (no network)
network    the residual U-Net and tiled inference
inference  ``Model``: loading, segmenting (2D, stacks, 3D), diameter estimate, model zoo
training   training and fine-tuning (``train``), the training set of the napari loop
io         model files, ``_seg.npy``, ImageJ ROIs, training folders, the model registry,
           voxel sizes
data       synthetic images with ground truth, the bundled samples
blocks     blockwise segmentation of images bigger than memory (dask, zarr)
tracking   time-lapse tracking (laptrack) and Cell Tracking Challenge export

Shared modules
--------------
progress   the progress / cancel protocol shared by CLI, GUI and tests
memory     the memory an in-memory segmentation needs, measured before it runs

Dependencies run one way: ``flows``, ``network``, ``io`` and ``data`` import none of
``inference`` / ``training``; ``inference`` imports no ``training``; there are no import
cycles (``tests/test_architecture.py``).
"""

import os as _os

# OpenMP worker threads that spin while waiting make the network's many small operations up
# to 30x slower when the CPU is shared with other processes (measured on a loaded 2-core
# machine: 4.0 s vs 0.14 s for a small batch); let them sleep instead.  Only effective when
# set before torch is first imported, and never overrides a user's own setting.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
