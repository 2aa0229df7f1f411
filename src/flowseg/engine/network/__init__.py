"""The network (torch).

Modules
-------
unet     the residual U-Net of the Cellpose method (Cellpose-compatible state dict)
tiling   running it on images of any size: padding, overlapping tiles, taper blending
"""
