"""Transforms of an update ``(state, batch, key) -> (state, metrics)``, in the optax spirit.

Each takes the pure update of :func:`jflow.train.make_update_fn` (or another transform's
result) and returns a new function; they compose::

    update = make_update_fn(loss_fn, ema_decay=0.999)
    step = jit_step(update)                                   # make_train_step
    step = jit_step(fuse(update))                             # make_fused_train_step
    step = jit_step(fuse(vmap_runs(lambda hp: make_update_fn(make_loss(apply, hp)))))
    step = shard_step(fuse(update), mesh, leading_axes=1)     # make_sharded_train_step(fused=True)
    step = pmap_step(make_update_fn(loss_fn, axis_name="batch"), axis_name="batch")

- :func:`jit_step`: ``jax.jit`` with the state donated;
- :func:`fuse`: ``k`` updates per call (``lax.scan`` over stacked batches);
- :func:`vmap_runs`: ``R`` independent runs (``jax.vmap`` over a run axis);
- :func:`shard_step`: ``jit`` over a device mesh. The program is the single-device step,
  so it computes the same function of the same global batch and key: the loss is the mean
  over the *global* batch and the per-example noise is drawn from the global key for the
  global batch; XLA inserts the gradient all-reduce. Works across hosts;
- :func:`pmap_step`: classic ``pmap``: every device runs the update on its local batch and
  the update (built with ``axis_name``) averages gradients and metrics with
  ``lax.pmean``. Device ``d`` draws its randomness from ``fold_in(step_key, d)``, so with
  ``D`` devices the step equals the single-device step with ``num_microbatches=D``
  (gradient accumulation over the same ``D`` parts with the same keys); for a loss
  without randomness both equal the plain single-device step.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jflow.train.parallel import batch_sharding, replicated_sharding
from jflow.train.state import TrainState
from jflow.train.update import Update

__all__ = ["jit_step", "fuse", "vmap_runs", "shard_step", "pmap_step"]

PyTree = Any


def _donated(donate: bool) -> tuple:
    return (0,) if donate else ()


def jit_step(update: Callable, *, donate: bool = True) -> Callable:
    """``jax.jit(update)`` with the state (first argument) donated when ``donate``.

    Donation lets XLA reuse the state's buffers for the new state: do not use the
    ``state`` you passed in after the call.
    """
    return jax.jit(update, donate_argnums=_donated(donate))


def fuse(update: Callable) -> Callable:
    """``k`` updates in one call: ``(state, batches, key, *args)`` with every batch leaf of shape
    ``(k, B, ...)``; ``lax.scan`` over the leading axis; metrics are stacked to ``(k, ...)``.

    Update ``i`` uses ``fold_in(key, state.step)`` with the step at that point, so the
    result equals ``k`` calls of the single step with the same ``key``. Further arguments
    (the ``hparams`` of :func:`vmap_runs`) are passed unchanged to every update.
    """

    def fused(state, batches, key, *args, **kwargs):
        return jax.lax.scan(lambda s, b: update(s, b, key, *args, **kwargs), state, batches)

    return fused


def vmap_runs(
    update_factory: Callable[[PyTree], Update],
    *,
    batch_axis: Optional[int] = None,
    key_axis: Optional[int] = 0,
    hparams_axis: Optional[int] = 0,
) -> Callable:
    """``R`` independent runs in one function: ``runs(states, batch, keys, hparams=None)``.

    ``update_factory(hparams) -> update`` builds run ``r``'s update from its
    hyper-parameters (e.g. ``lambda s: make_update_fn(make_loss(apply, s))``; for a grid
    over seeds only, ``lambda _: update``). ``states`` carries a leading run axis (its
    ``step`` has shape ``(R,)``); ``keys``, ``batch`` and ``hparams`` are mapped over the
    axes given (``None``: shared by all runs). Run ``r`` equals ``update`` applied to
    ``states[r]``, ``keys[r]`` and the update of ``hparams[r]``; metrics have shape ``(R,)``.
    """

    def one_run(state, batch, key, hparams):
        return update_factory(hparams)(state, batch, key)

    vmapped = jax.vmap(one_run, in_axes=(0, batch_axis, key_axis, hparams_axis))

    def runs(states, batch, keys, hparams=None):
        if not isinstance(states, TrainState):
            raise ValueError(
                f"states must be a jflow.train.TrainState (create_train_state); got {type(states).__name__}"
            )
        if jnp.ndim(states.step) != 1:
            raise ValueError(
                "states must carry a leading run axis (state.step of shape (R,)); got step of shape "
                f"{jnp.shape(states.step)}. Build it with jax.vmap(lambda p: create_train_state(p, tx))"
                "(stacked_params) or jflow.train.stack_trees([state_0, state_1, ...])"
            )
        return vmapped(states, batch, keys, hparams)

    return runs


def shard_step(
    update: Callable,
    mesh: Mesh,
    *,
    data_axis: str = "data",
    leading_axes: int = 0,
    state_sharding=None,
    donate: bool = True,
) -> Callable:
    """``jax.jit(update)`` over ``mesh``: the batch split along ``data_axis``, the rest replicated.

    The batch is sharded at axis ``leading_axes`` of every leaf (1 for a :func:`fuse`-d
    update; make it with :func:`jflow.train.shard_batch`), the state is replicated (or
    placed by ``state_sharding``, a sharding or pytree prefix of shardings, e.g. to shard
    large parameters), the key and metrics are replicated. Equals the single-device step
    on the same global batch and key (see the module docstring).
    """
    batch = batch_sharding(mesh, data_axis=data_axis, leading_axes=leading_axes)
    replicated = replicated_sharding(mesh)
    state_sharding = replicated if state_sharding is None else state_sharding
    return jax.jit(
        update,
        in_shardings=(state_sharding, batch, replicated),
        out_shardings=(state_sharding, replicated),
        donate_argnums=_donated(donate),
    )


def pmap_step(
    update: Callable,
    *,
    axis_name: str = "batch",
    devices: Optional[Sequence] = None,
    donate: bool = True,
) -> Callable:
    """``jax.pmap(update)``: ``step(state, batch, key)`` with a leading device axis on ``state``
    (:func:`jflow.train.replicate`) and ``batch`` (:func:`jflow.train.split_batch`), one key
    broadcast to all devices.

    Build ``update`` with the same ``axis_name`` (``make_update_fn(loss_fn,
    axis_name=axis_name)``) so that it averages gradients and metrics over the devices and
    every device holds the same new state (take it with :func:`jflow.train.unreplicate`).
    """
    return jax.pmap(
        update, axis_name=axis_name, in_axes=(0, 0, None), devices=devices, donate_argnums=_donated(donate),
    )
