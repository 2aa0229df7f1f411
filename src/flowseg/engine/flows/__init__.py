"""Labels <-> flows <-> masks, without the network (numpy / numba).

Modules
-------
diffusion          labels -> flows (heat diffusion from each object's centre); its numba
                   kernels in ``diffusion_kernels``
dynamics           flows -> masks (Euler integration, clustering, flow-error check); its
                   kernels in ``dynamics_kernels`` and ``masks_kernels``
params             :class:`MaskParams`: the mask parameters and their defaults
masks              :func:`compute_masks` (2D, 3D and stacks of slices) with a MaskParams
stitch             2D masks -> 3D objects by IoU across z
metrics            matching by IoU, average precision, aggregated Jaccard
"""
