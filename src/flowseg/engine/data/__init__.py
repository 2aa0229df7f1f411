"""Synthetic images with ground truth and the bundled samples made from them.

Modules
-------
synthetic  seeded synthetic cells and nuclei with ground-truth labels
samples    the bundled sample images (:func:`load_sample`)
"""
