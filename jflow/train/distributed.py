"""Multi-host launch helpers on top of JAX's multi-controller runtime.

Every host runs the same script; :func:`initialize_distributed` connects them
(``jax.distributed.initialize``) when the run is part of a cluster and does nothing on a
single machine. Call it first, before any other JAX call. Then each process reads its
own rows of every global batch (:func:`process_batch_slice`) and hands them to
:func:`jflow.train.shard_batch`; only :func:`is_main_process` writes logs and plots;
every process calls the :class:`jflow.train.Checkpointer` (orbax coordinates them).

On CPU, JAX (>= 0.5) runs cross-process collectives over gloo
(``jax_cpu_collectives_implementation='gloo'``, the default of this JAX version), which
the two-process test on localhost relies on.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import jax

__all__ = ["initialize_distributed", "is_main_process", "process_batch_slice", "cluster_detected"]

_ENV_ADDRESS = "JAX_COORDINATOR_ADDRESS"
_ENV_NUM = "JAX_NUM_PROCESSES"
_ENV_ID = "JAX_PROCESS_ID"


def _env_int(name: str) -> Optional[int]:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer; got {value!r}") from None


def cluster_detected() -> Optional[str]:
    """Name of the multi-process cluster environment JAX can auto-configure, or ``None``.

    Recognises SLURM with more than one task, Open MPI (``mpirun -n >1``) and multi-host
    Cloud TPU slices; ``jax.distributed.initialize()`` reads the rest from them.
    """
    if os.environ.get("SLURM_JOB_ID") and (_env_int("SLURM_NTASKS") or _env_int("SLURM_NPROCS") or 1) > 1:
        return "slurm"
    if (_env_int("OMPI_COMM_WORLD_SIZE") or 1) > 1:
        return "openmpi"
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if len([h for h in hosts.split(",") if h]) > 1:
        return "tpu"
    return None


def initialize_distributed(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    *,
    local_device_ids: Optional[Sequence[int]] = None,
) -> bool:
    """Join the cluster if this is a multi-process run; return whether it is one.

    Order of precedence: the arguments, then the environment variables
    ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0), ``JAX_NUM_PROCESSES``,
    ``JAX_PROCESS_ID``, then cluster auto-detection (:func:`cluster_detected`: SLURM,
    Open MPI, TPU pods). With none of these, or ``num_processes == 1``, this is a
    single-machine run and nothing is done. Calling it again after a successful
    initialisation is a no-op that returns ``True``.

    Must run before anything touches a JAX device (``jax.devices()``, creating arrays).
    """
    if jax.distributed.is_initialized():
        return True
    address = coordinator_address or os.environ.get(_ENV_ADDRESS) or None
    num = num_processes if num_processes is not None else _env_int(_ENV_NUM)
    pid = process_id if process_id is not None else _env_int(_ENV_ID)
    cluster = cluster_detected()
    if address is None and num is None and pid is None and cluster is None:
        return False
    if num is not None and num < 1:
        raise ValueError(f"num_processes must be >= 1; got {num}")
    if num == 1 and cluster is None:
        return False
    if cluster is None:
        missing = [n for n, v in ((f"coordinator_address / {_ENV_ADDRESS}", address),
                                  (f"num_processes / {_ENV_NUM}", num),
                                  (f"process_id / {_ENV_ID}", pid)) if v is None]
        if missing:
            raise ValueError(
                "a multi-process run needs the coordinator address, the number of processes and "
                f"this process's id; missing: {', '.join(missing)} (pass them as arguments or set "
                "the environment variables)"
            )
        if not 0 <= pid < num:
            raise ValueError(f"process_id must lie in [0, {num}); got {pid}")
    kwargs = {}
    if local_device_ids is not None:
        kwargs["local_device_ids"] = list(local_device_ids)
    jax.distributed.initialize(
        coordinator_address=address, num_processes=num, process_id=pid, **kwargs
    )
    return True


def is_main_process() -> bool:
    """True on process 0 (the one that writes logs, plots and summaries)."""
    return jax.process_index() == 0


def process_batch_slice(global_batch_size: int) -> slice:
    """Rows ``[start, stop)`` of a global batch that this process reads.

    Process ``p`` of ``P`` gets the ``p``-th contiguous block of ``global_batch_size / P``
    rows, the layout :func:`jflow.train.shard_batch` expects.
    """
    n = jax.process_count()
    if global_batch_size % n:
        raise ValueError(
            f"global_batch_size {global_batch_size} must be a multiple of the number of processes ({n})"
        )
    per = global_batch_size // n
    start = jax.process_index() * per
    return slice(start, start + per)
