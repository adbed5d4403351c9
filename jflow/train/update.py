r"""The update of one train step, :func:`make_update_fn`: the one place where the step options live.

A loss ``loss_fn(params, batch, key) -> (loss, metrics)`` (e.g. from
:func:`jflow.losses.make_loss`, ``loss`` a scalar *mean over the batch*, ``metrics`` a
dict of scalars) becomes the pure, un-jitted update

    ``update(state, batch, key) -> (state, metrics)``

that every step of :mod:`jflow.train` is built from, by the transforms of
:mod:`jflow.train.transforms` (jit with donation, ``k`` fused updates, ``vmap`` over runs,
sharding over a mesh, ``pmap``); the ``make_*_train_step`` factories are compositions of
the two.

The randomness of update ``n`` is ``jax.random.fold_in(key, state.step)``: pass the same
``key`` on every call; a run is then a deterministic function of ``(initial state, key,
data)`` and resuming from a checkpoint at step ``n`` reproduces the uninterrupted run.

Metrics always contain ``loss`` (float32), ``grad_norm`` (global L2 norm of the
gradient, before clipping) and ``finite`` (bool: loss and gradient finite), plus the
loss's own metrics cast to float32; ``skipped`` (bool) is added when
``skip_nonfinite=True`` (see :mod:`jflow.train.nonfinite`).

Mixed precision: ``compute_dtype=jnp.bfloat16`` casts the floating parameters and the
floating leaves of the batch to bfloat16 for the forward and backward pass; gradients
arrive in the parameters' dtype (float32) and the optimizer state and EMA stay float32.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from jflow._checks import check_positive_int
from jflow.train.ema import ema_decay_at, ema_update
from jflow.train.nonfinite import keep_if_finite
from jflow.train.state import TrainState
from jflow.train.trees import cast_floating, split_batch

__all__ = ["LossFn", "Update", "UpdateOptions", "make_update_fn"]

PyTree = Any
Metrics = Dict[str, jax.Array]
LossFn = Callable[[PyTree, PyTree, jax.Array], Tuple[jax.Array, Metrics]]
Update = Callable[[TrainState, PyTree, jax.Array], Tuple[TrainState, Metrics]]


def _checked_loss(loss_fn: LossFn, compute_dtype) -> Callable:
    """``(params, batch, key) -> (loss, metrics)`` with metrics["loss"] float32 and the output checked."""

    def wrapped(params, batch, key):
        if compute_dtype is not None:
            params = cast_floating(params, compute_dtype)
            batch = cast_floating(batch, compute_dtype)
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

    return wrapped


def _grads_and_metrics(loss_fn: LossFn, compute_dtype, num_microbatches: int) -> Callable:
    """``(params, batch, key) -> (grads, metrics)``, averaged over ``num_microbatches`` parts
    of the batch (part ``i`` with key ``fold_in(key, i)``) when that is more than one."""
    value_and_grad = jax.value_and_grad(_checked_loss(loss_fn, compute_dtype), has_aux=True)

    def whole(params, batch, key):
        (_, metrics), grads = value_and_grad(params, batch, key)
        return grads, metrics

    if num_microbatches == 1:
        return whole

    def accumulated(params, batch, key):
        parts = split_batch(batch, num_microbatches, name="num_microbatches")
        first = jax.tree.map(lambda x: x[0], parts)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(whole, params, first, key))

        def body(acc, inputs):
            i, part = inputs
            out = whole(params, part, jax.random.fold_in(key, i))
            return jax.tree.map(jnp.add, acc, out), None

        total, _ = jax.lax.scan(body, zeros, (jnp.arange(num_microbatches), parts))
        return jax.tree.map(lambda v: v / num_microbatches, total)

    return accumulated


@dataclasses.dataclass(frozen=True)
class UpdateOptions:
    """The options of a train step, validated once; their meaning is documented in
    :func:`make_update_fn` (which is ``UpdateOptions(...).update_fn(loss_fn)``).

    Useful when the loss is built later, e.g. per hyper-parameter inside
    :func:`jflow.train.vmap_runs`: ``vmap_runs(lambda hp: options.update_fn(make_loss(apply, hp)))``.
    """

    ema_decay: Optional[float] = None
    ema_warmup: bool = True
    skip_nonfinite: bool = False
    compute_dtype: Any = None
    num_microbatches: int = 1
    axis_name: Optional[str] = None

    def __post_init__(self):
        n = check_positive_int(self.num_microbatches, "num_microbatches", why="the batch is split into that many parts")
        object.__setattr__(self, "num_microbatches", n)
        if self.ema_decay is not None and not 0.0 <= float(self.ema_decay) < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1) (or be None: use the state's); got {self.ema_decay}")

    def update_fn(self, loss_fn: LossFn) -> Update:
        """The update of :func:`make_update_fn` for these options."""
        grads_and_metrics = _grads_and_metrics(loss_fn, self.compute_dtype, self.num_microbatches)
        axis = self.axis_name

        def update(state: TrainState, batch: PyTree, key: jax.Array) -> Tuple[TrainState, Metrics]:
            decay = self._decay_for(state)
            step_key = jax.random.fold_in(key, state.step)
            if axis is not None and jax.lax.axis_size(axis) > 1:
                step_key = jax.random.fold_in(step_key, jax.lax.axis_index(axis))
            grads, metrics = grads_and_metrics(state.params, batch, step_key)
            if axis is not None:
                grads = jax.lax.pmean(grads, axis)
                metrics = jax.lax.pmean(metrics, axis)
            grad_norm = optax.tree.norm(grads).astype(jnp.float32)
            finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
            new = state.apply_gradients(grads)
            if decay is not None:
                mu = ema_decay_at(decay, state.step, warmup=self.ema_warmup)
                new = new.replace(ema_params=ema_update(state.ema_params, new.params, mu))
            metrics = dict(metrics, grad_norm=grad_norm, finite=finite)
            if self.skip_nonfinite:
                new = keep_if_finite(new, state, finite)
                metrics["skipped"] = jnp.logical_not(finite)
            return new, metrics

        return update

    def _decay_for(self, state) -> Optional[float]:
        """The EMA decay for ``state`` (``None``: no EMA), after checking the state."""
        if not isinstance(state, TrainState):
            raise ValueError(
                f"state must be a jflow.train.TrainState (create_train_state); got {type(state).__name__}"
            )
        decay = state.ema_decay if self.ema_decay is None else self.ema_decay
        if decay is not None and state.ema_params is None:
            raise ValueError(
                "ema_decay is set but the state has no ema_params; build the state with "
                "create_train_state(params, optimizer, ema_decay=...)"
            )
        return decay


def make_update_fn(
    loss_fn: LossFn,
    *,
    ema_decay: Optional[float] = None,
    ema_warmup: bool = True,
    skip_nonfinite: bool = False,
    compute_dtype=None,
    num_microbatches: int = 1,
    axis_name: Optional[str] = None,
) -> Update:
    """The pure (un-jitted) update ``(state, batch, key) -> (state, metrics)``.

    The building block of every step (see the module docstring); compose it with the
    transforms of :mod:`jflow.train.transforms`, e.g. ``jit_step(fuse(update))``.

    Args:
      loss_fn: ``loss_fn(params, batch, key) -> (scalar loss, metrics dict)``.
      ema_decay: EMA decay; ``None`` uses ``state.ema_decay`` (set by
        :func:`create_train_state`), so EMA runs iff the state has ``ema_params``.
      ema_warmup: use ``min(ema_decay, (1 + step) / (10 + step))`` (see :mod:`.ema`).
      skip_nonfinite: leave params/opt state/EMA unchanged when the loss or gradient is
        not finite, and count it in ``state.nonfinite_count`` (:mod:`.nonfinite`).
      compute_dtype: e.g. ``jnp.bfloat16`` for mixed precision (see module docstring).
      num_microbatches: gradient accumulation: split the batch into this many equal
        parts, average their gradients (part ``i`` gets key ``fold_in(step_key, i)``).
      axis_name: inside ``pmap``/``shard_map``: average gradients and metrics over this
        named axis with ``lax.pmean`` (device ``d`` gets key ``fold_in(step_key, d)``
        when the axis has more than one member).

    Raises:
      ValueError: ``num_microbatches`` not a positive int, ``ema_decay`` outside
        ``[0, 1)``; when called: a state that is not a :class:`TrainState`, EMA asked
        of a state without ``ema_params``, a loss that is not ``(scalar, dict)``.
    """
    options = UpdateOptions(ema_decay, ema_warmup, skip_nonfinite, compute_dtype, num_microbatches, axis_name)
    return options.update_fn(loss_fn)
