"""Run by the reference Cellpose 3.1 python (FLOWSEG_PEER_PYTHON) from bench_dynamics.py.

Usage: python _peer_dynamics.py LABELS.npy REPEATS OUT_PREFIX
Times ``cellpose.dynamics.masks_to_flows`` and ``resize_and_compute_masks`` (what
``CellposeModel._compute_masks`` calls, with the network-scale flows 5 x unit flows and
cellprob +-5), best of REPEATS, and writes OUT_PREFIX.json and OUT_PREFIX_masks.npy.
"""

import json
import sys
import time

import numpy as np
import torch
from cellpose import dynamics

lab = np.load(sys.argv[1]).astype(np.int64)
reps = int(sys.argv[2])
out = sys.argv[3]
dev = torch.device("cpu")
torch.set_num_threads(2)
t_flows, t_masks = [], []
mu = None
for _ in range(reps):
    t = time.perf_counter()
    mu = dynamics.masks_to_flows(lab, device=dev)
    t_flows.append(time.perf_counter() - t)
dP = (5.0 * mu).astype(np.float32)
cellprob = np.where(lab > 0, 5.0, -5.0).astype(np.float32)
masks = None
for _ in range(reps):
    t = time.perf_counter()
    masks = dynamics.resize_and_compute_masks(
        dP, cellprob, niter=200, cellprob_threshold=0.0, flow_threshold=0.4, interp=True,
        do_3D=lab.ndim == 3, min_size=15, max_size_fraction=0.4, resize=None, device=dev)
    t_masks.append(time.perf_counter() - t)
np.save(out + "_masks.npy", masks.astype(np.int32))
with open(out + ".json", "w") as fh:
    json.dump({"flows_s": min(t_flows), "masks_s": min(t_masks), "n": int(lab.max())}, fh)
