"""Training precision: float32, or the network's forward in bfloat16 on a CPU that has it.

``train(..., precision=...)`` takes ``"auto"`` (the default), ``"fp32"`` or ``"bf16"``:

``"fp32"``
    Everything in float32 (the behaviour before the setting existed).
``"bf16"``
    The network's forward pass of each training batch runs under
    ``torch.autocast("cpu", dtype=torch.bfloat16)``; its outputs are cast to float32
    before the loss, so the loss, the gradients' accumulation into the weights, the
    weights, the optimizer state, BatchNorm's running statistics and the saved model all
    stay float32.  Scoring (validation, the fine-tune check) and inference are float32.
    CPU training only: a model on CUDA or MPS raises ``ValueError`` (bf16 autocast on a GPU
    is not tested here).  On a CPU without native bf16 instructions it is emulated --
    slower than float32 -- and a warning says so.
``"auto"``
    ``"bf16"`` when training on the CPU and the CPU has native bf16 instructions (Linux:
    the ``avx512_bf16`` or ``amx_bf16`` flag in ``/proc/cpuinfo``; other systems: never),
    else ``"fp32"``; CUDA and MPS train in float32 as before.  The environment variable
    :data:`ENV_VAR` (``FLOWSEG_PRECISION=fp32`` or ``bf16``) replaces ``"auto"``; an explicit
    ``precision=`` argument wins over it.

On a 2-core AMD EPYC with ``avx512_bf16`` a training step of the width-32 network (batch 8,
160-pixel crops, 1 thread) took 1.7-2.1x less time in bf16, and a small run from scratch
followed the fp32 loss curve within 5 % to the same validation AP (``docs/training.md``,
"Mixed precision on the CPU").
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from contextlib import AbstractContextManager

import torch

__all__ = ["BF16_FLAGS", "ENV_VAR", "PRECISIONS", "cpu_has_native_bf16", "cpuinfo_has_bf16",
           "forward_autocast", "resolve_precision"]

#: the accepted values of ``precision``
PRECISIONS = ("auto", "fp32", "bf16")
#: environment variable that replaces ``precision="auto"``
ENV_VAR = "FLOWSEG_PRECISION"
#: CPU flags (``/proc/cpuinfo``) of native bf16 arithmetic
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpuinfo_has_bf16(text: str) -> bool:
    """Whether the ``flags`` line of a ``/proc/cpuinfo`` text lists a :data:`BF16_FLAGS` flag.

    Parameters
    ----------
    text : str
        Contents of ``/proc/cpuinfo`` (the first ``flags`` line is read).
    """
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return any(f in value.split() for f in BF16_FLAGS)
    return False


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (Linux only; False elsewhere or unknown)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return cpuinfo_has_bf16(f.read())
    except OSError:
        return False


def _check(value: str, what: str) -> str:
    v = str(value).strip().lower()
    if v not in PRECISIONS:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, PRECISIONS))}, "
                         f"got {value!r}")
    return v


def resolve_precision(precision: str | None, device: torch.device | str) -> str:
    """The precision a training run uses: ``"fp32"`` or ``"bf16"`` (see the module text).

    Parameters
    ----------
    precision : {"auto", "fp32", "bf16"} or None
        The requested precision (None: ``"auto"``).
    device : torch.device or str
        Where the network is trained.

    Returns
    -------
    str
        ``"fp32"`` or ``"bf16"``.

    Raises
    ------
    ValueError
        An unknown value (of ``precision`` or of :data:`ENV_VAR`), or ``"bf16"`` for a
        network that is not on the CPU.
    """
    p = _check("auto" if precision is None else precision, "precision")
    if p == "auto" and os.environ.get(ENV_VAR, "").strip():
        p = _check(os.environ[ENV_VAR], f"environment variable {ENV_VAR}")
    kind = torch.device(device).type
    if p == "auto":
        return "bf16" if kind == "cpu" and cpu_has_native_bf16() else "fp32"
    if p == "bf16":
        if kind != "cpu":
            raise ValueError(f"precision 'bf16' is for training on the CPU; this model is on "
                             f"{kind}, which trains in 'fp32' (pass precision='fp32' or "
                             f"'auto', or unset {ENV_VAR})")
        if not cpu_has_native_bf16():
            warnings.warn("precision 'bf16' on a CPU without native bf16 instructions "
                          "(avx512_bf16 / amx_bf16): emulated, likely slower than 'fp32'",
                          stacklevel=3)
    return p


def forward_autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """Context for the network's forward pass of a training batch: bf16 autocast or nothing.

    Parameters
    ----------
    precision : {"fp32", "bf16"}
        A resolved precision (:func:`resolve_precision`).
    device : torch.device
        The network's device.
    """
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
