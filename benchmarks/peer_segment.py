"""Reference side of ``bench_segment.py``: Cellpose 3.1 ``CellposeModel.eval`` timings.

Run with the reference python (``bash /work/shared/tools/peer_env.sh``)::

    PEER benchmarks/peer_segment.py WEIGHTS IMAGE.npy OUT.npz [--3d] [--runs 2]

``WEIGHTS`` is a bare Cellpose-format state dict (any width: the network is rebuilt from the
tensor shapes and put into a ``CellposeModel``).  The image is ``(Y, X, 2)`` or
``(Z, Y, X, 2)`` (cytoplasm, nucleus).  Prints one JSON line with the timings and writes the
masks, flows and cell probability of the last run to ``OUT.npz``.
"""

import argparse
import json
import time

import numpy as np
import torch
from cellpose import models
from cellpose.resnet_torch import CPnet


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("weights")
    ap.add_argument("image")
    ap.add_argument("out")
    ap.add_argument("--3d", dest="do_3d", action="store_true")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--diameter", type=float, default=30.0)
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed first run")
    ap.add_argument("--size", help="a Cellpose size-model file (A, smean, diam_mean, ymean): "
                    "estimate the diameter as models.Cellpose.eval(diameter=None) does "
                    "(SizeModel.eval: style pass, one segmentation at the style's diameter, "
                    "median mask diameter), then segment at it; --diameter is ignored")
    ap.add_argument("--channels", type=int, nargs=2, default=[1, 2],
                    help="Cellpose channels (1-based, 0 = gray), default 1 2")
    ap.add_argument("--gpu", action="store_true", help="Cellpose gpu=True (CUDA)")
    a = ap.parse_args()
    sd = torch.load(a.weights, map_location="cpu", weights_only=True)
    nbase = [int(sd["downsample.down.res_down_0.conv.conv_0.2.weight"].shape[1])]
    n = 0
    while f"downsample.down.res_down_{n}.conv.conv_0.2.weight" in sd:
        nbase.append(int(sd[f"downsample.down.res_down_{n}.conv.conv_0.2.weight"].shape[0]))
        n += 1
    model = models.CellposeModel(gpu=a.gpu, pretrained_model=a.weights
                                 if nbase[1:] == [32, 64, 128, 256] else False)
    if nbase[1:] != [32, 64, 128, 256]:  # other widths: swap in a CPnet of that width
        net = CPnet(nbase, 3, 3, mkldnn=model.mkldnn,
                    diam_mean=float(sd["diam_mean"])).to(model.device)
        net.load_state_dict(sd)
        model.net = net
        model.net_type = f"cpnet_{nbase[1]}"
    model.net.eval()
    if not hasattr(model, "net_ortho"):
        model.net_ortho = None
    model.diam_mean = float(sd["diam_mean"])
    model.diam_labels = float(sd["diam_labels"])
    img = np.load(a.image)
    kw = {"channels": list(a.channels), "diameter": a.diameter,
          "channel_axis": img.ndim - 1 if img.ndim > 2 else None}
    if a.do_3d:
        kw.update(do_3D=True, z_axis=0)
    sz = None
    if a.size:
        # our size model reads the style at the image's own scale: no diam_labels rescale
        model.diam_labels = model.diam_mean
        sz = models.SizeModel(model, pretrained_size=a.size)

    def run():
        if sz is None:
            return model.eval(img, **kw), a.diameter
        d, _ = sz.eval(img, channels=kw["channels"], channel_axis=kw["channel_axis"])
        return model.eval(img, **{**kw, "diameter": float(d)}), float(d)

    if not a.no_warmup:
        run()  # warm-up (numba compilation etc.)
    times = []
    for _ in range(a.runs):
        t0 = time.perf_counter()
        (masks, flows, styles), diameter = run()
        times.append(time.perf_counter() - t0)
    np.savez_compressed(a.out, masks=masks, dP=flows[1], cellprob=flows[2], styles=styles)
    print(json.dumps({"times": times, "mkldnn": bool(model.mkldnn), "nbase": nbase,
                      "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "diameter": diameter}))


if __name__ == "__main__":
    main()
