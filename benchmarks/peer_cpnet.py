"""Run with the reference Cellpose 3.1 python (``bash /work/shared/tools/peer_env.sh``).

Builds a Cellpose ``CPnet`` with seeded random weights and non-trivial BatchNorm statistics,
runs it on a seeded random input and saves ``{"state_dict", "input", "out", "style"}`` with
``torch.save`` (tensors only, loadable with ``weights_only=True``).  Used to produce the
committed fixture ``tests/fixtures/cpnet_w3.pt`` and by the ``peer`` tests::

    $(bash /work/shared/tools/peer_env.sh) benchmarks/peer_cpnet.py tests/fixtures/cpnet_w3.pt \
        --width 3 --size 48 --batch 2 --flat
"""

import argparse

import torch
from cellpose.resnet_torch import CPnet


def build(width: int, seed: int, diam_mean: float = 30.0) -> CPnet:
    torch.manual_seed(seed)
    net = CPnet([2] + [width * 2 ** k for k in range(4)], 3, 3, mkldnn=False,
                diam_mean=diam_mean)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
        net.diam_labels.fill_(diam_mean * 0.9)
    return net.eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--width", type=int, default=4)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--diam-mean", type=float, default=30.0)
    ap.add_argument("--flat", action="store_true", help="store weights as one flat tensor")
    a = ap.parse_args()
    net = build(a.width, a.seed, a.diam_mean)
    g = torch.Generator().manual_seed(a.seed + 1)
    x = torch.rand(a.batch, 2, a.size, a.size, generator=g) * 2.0 - 0.5
    with torch.no_grad():
        out, style = net(x)[:2]
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if a.flat:  # one flat tensor + names/shapes: much smaller file for the committed fixture
        names = list(sd)
        payload = {"names": names, "shapes": [list(sd[k].shape) for k in names],
                   "dtypes": [str(sd[k].dtype).replace("torch.", "") for k in names],
                   "flat": torch.cat([sd[k].float().reshape(-1) for k in names]),
                   "input": x, "out": out, "style": style}
    else:
        payload = {"state_dict": sd, "input": x, "out": out, "style": style}
    torch.save(payload, a.out)
    n = sum(v.numel() for v in sd.values())
    print(f"saved {a.out}: {len(sd)} tensors, {n} numbers, out {tuple(out.shape)}")


if __name__ == "__main__":
    main()
