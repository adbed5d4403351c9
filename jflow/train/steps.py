"""Train-step factories: thin conveniences composing :func:`make_update_fn` with a transform.

=================================  ==================================================
factory                            composition
=================================  ==================================================
``make_train_step``                ``jit_step(update)``
``make_fused_train_step``          ``jit_step(fuse(update))``
``make_vmapped_train_step``        ``jit_step([fuse](vmap_runs(hparams -> update)))``
``make_sharded_train_step``        ``shard_step([fuse](update), mesh)``
``make_pmap_train_step``           ``pmap_step(update with axis_name)``
=================================  ==================================================

Every factory returns ``step(state, batch, key) -> (state, metrics)``; the options
(``ema_decay, ema_warmup, skip_nonfinite, compute_dtype, num_microbatches``), the key
discipline (``fold_in(key, state.step)``), the metrics and the non-finite handling are
those of :func:`jflow.train.make_update_fn`, documented there once. For another
combination, compose the transforms of :mod:`jflow.train.transforms` yourself.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from jax.sharding import Mesh

from jflow.train.transforms import fuse, jit_step, pmap_step, shard_step, vmap_runs
from jflow.train.update import LossFn, UpdateOptions, make_update_fn

__all__ = [
    "make_train_step",
    "make_fused_train_step",
    "make_vmapped_train_step",
    "make_sharded_train_step",
    "make_pmap_train_step",
]


def make_train_step(
    loss_fn: LossFn,
    *,
    # the step options of every factory, repeated so each has a public signature; documented in make_update_fn
    ema_decay: Optional[float] = None,
    ema_warmup: bool = True,
    donate: bool = True,
    skip_nonfinite: bool = False,
    compute_dtype=None,
    num_microbatches: int = 1,
):
    """Jitted ``step(state, batch, key) -> (state, metrics)`` with the state donated.

    One optimizer update on ``batch`` with randomness ``fold_in(key, state.step)``:
    ``jit_step(make_update_fn(loss_fn, ...), donate=donate)``. Options as in
    :func:`make_update_fn`. ``donate=True`` lets XLA reuse the state's buffers: do not use
    the ``state`` you passed in after the call.
    """
    update = make_update_fn(
        loss_fn, ema_decay=ema_decay, ema_warmup=ema_warmup, skip_nonfinite=skip_nonfinite,
        compute_dtype=compute_dtype, num_microbatches=num_microbatches,
    )
    return jit_step(update, donate=donate)


def make_fused_train_step(
    loss_fn: LossFn,
    *,
    # the step options of every factory, repeated so each has a public signature; documented in make_update_fn
    ema_decay: Optional[float] = None,
    ema_warmup: bool = True,
    donate: bool = True,
    skip_nonfinite: bool = False,
    compute_dtype=None,
    num_microbatches: int = 1,
):
    """Jitted ``step(state, batches, key) -> (state, metrics)`` doing ``k`` updates per call.

    ``jit_step(fuse(make_update_fn(loss_fn, ...)))``: ``batches`` is the stack of ``k``
    batches (leaves ``(k, B, ...)``, ``k`` read from the shape); metrics come back stacked,
    shape ``(k,)``. Equals ``k`` calls of :func:`make_train_step` (same arguments, same
    ``key``); use it for small models where per-call dispatch dominates, and on CPU for
    large activations: XLA:CPU allocates a call's temporary buffers afresh and the system
    allocator may map them anew, so every call page-faults them in (benchmarks/README.md),
    once per ``k`` updates here. Arguments as in :func:`make_train_step`.
    """
    update = make_update_fn(
        loss_fn, ema_decay=ema_decay, ema_warmup=ema_warmup, skip_nonfinite=skip_nonfinite,
        compute_dtype=compute_dtype, num_microbatches=num_microbatches,
    )
    return jit_step(fuse(update), donate=donate)


def make_vmapped_train_step(
    loss_factory: Callable,
    *,
    batch_axis: Optional[int] = None,
    key_axis: Optional[int] = 0,
    hparams_axis: Optional[int] = 0,
    fused: bool = False,
    # the step options of every factory, repeated so each has a public signature; documented in make_update_fn
    ema_decay: Optional[float] = None,
    ema_warmup: bool = True,
    donate: bool = True,
    skip_nonfinite: bool = False,
    compute_dtype=None,
    num_microbatches: int = 1,
):
    """Train ``R`` independent runs in one compiled step (``jax.vmap`` over runs).

    Returns jitted ``step(states, batch, keys, hparams=None) -> (states, metrics)`` where
    ``states`` is a :class:`TrainState` whose leaves carry a leading run axis ``R`` (build
    it with ``jax.vmap(lambda p: create_train_state(p, tx))(stacked_params)``; its
    ``step`` has shape ``(R,)``), ``keys`` has shape ``(R, ...)`` (or is shared if
    ``key_axis=None``), ``batch`` is shared by all runs (``batch_axis=None``) or has a
    run axis at ``batch_axis``, and ``hparams`` is a pytree of per-run arrays (leading
    axis ``R``; or shared with ``hparams_axis=None``; ``None`` for a seed-only grid).
    Metrics have shape ``(R,)``. The composition is
    ``jit_step(vmap_runs(lambda hp: make_update_fn(loss_factory(hp), ...)))``.

    ``fused=True``: ``k`` updates of every run per call, like
    :func:`make_fused_train_step`: ``step(states, batches, keys, hparams=None)`` where
    ``batches`` stacks ``k`` of the batches above on a new leading axis (leaves
    ``(k, ...)``; ``lax.scan`` over it, ``vmap`` over runs inside); metrics have shape
    ``(k, R)``. Equals ``k`` calls of the unfused step with the same ``keys``.

    ``loss_factory(hparams) -> loss_fn`` builds run ``r``'s loss from its
    hyper-parameters, e.g. ``lambda s: make_loss(model.apply, s)`` with ``hparams`` a
    scheduler whose numeric fields are stacked arrays (schedulers are pytrees). For a
    grid over seeds only, use ``lambda _: loss_fn`` and leave ``hparams`` out.
    Run ``r`` equals a separate :func:`make_train_step` run on ``states[r]``, ``keys[r]``
    and ``loss_factory(hparams[r])``; other arguments as in :func:`make_update_fn`.

    All runs advance together, so :func:`jflow.train.fit` and
    :class:`jflow.train.Checkpointer` take the vmapped state as one run (its step is
    :func:`jflow.train.current_step`): ``fit(step, states, batch_fn, keys, ...)``.
    """
    options = UpdateOptions(ema_decay, ema_warmup, skip_nonfinite, compute_dtype, num_microbatches)
    runs = vmap_runs(
        lambda hparams: options.update_fn(loss_factory(hparams)),
        batch_axis=batch_axis, key_axis=key_axis, hparams_axis=hparams_axis,
    )
    return jit_step(fuse(runs) if fused else runs, donate=donate)


def make_sharded_train_step(
    loss_fn: LossFn,
    mesh: Mesh,
    *,
    data_axis: str = "data",
    fused: bool = False,
    state_sharding=None,
    donate: bool = True,
    # the step options of every factory, repeated so each has a public signature; documented in make_update_fn
    ema_decay: Optional[float] = None,
    ema_warmup: bool = True,
    skip_nonfinite: bool = False,
    compute_dtype=None,
    num_microbatches: int = 1,
):
    """Jitted data-parallel ``step(state, batch, key) -> (state, metrics)`` over ``mesh``.

    ``shard_step(make_update_fn(loss_fn, ...), mesh)``: the batch is sharded along
    ``data_axis`` (make it with :func:`shard_batch`), the state is replicated (or placed by
    ``state_sharding``), the key and metrics are replicated. ``fused=True`` gives the
    ``k``-steps-per-call variant of :func:`make_fused_train_step` (batches ``(k, B, ...)``).
    Options as in :func:`make_update_fn`. Equals the single-device step on the same global
    batch and key (see :mod:`jflow.train.transforms`).
    """
    update = make_update_fn(
        loss_fn, ema_decay=ema_decay, ema_warmup=ema_warmup, skip_nonfinite=skip_nonfinite,
        compute_dtype=compute_dtype, num_microbatches=num_microbatches,
    )
    return shard_step(
        fuse(update) if fused else update, mesh, data_axis=data_axis, leading_axes=1 if fused else 0,
        state_sharding=state_sharding, donate=donate,
    )


def make_pmap_train_step(
    loss_fn: LossFn,
    *,
    axis_name: str = "batch",
    devices: Optional[Sequence] = None,
    donate: bool = True,
    # the step options of every factory, repeated so each has a public signature; documented in make_update_fn
    ema_decay: Optional[float] = None,
    ema_warmup: bool = True,
    skip_nonfinite: bool = False,
    compute_dtype=None,
    num_microbatches: int = 1,
):
    """Classic ``pmap`` data parallelism: ``step(state, batch, key) -> (state, metrics)``.

    ``pmap_step(make_update_fn(loss_fn, ..., axis_name=axis_name))``: ``state`` is
    replicated with a leading device axis (:func:`replicate`), ``batch`` leaves have shape
    ``(D, B/D, ...)`` (:func:`split_batch`), ``key`` is one key (broadcast to all devices);
    gradients and metrics are ``lax.pmean``-ed, so every device holds the same new state
    (take it with :func:`unreplicate`). Equals the single-device step with
    ``num_microbatches=D`` (see :mod:`jflow.train.transforms`).
    """
    update = make_update_fn(
        loss_fn, ema_decay=ema_decay, ema_warmup=ema_warmup, skip_nonfinite=skip_nonfinite,
        compute_dtype=compute_dtype, num_microbatches=num_microbatches, axis_name=axis_name,
    )
    return pmap_step(update, axis_name=axis_name, devices=devices, donate=donate)
