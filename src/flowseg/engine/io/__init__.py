"""Files: model files, Cellpose ``_seg.npy``, ImageJ ROIs, training folders, model names,
voxel sizes.

Modules
-------
modelfile  our model files and Cellpose 1-3 weight files
segfile    Cellpose ``_seg.npy`` files (read and written safely)
roi        ImageJ ROI sets from label images
datasets   Cellpose-style training folders (``NAME.ext`` + ``NAME_masks.ext``)
registry   where models live: bundled, the user's, Cellpose's
images     image files read with one clear error, label files written atomically
voxel      the voxel size a volume file states (ImageJ / OME-TIFF, OME-Zarr), its anisotropy
"""
