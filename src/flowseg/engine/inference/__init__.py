"""Segmenting images with a model.

Modules
-------
base        :class:`ModelBase`: network + metadata, loading and saving; devices
model       :class:`Model`: a :class:`ModelBase` that segments and estimates diameters
prepare     input checks, channel selection, normalisation, the 2D network pass
segment     the segmentation pipeline (2D, slice stacks, 3D dispatch)
volume      3D: the network on YX, ZX and ZY slices
size        object-size (diameter) estimation: size model, then one refining pass
size_fit    fitting and calibrating the size model on labelled images
crops       measuring the object size on a sample of crops (chooses the pass's scale)
style       style vectors from a few tiles (encoder only), for the size model
workers     single-threaded workers for the 3D slabs
checks      input validation shared by segment, estimate, train and the CLI
result      :class:`Segmentation`, re-thresholdable without the network
transforms  axis and channel selection, percentile normalisation, resizing
zoo         choosing, per image, the model whose training images look most alike
reference   the zoo's frozen style reference (encoders of the bundled networks)
"""
