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
