"""Train-step factories: single, fused (k steps per call) and vmapped over independent runs.

Every factory takes a pure loss ``loss_fn(params, batch, key) -> (loss, metrics)`` (e.g.
from :func:`jflow.losses.make_loss`), where ``loss`` is a scalar *mean over the batch*
and ``metrics`` a dict of scalars, and returns a step

    ``step(state, batch, key) -> (state, metrics)``

The randomness of update ``n`` is ``jax.random.fold_in(key, state.step)``: pass the same
``key`` on every call; a run is then a deterministic function of ``(initial state, key,
data)`` and resuming from a checkpoint at step ``n`` reproduces the uninterrupted run.

Metrics always contain ``loss`` (float32), ``grad_norm`` (global L2 norm of the
gradient, before clipping) and ``finite`` (bool: loss and gradient finite), plus the
loss's own metrics cast to float32; ``skipped`` (bool) is added when
``skip_nonfinite=True``.

Non-finite updates: by default the update is applied anyway and ``finite`` is ``False``;
the training loop (:func:`jflow.train.fit`, or :func:`jflow.train.check_finite` in your
own loop) stops with :class:`jflow.train.NonFiniteError` naming the step, before any
checkpoint of the bad state is written. With ``skip_nonfinite=True`` a non-finite update
leaves ``params``, ``opt_state`` and ``ema_params`` unchanged, increments
``state.nonfinite_count`` and still advances ``state.step`` (the next step gets new
randomness and the next batch).

Mixed precision: ``compute_dtype=jnp.bfloat16`` casts the floating parameters and the
floating leaves of the batch to bfloat16 for the forward and backward pass; gradients
arrive in the parameters' dtype (float32) and the optimizer state and EMA stay float32.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jflow.train.ema import ema_decay_at, ema_update
from jflow.train.state import TrainState

__all__ = [
    "LossFn",
    "NonFiniteError",
    "make_update_fn",
    "make_train_step",
    "make_fused_train_step",
    "make_vmapped_train_step",
    "check_finite",
]

PyTree = Any
Metrics = Dict[str, jax.Array]
LossFn = Callable[[PyTree, PyTree, jax.Array], Tuple[jax.Array, Metrics]]


class NonFiniteError(FloatingPointError):
    """The loss or the gradient of a train step was NaN or infinite."""


def _cast_floating(tree: PyTree, dtype) -> PyTree:
    def one(x):
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(one, tree)


def _value_and_grad(loss_fn: LossFn, compute_dtype) -> Callable:
    """``(params, batch, key) -> (grads, metrics)`` with metrics["loss"] float32."""

    def wrapped(params, batch, key):
        if compute_dtype is not None:
            params = _cast_floating(params, compute_dtype)
            batch = _cast_floating(batch, compute_dtype)
        out = loss_fn(params, batch, key)
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)):
            raise ValueError(
                "loss_fn(params, batch, key) must return (loss_scalar, metrics_dict); got "
                f"{type(out).__name__}. Wrap a plain loss as lambda p, b, k: (f(p, b, k), {{}})."
            )
        loss, metrics = out
        if jnp.shape(loss) != ():
            raise ValueError(
                f"loss_fn must return a scalar loss (the mean over the batch); got shape "
                f"{jnp.shape(loss)}"
            )
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        loss = jnp.asarray(loss, jnp.float32)
        metrics["loss"] = loss
        return loss, metrics

    def grads_and_metrics(params, batch, key):
        (_, metrics), grads = jax.value_and_grad(wrapped, has_aux=True)(params, batch, key)
        return grads, metrics

    return grads_and_metrics


def _split_microbatches(batch: PyTree, n: int) -> PyTree:
    def one(x):
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[0] % n:
            raise ValueError(
                f"num_microbatches={n} must divide the batch size; got a batch leaf of shape "
                f"{x.shape}"
            )
        return x.reshape((n, x.shape[0] // n) + x.shape[1:])

    return jax.tree.map(one, batch)


def _check_options(ema_decay, num_microbatches) -> int:
    """Validate the options shared by every step factory; return ``num_microbatches`` as int."""
    if int(num_microbatches) != num_microbatches or num_microbatches < 1:
        raise ValueError(f"num_microbatches must be a positive integer; got {num_microbatches}")
    if ema_decay is not None and not 0.0 <= float(ema_decay) < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1) (or be None: use the state's); got {ema_decay}")
    return int(num_microbatches)


def make_update_fn(
    loss_fn: LossFn,
    *,
    ema_decay: Optional[float] = None,
    ema_warmup: bool = True,
    skip_nonfinite: bool = False,
    compute_dtype=None,
    num_microbatches: int = 1,
    axis_name: Optional[str] = None,
) -> Callable[[TrainState, PyTree, jax.Array], Tuple[TrainState, Metrics]]:
    """The pure (un-jitted) update ``(state, batch, key) -> (state, metrics)``.

    The building block of every step below; use it to compose your own transformations.

    Args:
      loss_fn: ``loss_fn(params, batch, key) -> (scalar loss, metrics dict)``.
      ema_decay: EMA decay; ``None`` uses ``state.ema_decay`` (set by
        :func:`create_train_state`), so EMA runs iff the state has ``ema_params``.
      ema_warmup: use ``min(ema_decay, (1 + step) / (10 + step))`` (see :mod:`.ema`).
      skip_nonfinite: leave params/opt state/EMA unchanged when the loss or gradient is
        not finite, and count it in ``state.nonfinite_count``.
      compute_dtype: e.g. ``jnp.bfloat16`` for mixed precision (see module docstring).
      num_microbatches: gradient accumulation: split the batch into this many equal
        parts, average their gradients (part ``i`` gets key ``fold_in(step_key, i)``).
      axis_name: inside ``pmap``/``shard_map``: average gradients and metrics over this
        named axis with ``lax.pmean`` (device ``d`` gets key ``fold_in(step_key, d)``
        when the axis has more than one member).
    """
    num_microbatches = _check_options(ema_decay, num_microbatches)
    grads_and_metrics = _value_and_grad(loss_fn, compute_dtype)

    def accumulated(params, batch, key):
        if num_microbatches == 1:
            return grads_and_metrics(params, batch, key)
        parts = _split_microbatches(batch, num_microbatches)
        first = jax.tree.map(lambda x: x[0], parts)
        zeros = jax.tree.map(
            lambda s: jnp.zeros(s.shape, s.dtype),
            jax.eval_shape(grads_and_metrics, params, first, key),
        )

        def body(acc, inputs):
            i, part = inputs
            out = grads_and_metrics(params, part, jax.random.fold_in(key, i))
            return jax.tree.map(jnp.add, acc, out), None

        total, _ = jax.lax.scan(body, zeros, (jnp.arange(num_microbatches), parts))
        return jax.tree.map(lambda v: v / num_microbatches, total)

    def update(state: TrainState, batch: PyTree, key: jax.Array) -> Tuple[TrainState, Metrics]:
        if not isinstance(state, TrainState):
            raise ValueError(
                f"state must be a jflow.train.TrainState (create_train_state); got {type(state).__name__}"
            )
        decay = state.ema_decay if ema_decay is None else ema_decay
        if decay is not None and state.ema_params is None:
            raise ValueError(
                "ema_decay is set but the state has no ema_params; build the state with "
                "create_train_state(params, optimizer, ema_decay=...)"
            )
        step_key = jax.random.fold_in(key, state.step)
        if axis_name is not None and jax.lax.axis_size(axis_name) > 1:
            step_key = jax.random.fold_in(step_key, jax.lax.axis_index(axis_name))
        grads, metrics = accumulated(state.params, batch, step_key)
        if axis_name is not None:
            grads = jax.lax.pmean(grads, axis_name)
            metrics = jax.lax.pmean(metrics, axis_name)
        grad_norm = optax.tree.norm(grads).astype(jnp.float32)
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
        new = state.apply_gradients(grads)
        if decay is not None:
            mu = ema_decay_at(decay, state.step, warmup=ema_warmup)
            new = new.replace(ema_params=ema_update(state.ema_params, new.params, mu))
        metrics = dict(metrics, grad_norm=grad_norm, finite=finite)
        if skip_nonfinite:

            def keep(updated, old):
                return jax.tree.map(lambda a, b: jnp.where(finite, a, b), updated, old)

            new = new.replace(
                params=keep(new.params, state.params),
                opt_state=keep(new.opt_state, state.opt_state),
                ema_params=keep(new.ema_params, state.ema_params),
                nonfinite_count=state.nonfinite_count + jnp.where(finite, 0, 1).astype(jnp.int32),
            )
            metrics["skipped"] = jnp.logical_not(finite)
        return new, metrics

    return update


def fuse(update: Callable) -> Callable:
    """``k`` updates in one call: ``(state, batches, key)`` with every batch leaf of shape
    ``(k, B, ...)``; ``lax.scan`` over the leading axis; metrics are stacked to ``(k,)``.

    Update ``i`` uses ``fold_in(key, state.step)`` with the step at that point, so the
    result equals ``k`` calls of the single step with the same ``key``.
    """

    def fused(state, batches, key):
        return jax.lax.scan(lambda s, b: update(s, b, key), state, batches)

    return fused


def _jit_step(fn: Callable, donate: bool) -> Callable:
    return jax.jit(fn, donate_argnums=(0,) if donate else ())


def make_train_step(
    loss_fn: LossFn,
    *,
    ema_decay: Optional[float] = None,
    ema_warmup: bool = True,
    donate: bool = True,
    skip_nonfinite: bool = False,
    compute_dtype=None,
    num_microbatches: int = 1,
):
    """Jitted ``step(state, batch, key) -> (state, metrics)`` with the state donated.

    One optimizer update on ``batch`` with randomness ``fold_in(key, state.step)``.
    Arguments as in :func:`make_update_fn`. ``donate=True`` lets XLA reuse the state's
    buffers: do not use the ``state`` you passed in after the call.
    """
    update = make_update_fn(
        loss_fn, ema_decay=ema_decay, ema_warmup=ema_warmup, skip_nonfinite=skip_nonfinite,
        compute_dtype=compute_dtype, num_microbatches=num_microbatches,
    )
    return _jit_step(update, donate)


def make_fused_train_step(
    loss_fn: LossFn,
    *,
    ema_decay: Optional[float] = None,
    ema_warmup: bool = True,
    donate: bool = True,
    skip_nonfinite: bool = False,
    compute_dtype=None,
    num_microbatches: int = 1,
):
    """Jitted ``step(state, batches, key) -> (state, metrics)`` doing ``k`` updates per call.

    ``batches`` is the stack of ``k`` batches (leaves ``(k, B, ...)``, ``k`` read from the
    shape); metrics come back stacked, shape ``(k,)``. Equals ``k`` calls of
    :func:`make_train_step` (same arguments, same ``key``); use it for small models where
    per-call dispatch dominates, and on CPU for large activations: XLA:CPU allocates a
    call's temporary buffers afresh and the system allocator may map them anew, so every
    call page-faults them in (benchmarks/README.md), once per ``k`` updates here.
    Arguments as in :func:`make_train_step`.
    """
    update = make_update_fn(
        loss_fn, ema_decay=ema_decay, ema_warmup=ema_warmup, skip_nonfinite=skip_nonfinite,
        compute_dtype=compute_dtype, num_microbatches=num_microbatches,
    )
    return _jit_step(fuse(update), donate)


def make_vmapped_train_step(
    loss_factory: Callable[[PyTree], LossFn],
    *,
    batch_axis: Optional[int] = None,
    key_axis: Optional[int] = 0,
    hparams_axis: Optional[int] = 0,
    fused: bool = False,
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
    Metrics have shape ``(R,)``.

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
    _check_options(ema_decay, num_microbatches)
    options = dict(
        ema_decay=ema_decay, ema_warmup=ema_warmup, skip_nonfinite=skip_nonfinite,
        compute_dtype=compute_dtype, num_microbatches=num_microbatches,
    )

    def one_run(state, batch, key, hparams):
        return make_update_fn(loss_factory(hparams), **options)(state, batch, key)

    vmapped = jax.vmap(one_run, in_axes=(0, batch_axis, key_axis, hparams_axis))

    def runs_step(states, batch, keys, hparams):
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

    if fused:

        def step(states, batches, keys, hparams=None):
            return fuse(lambda s, b, k: runs_step(s, b, k, hparams))(states, batches, keys)

    else:

        def step(states, batch, keys, hparams=None):
            return runs_step(states, batch, keys, hparams)

    return _jit_step(step, donate)


def check_finite(metrics: Metrics, first_step: int, *, steps_per_call: int = 1) -> None:
    """Host-side check of a step's metrics; raise :class:`NonFiniteError` naming the step.

    For a fused call (``steps_per_call = k > 1``) the leading axis of ``metrics["finite"]``
    indexes the ``k`` updates that started at ``first_step``, and the first bad one is
    named; any other axes (devices of a ``pmap`` step, runs of a vmapped step) are reduced
    with ``all``. Updates skipped by ``skip_nonfinite=True`` are not errors.
    """
    finite = np.asarray(jax.device_get(metrics["finite"]), bool)
    if "skipped" in metrics:
        finite = finite | np.asarray(jax.device_get(metrics["skipped"]), bool)
    if finite.all():
        return
    loss = np.asarray(jax.device_get(metrics["loss"]))
    if steps_per_call > 1:
        if finite.ndim == 0 or finite.shape[0] != steps_per_call:
            raise ValueError(
                f"steps_per_call={steps_per_call} but metrics['finite'] has shape {finite.shape}"
            )
        bad = int(np.argmin(finite.reshape(steps_per_call, -1).all(axis=1)))
        loss = loss.reshape(steps_per_call, -1)[bad]
    else:
        bad = 0
    raise NonFiniteError(
        f"non-finite loss or gradient at step {first_step + bad} (loss={np.ravel(loss).tolist()}); "
        "training stopped before saving this state, the last checkpoint is intact. Lower the "
        "learning rate, clip gradients (make_optimizer(clip_norm=...)), check the data for "
        "NaN, or pass skip_nonfinite=True to the step factory to skip such updates."
    )
