"""Repack the DSB 2018 nuclei folder compactly (lossless) for a machine with a transfer limit.

Usage (from the repository root)::

    python recipes/pack_data.py OUT_DIR        # writes OUT_DIR/dsb2018/train

Gray images stored as RGBA (equal colour planes) become 8-bit gray PNGs and colour images
RGB PNGs, all recompressed at the highest PNG level; masks are recompressed too.  Every file
is checked: after :func:`data.to_gray` / :func:`data.image_kind` (what training reads) the
pixels and image kinds are identical to the originals.  The 63 MB folder becomes about
40 MB, so it travels with the repository to a lent GPU machine (64 MiB limit); pass
``--data OUT_DIR`` to ``build_model.py`` there.  Never commit the output.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from data import image_kind, to_gray  # noqa: E402


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=True, compress_level=9)
    return buf.getvalue()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    args = p.parse_args(argv)
    from skimage import io as skio

    src = Path(args.data) / "dsb2018" / "train"
    dst = Path(args.out) / "dsb2018" / "train"
    dst.mkdir(parents=True, exist_ok=True)
    total = 0
    for f in sorted(src.glob("*.png")):
        img = skio.imread(f)
        out = img
        if not f.stem.endswith("_masks") and img.ndim == 3 and img.shape[-1] in (3, 4):
            rgb = img[..., :3]
            gray = (np.array_equal(rgb[..., 0], rgb[..., 1])
                    and np.array_equal(rgb[..., 0], rgb[..., 2]))
            out = rgb[..., 0] if gray else rgb
        data = _png(np.ascontiguousarray(out))
        back = skio.imread(io.BytesIO(data))
        if f.stem.endswith("_masks"):
            ok = np.array_equal(back, img)
        else:
            ok = np.array_equal(to_gray(back), to_gray(img)) and image_kind(back) == image_kind(img)
        if not ok:
            raise RuntimeError(f"repacking changed {f.name}")
        (dst / f.name).write_bytes(data)
        total += len(data)
    print(f"{dst}: {total / 2 ** 20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
