"""Freeze the model zoo's style reference: the encoders of the bundled ``nuclei`` and ``cyto``.

The model zoo (``flowseg segment --model auto``, :mod:`flowseg.engine.inference.zoo`)
compares every model's stored style centroid in the style space of fixed reference networks
(:mod:`flowseg.engine.inference.reference`).  That space must not move when a bundled model
is retrained and replaced, or every centroid stored so far (in users' models and in the
bundled files) would be left out of the choice.  So the references are frozen copies, made
once by this script, of the bundled networks' encoders (the ``downsample.*`` tensors, all a
style needs), in the dtypes of the bundled files (styles bitwise the same), each with the
fingerprint of the full network it came from (the value the stored centroids name)::

    src/flowseg/models/nuclei.pt -> src/flowseg/models/reference/nuclei.pt
    src/flowseg/models/cyto.pt   -> src/flowseg/models/reference/cyto.pt

Run it from the repository root::

    python recipes/freeze_reference.py            # refuses to overwrite existing references
    python recipes/freeze_reference.py --force    # re-freeze (moves the style space!)

``--force`` is for a deliberate change of the style space only: after it, every stored
centroid whose fingerprint no longer matches is left out of the choice until it is
recomputed (``recipes/zoo_centroids.py`` for the bundled models, ``zoo.write_style`` for
others).  Each written file is checked by reading it back: its fingerprint equals the full
network's and the styles of a few synthetic images equal the full network's, bitwise.
It also refuses (without ``--force``) to freeze a bundled model whose weights are not the
network its own stored centroid names, i.e. a retrained one: restore the reference files from
the repository instead.  The bundled model files are only read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.inference import reference, zoo
from flowseg.engine.inference.base import ModelBase
from flowseg.engine.io import registry


def _check(name: str, model_path: Path, ref_path: Path) -> None:
    """Read ``ref_path`` back and compare it with the full network at ``model_path``."""
    full = ModelBase.load(model_path, device="cpu")
    ref = reference.load_style_reference(ref_path, device="cpu")
    fp = zoo.weights_fingerprint(full.net.state_dict())
    if ref.fingerprint != fp:
        raise SystemExit(f"{ref_path}: fingerprint {ref.fingerprint} != full network's {fp}")
    for k, (kind, shape) in enumerate((("nuclei", (96, 96)), ("cells", (200, 320)),
                                       ("phase", (300, 260)))):
        img = make_sample(kind, shape, seed=k, with_nuclei=kind != "nuclei").image
        a = zoo._reference_style(ref, img)
        b = zoo._reference_style(full, img)
        if not np.array_equal(a, b):
            raise SystemExit(f"{ref_path}: style of a {kind} image differs from the full "
                             f"network's by {np.abs(a - b).max():.3g}")
    stored = (full.meta.get("style") or {})
    names, fps = stored.get("reference") or [], stored.get("fingerprint") or []
    note = ""
    if name in names and len(fps) == len(names):
        want = fps[names.index(name)]
        note = ("; matches the stored centroids" if want == fp
                else f"; WARNING: the stored centroids name {want}")
    print(f"{name}: {ref_path} ({ref_path.stat().st_size / 1e6:.2f} MB), fingerprint {fp}"
          f"{note}; styles bitwise equal to the full network's")


def main(argv: list[str] | None = None) -> int:
    """Freeze the reference networks; see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true",
                    help="overwrite existing reference files (from changed bundled models: moves "
                         "the style space)")
    ap.add_argument("--names", nargs="+", default=list(reference.DEFAULT_REFERENCE),
                    help="bundled models to freeze (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=reference.reference_dir(),
                    help="output folder (default: %(default)s)")
    args = ap.parse_args(argv)
    src = registry.bundled_model_dir()
    paths = {n: (src / f"{n}.pt", args.out / f"{n}.pt") for n in args.names}
    exist = [str(o) for _, o in paths.values() if o.exists()]
    if exist and not args.force:
        print(f"refusing to overwrite {', '.join(exist)} (pass --force to re-freeze; from changed "
              "bundled models that moves the style space of every stored centroid)",
              file=sys.stderr)
        return 1
    for name, (model_path, _) in paths.items():
        full = ModelBase.load(model_path, device="cpu")
        fp = zoo.weights_fingerprint(full.net.state_dict())
        stored = zoo.model_style(full) or {}
        names, fps = stored.get("reference") or [], stored.get("fingerprint") or []
        if name in names and len(fps) == len(names) and fps[names.index(name)] != fp \
                and not args.force:
            print(f"refusing to freeze {model_path}: its weights ({fp}) are not the network "
                  f"its own stored centroid names ({fps[names.index(name)]}): a retrained "
                  "model; restore the reference files instead (git checkout -- "
                  "src/flowseg/models/reference), or pass --force to move the style space",
                  file=sys.stderr)
            return 1
    for name, (model_path, out) in paths.items():
        reference.freeze_reference(model_path, out, name=name, overwrite=args.force)
        _check(name, model_path, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
