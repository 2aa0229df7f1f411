"""Run with the reference Cellpose 3.1 python: time ``cellpose.train.train_seg``.

Reads ``images`` (list of (2, H, W) float32, already normalised) and ``labels`` from an
``.npz`` written by ``bench_train.py`` and prints one JSON line: crops/s of the training loop
(the flows computed up front by ``_process_train_test`` are timed separately).
"""

import json
import sys
import tempfile
import time

import numpy as np
import torch
from cellpose import train as cptrain
from cellpose.resnet_torch import CPnet


def main() -> None:
    path, width, epochs, batch, crop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(
        sys.argv[4]), int(sys.argv[5])
    d = np.load(path)
    n = int(d["n"])
    images = [d[f"image{k}"] for k in range(n)]
    labels = [d[f"labels{k}"] for k in range(n)]
    torch.manual_seed(0)
    net = CPnet([2] + [width * 2 ** k for k in range(4)], 3, 3, mkldnn=False, diam_mean=30.0)
    prep = {"s": 0.0}
    orig = cptrain._process_train_test

    def timed(*a, **k):
        t = time.perf_counter()
        out = orig(*a, **k)
        prep["s"] += time.perf_counter() - t
        return out

    cptrain._process_train_test = timed
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cptrain.train_seg(net, train_data=images, train_labels=labels, batch_size=batch,
                          n_epochs=epochs, learning_rate=0.2, weight_decay=1e-5, SGD=True,
                          normalize=False, save_path=tmp, min_train_masks=1,
                          nimg_per_epoch=n, bsize=crop, rescale=True, model_name="bench")
        total = time.perf_counter() - t0
    loop = total - prep["s"]
    print(json.dumps({"crops_per_s": epochs * n / loop, "loop_s": loop, "flows_s": prep["s"],
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
