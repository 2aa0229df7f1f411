"""The segmentation engine: numpy / scipy / numba / torch only, never napari, Qt or magicgui.

Modules
-------
progress   the progress / cancel protocol shared by CLI, GUI and tests
synthetic  seeded synthetic cells and nuclei with ground truth
flows      labels -> flows (heat diffusion)
dynamics   flows -> masks (Euler integration, clustering, flow-error check)
stitch     2D masks -> 3D by IoU stitching across z
metrics    average precision and matching
net        the residual U-Net (Cellpose-compatible state dict)
transforms normalisation, resizing, tiling
model      Model / Segmentation: loading, inference (2D, 3D), size estimation
train      training and fine-tuning
io         Cellpose interop (weight files, _seg.npy) and image/label folders
"""

import os as _os

# OpenMP worker threads that spin while waiting make the network's many small operations up
# to 30x slower when the CPU is shared with other processes (measured on a loaded 2-core
# machine: 4.0 s vs 0.14 s for a small batch); let them sleep instead.  Only effective when
# set before torch is first imported, and never overrides a user's own setting.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
