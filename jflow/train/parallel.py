"""Data parallelism: ``jit`` over a device mesh (recommended, multi-host) and classic ``pmap``.

Sharded ``jit`` (:func:`make_sharded_train_step`): the state is replicated over a
``Mesh`` (or sharded as you say), the global batch is split along the mesh's ``"data"``
axis, and XLA inserts the gradient all-reduce. The program is the single-device step,
so it computes the same function of the same global batch and key: the loss is the mean
over the *global* batch and the per-example noise is drawn from the global key for the
global batch. Works across hosts: each process passes its own rows of the batch to
:func:`shard_batch` (``jax.make_array_from_process_local_data``).

``pmap`` (:func:`make_pmap_train_step`): every device runs the update on its local
batch and gradients/metrics are averaged with ``lax.pmean``. Device ``d`` draws its
randomness from ``fold_in(step_key, d)``, so with ``D`` devices the step equals the
single-device step with ``num_microbatches=D`` (gradient accumulation over the same
``D`` parts with the same keys); for a loss without randomness both equal the plain
single-device step.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jflow.train.steps import fuse, make_update_fn

__all__ = [
    "make_mesh",
    "replicated_sharding",
    "put_replicated",
    "shard_batch",
    "make_sharded_train_step",
    "make_pmap_train_step",
    "replicate",
    "unreplicate",
    "split_batch",
    "stack_trees",
    "unstack_tree",
]

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


def _batch_spec(data_axis: str, leading: int) -> P:
    return P(*([None] * leading), data_axis)


def shard_batch(batch: PyTree, mesh: Mesh, *, data_axis: str = "data", leading_axes: int = 0) -> PyTree:
    """A global batch sharded along ``data_axis``, from this process's rows.

    ``batch`` holds the *process-local* rows (on a single host: the whole batch); the
    result is the global ``jax.Array`` whose batch axis is split over the mesh
    (``jax.make_array_from_process_local_data``). ``leading_axes=1`` for a stacked batch of
    a fused step (``(k, B, ...)``, batch axis second). The global batch size must be a
    multiple of the mesh size.
    """
    sharding = NamedSharding(mesh, _batch_spec(data_axis, leading_axes))
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


def make_sharded_train_step(
    loss_fn,
    mesh: Mesh,
    *,
    data_axis: str = "data",
    fused: bool = False,
    state_sharding=None,
    donate: bool = True,
    ema_decay: Optional[float] = None,
    ema_warmup: bool = True,
    skip_nonfinite: bool = False,
    compute_dtype=None,
    num_microbatches: int = 1,
):
    """Jitted data-parallel ``step(state, batch, key) -> (state, metrics)`` over ``mesh``.

    The batch is sharded along ``data_axis`` (make it with :func:`shard_batch`), the state
    is replicated (or placed by ``state_sharding``, a sharding or pytree prefix of
    shardings, e.g. to shard large parameters), the key and metrics are replicated.
    ``fused=True`` gives the ``k``-steps-per-call variant of
    :func:`jflow.train.make_fused_train_step` (batches ``(k, B, ...)``). Other arguments
    as in :func:`jflow.train.make_update_fn`. Equals the single-device step on the same
    global batch and key (see the module docstring).
    """
    if data_axis not in mesh.axis_names:
        raise ValueError(f"data_axis {data_axis!r} is not an axis of the mesh {mesh.axis_names}")
    update = make_update_fn(
        loss_fn, ema_decay=ema_decay, ema_warmup=ema_warmup, skip_nonfinite=skip_nonfinite,
        compute_dtype=compute_dtype, num_microbatches=num_microbatches,
    )
    fn = fuse(update) if fused else update
    replicated = replicated_sharding(mesh)
    batch_sharding = NamedSharding(mesh, _batch_spec(data_axis, 1 if fused else 0))
    state_sharding = replicated if state_sharding is None else state_sharding
    return jax.jit(
        fn,
        in_shardings=(state_sharding, batch_sharding, replicated),
        out_shardings=(state_sharding, replicated),
        donate_argnums=(0,) if donate else (),
    )


def make_pmap_train_step(
    loss_fn,
    *,
    axis_name: str = "batch",
    devices: Optional[Sequence] = None,
    donate: bool = True,
    ema_decay: Optional[float] = None,
    ema_warmup: bool = True,
    skip_nonfinite: bool = False,
    compute_dtype=None,
    num_microbatches: int = 1,
):
    """Classic ``pmap`` data parallelism: ``step(state, batch, key) -> (state, metrics)``.

    ``state`` is replicated with a leading device axis (:func:`replicate`), ``batch``
    leaves have shape ``(D, B/D, ...)`` (:func:`split_batch`), ``key`` is one key
    (broadcast to all devices); gradients and metrics are ``lax.pmean``-ed, so every
    device holds the same new state (take it with :func:`unreplicate`). Equals the
    single-device step with ``num_microbatches=D`` (see the module docstring).
    """
    update = make_update_fn(
        loss_fn, ema_decay=ema_decay, ema_warmup=ema_warmup, skip_nonfinite=skip_nonfinite,
        compute_dtype=compute_dtype, num_microbatches=num_microbatches, axis_name=axis_name,
    )
    return jax.pmap(
        update, axis_name=axis_name, in_axes=(0, 0, None), devices=devices,
        donate_argnums=(0,) if donate else (),
    )


def replicate(tree: PyTree, num_devices: Optional[int] = None) -> PyTree:
    """Stack ``num_devices`` copies (default ``jax.local_device_count()``) on a new leading axis."""
    n = jax.local_device_count() if num_devices is None else num_devices
    return jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (n,) + jnp.shape(x)), tree)


def unreplicate(tree: PyTree) -> PyTree:
    """The first copy of a replicated tree (inverse of :func:`replicate`)."""
    return jax.tree.map(lambda x: x[0], tree)


def split_batch(batch: PyTree, num_devices: Optional[int] = None) -> PyTree:
    """Reshape every leaf ``(B, ...) -> (D, B/D, ...)`` for :func:`make_pmap_train_step`."""
    n = jax.local_device_count() if num_devices is None else num_devices

    def one(x):
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[0] % n:
            raise ValueError(f"the batch size must be a multiple of {n} devices; got a leaf of shape {x.shape}")
        return x.reshape((n, x.shape[0] // n) + x.shape[1:])

    return jax.tree.map(one, batch)


def stack_trees(trees: Sequence[PyTree]) -> PyTree:
    """Stack same-structured pytrees along a new leading axis (e.g. runs for a vmapped step)."""
    if not trees:
        raise ValueError("stack_trees needs at least one tree")
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack_tree(tree: PyTree, index: int) -> PyTree:
    """Entry ``index`` of the leading axis of every leaf (one run of a vmapped state)."""
    return jax.tree.map(lambda x: x[index], tree)
