"""Device placement for data parallelism: a mesh, and states and batches placed on it.

:func:`make_mesh` builds a 1-D ``Mesh``; :func:`put_replicated` puts a copy of a state on
every device of it; :func:`shard_batch` splits a global batch along the mesh's ``"data"``
axis (across hosts too: each process passes its own rows,
``jax.make_array_from_process_local_data``). The sharded step that consumes them is
:func:`jflow.train.shard_step` / :func:`jflow.train.make_sharded_train_step`.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ["make_mesh", "replicated_sharding", "batch_sharding", "put_replicated", "shard_batch"]

PyTree = Any


def make_mesh(num_devices: Optional[int] = None, *, axis_name: str = "data", devices: Optional[Sequence] = None) -> Mesh:
    """A 1-D ``Mesh`` over ``devices`` (default: the first ``num_devices`` of ``jax.devices()``,
    all of them when ``None``; across hosts, all processes' devices)."""
    devices = list(jax.devices() if devices is None else devices)
    if num_devices is not None:
        if not 1 <= num_devices <= len(devices):
            raise ValueError(f"num_devices must lie in [1, {len(devices)}]; got {num_devices}")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (axis_name,))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding that puts a full copy on every device of ``mesh``."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, *, data_axis: str = "data", leading_axes: int = 0) -> NamedSharding:
    """The sharding of a batch split along ``data_axis``: axis ``leading_axes`` of every leaf
    (0 for a batch ``(B, ...)``, 1 for the stacked batches ``(k, B, ...)`` of a fused step)."""
    if data_axis not in mesh.axis_names:
        raise ValueError(f"data_axis {data_axis!r} is not an axis of the mesh {mesh.axis_names}")
    return NamedSharding(mesh, P(*([None] * leading_axes), data_axis))


def _put(x, sharding):
    """Place a copy of a value (identical on every process) under a possibly multi-host sharding."""
    # through the host: device_put may alias the source buffer (even with may_alias=False
    # when replicating), and donating the result would then delete the caller's array
    value = np.asarray(jax.device_get(x))
    return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])


def put_replicated(tree: PyTree, mesh: Mesh) -> PyTree:
    """A copy of ``tree`` with every leaf replicated on ``mesh`` (e.g. a :class:`TrainState`
    before the sharded step; the copy can be donated without touching ``tree``).
    Multi-host: every process must pass the same values."""
    sharding = replicated_sharding(mesh)
    return jax.tree.map(lambda x: _put(x, sharding), tree)


def shard_batch(batch: PyTree, mesh: Mesh, *, data_axis: str = "data", leading_axes: int = 0) -> PyTree:
    """A global batch sharded along ``data_axis``, from this process's rows.

    ``batch`` holds the *process-local* rows (on a single host: the whole batch); the
    result is the global ``jax.Array`` whose batch axis is split over the mesh
    (``jax.make_array_from_process_local_data``). ``leading_axes=1`` for a stacked batch of
    a fused step (``(k, B, ...)``, batch axis second). The global batch size must be a
    multiple of the mesh size.
    """
    sharding = batch_sharding(mesh, data_axis=data_axis, leading_axes=leading_axes)
    n = mesh.shape[data_axis]

    def one(x):
        x = np.asarray(x)
        if x.ndim <= leading_axes:
            raise ValueError(f"batch leaves need a batch axis at position {leading_axes}; got shape {x.shape}")
        global_rows = x.shape[leading_axes] * jax.process_count()
        if global_rows % n:
            raise ValueError(
                f"the global batch size {global_rows} must be a multiple of the number of devices "
                f"on the '{data_axis}' axis ({n})"
            )
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree.map(one, batch)
