"""dask.distributed set-up: a LocalCluster sized to the machine, or an existing scheduler.

The same run works on one laptop (a LocalCluster of worker processes started here), on a
workstation, or on any cluster dask.distributed can reach: pass the scheduler's address
(``tcp://host:8786``, e.g. of a dask-jobqueue SLURM/LSF cluster or a Kubernetes one) or a
connected :class:`distributed.Client`.  Workers there need flowseg installed and must see
the input and output paths (shared storage).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..memory import available_memory as free_now

__all__ = [
    "ClusterOptions",
    "available_memory",
    "default_workers",
    "machine_cores",
    "open_client",
]

MemoryLimit = str | int | float | None


@dataclass(frozen=True)
class ClusterOptions:
    """How to get workers.

    Attributes
    ----------
    address : str, optional
        Address of a running scheduler (``tcp://host:8786``); None starts a LocalCluster.
    workers : int, optional
        LocalCluster workers (default :func:`default_workers`).
    memory_limit : str, int or None
        Memory per LocalCluster worker (``"4GB"``, bytes; default: available memory /
        workers, none for threads of this process).  A worker process going over it is
        restarted by dask.
    processes : bool
        LocalCluster workers as processes (default) or threads of this process.
    threads : int, optional
        Torch / numba threads per task (default: cores / workers on a LocalCluster, the
        worker's own setting on an existing cluster).
    """

    address: str | None = None
    workers: int | None = None
    memory_limit: MemoryLimit = None
    processes: bool = True
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and (isinstance(self.workers, bool)
                                         or int(self.workers) < 1):
            raise ValueError(f"workers must be an integer >= 1, got {self.workers!r}")
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"threads must be an integer >= 1, got {self.threads!r}")
        if self.address is not None and "://" not in str(self.address) \
                and ":" not in str(self.address):
            raise ValueError(f"scheduler address must look like tcp://host:8786, got "
                             f"{self.address!r}")
        parse_memory(self.memory_limit)


def parse_memory(value: MemoryLimit) -> int | None:
    """Bytes of a memory limit (``"4GB"``, ``"512MiB"``, a number); None stays None."""
    if value is None or value == "auto":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        n = int(value)
    else:
        from dask.utils import parse_bytes

        try:
            n = int(parse_bytes(str(value)))
        except (ValueError, TypeError):
            raise ValueError(f"memory limit must be like '4GB' or '512MiB', got {value!r}"
                             ) from None
    if n < 2 ** 28:
        raise ValueError(f"memory limit {value!r} is under 256 MiB: too little for a worker")
    return n


def machine_cores() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def available_memory() -> int:
    """Bytes of memory available now (the tighter of the machine's and a cgroup limit's,
    :func:`flowseg.engine.memory.available_memory`; 4 GiB when the OS does not say)."""
    found = free_now()
    return int(found) if found is not None else 4 * 2 ** 30


def default_workers(need_per_worker: int = 0, gpu: bool = False) -> int:
    """Workers for a LocalCluster: one per core (one on a GPU), fewer when each needs
    ``need_per_worker`` bytes and the available memory does not hold that many."""
    if gpu:
        return 1
    n = machine_cores()
    if need_per_worker > 0:
        n = min(n, max(1, available_memory() // int(need_per_worker)))
    return int(n)


@contextlib.contextmanager
def open_client(client: Any = None, options: ClusterOptions | None = None, *,
                need_per_worker: int = 0, gpu: bool = False
                ) -> Iterator[tuple[Any, int | None]]:
    """A connected client and the torch threads per task, closed afterwards if made here.

    Parameters
    ----------
    client : distributed.Client, str or None
        A client (used as is), a scheduler address, or None (``options`` decide).
    options : ClusterOptions, optional
    need_per_worker : int
        Estimated peak bytes of one block task (caps the default number of workers).
    gpu : bool
        The model runs on a GPU (default one worker).

    Yields
    ------
    (distributed.Client, threads per task or None)
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - a dependency
        raise ImportError("blockwise segmentation needs dask.distributed: pip install "
                          "distributed") from None
    opts = options or ClusterOptions()
    if client is not None and not isinstance(client, str):
        yield client, opts.threads
        return
    address = client if isinstance(client, str) else opts.address
    if address is not None:
        try:
            c = Client(address, timeout="20s")
        except OSError as exc:
            raise ValueError(f"cannot reach the dask scheduler at {address}: {exc}") from None
        try:
            yield c, opts.threads
        finally:
            c.close()
        return
    workers = opts.workers or default_workers(need_per_worker, gpu)
    mem = parse_memory(opts.memory_limit)
    if mem is None and not opts.processes:
        mem = 0  # threads of this process: dask would weigh the whole process against it
    elif mem is None:
        mem = max(2 ** 28, available_memory() // workers)
    threads = opts.threads or max(1, machine_cores() // workers)
    cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1,
                           processes=bool(opts.processes), memory_limit=int(mem),
                           dashboard_address=None)
    try:
        c = Client(cluster)
        try:
            yield c, threads
        finally:
            c.close()
    finally:
        cluster.close()


def workers_memory(client: Any) -> dict[str, int]:
    """Memory limit (bytes) of each worker of a client's cluster (0: none)."""
    info = client.scheduler_info(n_workers=-1) if _has_n_workers(client) else \
        client.scheduler_info()
    return {w: int(v.get("memory_limit") or 0) for w, v in info.get("workers", {}).items()}


def _has_n_workers(client: Any) -> bool:
    import inspect

    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def gib(n: float) -> str:
    """``n`` bytes as ``"1.5 GiB"``."""
    return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 30 else f"{math.ceil(n / 2 ** 20)} MiB"
