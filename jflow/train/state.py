"""The training state: a pytree of arrays plus the optimizer as static metadata.

``TrainState`` holds everything a run needs to continue exactly where it stopped:

- ``step``: int32 scalar, the number of updates attempted so far (also the index that
  ``jax.random.fold_in(key, step)`` uses, so randomness is a function of the step); a
  state of ``R`` independent runs (``jax.vmap`` of :func:`create_train_state`) has shape
  ``(R,)``, all entries equal when the runs advance together (:func:`current_step`);
- ``params``: the model parameters (float32 by default, also under mixed precision);
- ``opt_state``: the optax optimizer state;
- ``ema_params``: an exponential moving average of ``params`` (``None`` without EMA);
- ``nonfinite_count``: int32 scalar, updates skipped because the loss or gradient was not
  finite (only ``skip_nonfinite=True`` steps skip; see :mod:`jflow.train.nonfinite`).

The optimizer ``tx`` and the EMA decay are static fields (part of the tree structure, not
leaves), so a ``TrainState`` goes through ``jit``, ``vmap``, ``pmap``, ``lax.scan`` and
orbax checkpoints as an ordinary pytree of arrays.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["TrainState", "create_train_state", "current_step", "state_arrays"]

PyTree = Any


@dataclasses.dataclass(frozen=True)
class TrainState:
    """Pytree of ``(step, params, opt_state, ema_params, nonfinite_count)``; ``tx`` and
    ``ema_decay`` are static. Build it with :func:`create_train_state`."""

    step: jax.Array
    params: PyTree
    opt_state: PyTree
    ema_params: Optional[PyTree]
    nonfinite_count: jax.Array
    tx: optax.GradientTransformation
    ema_decay: Optional[float] = None

    def replace(self, **changes) -> "TrainState":
        """A copy with the given fields replaced."""
        return dataclasses.replace(self, **changes)

    def apply_gradients(self, grads: PyTree) -> "TrainState":
        """One optimizer update: ``params <- params + tx.update(grads)``, ``step += 1``.

        The EMA is not touched here (the train step updates it with the warm-up decay).
        """
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        return self.replace(step=self.step + 1, params=params, opt_state=opt_state)


jax.tree_util.register_dataclass(
    TrainState,
    data_fields=["step", "params", "opt_state", "ema_params", "nonfinite_count"],
    meta_fields=["tx", "ema_decay"],
)


def create_train_state(
    params: PyTree,
    optimizer: optax.GradientTransformation,
    *,
    ema_decay: Optional[float] = None,
) -> TrainState:
    """A fresh :class:`TrainState` at step 0.

    Args:
      params: model parameters (e.g. ``model.init(key, x, t)``); kept in their dtype, so
        float32 parameters stay float32 even when the step computes in bfloat16.
      optimizer: an optax ``GradientTransformation`` (see :func:`jflow.train.make_optimizer`).
      ema_decay: ``None`` for no EMA, or a decay in ``[0, 1)``; the EMA starts as a copy
        of ``params`` and is updated by every train step (with warm-up, see
        :func:`jflow.train.ema_decay_at`).

    The state holds ``params``' buffers (no copy): a donating train step consumes them, so
    pass ``jax.tree.map(jnp.copy, params)`` if you still need ``params`` afterwards.
    Works under ``jax.vmap`` (stack independent runs: ``jax.vmap(lambda p:
    create_train_state(p, tx))(stacked_params)``).
    """
    if not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError(
            "optimizer must be an optax.GradientTransformation (e.g. optax.adam(1e-3) or "
            f"jflow.train.make_optimizer(...)); got {type(optimizer).__name__}"
        )
    if ema_decay is not None:
        ema_decay = float(ema_decay)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1) (or be None for no EMA); got {ema_decay}")
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("params has no array leaves; pass the output of model.init(...)")
    for leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            raise ValueError(
                f"every parameter must be a float array; found dtype {jnp.result_type(leaf)}"
            )
    params = jax.tree.map(jnp.asarray, params)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        ema_params=None if ema_decay is None else jax.tree.map(jnp.copy, params),
        nonfinite_count=jnp.zeros((), jnp.int32),
        tx=optimizer,
        ema_decay=ema_decay,
    )


def state_arrays(state: TrainState) -> dict:
    """The array fields of ``state`` as a plain dict (what a checkpoint stores)."""
    return {
        "step": state.step,
        "params": state.params,
        "opt_state": state.opt_state,
        "ema_params": state.ema_params,
        "nonfinite_count": state.nonfinite_count,
    }


def current_step(state: TrainState) -> int:
    """``state.step`` on the host, as a Python ``int``.

    A state of ``R`` vmapped runs (``step`` of shape ``(R,)``, e.g. from
    :func:`jflow.train.make_vmapped_train_step`) counts as one run at that step: all
    entries must be equal. This is the step :func:`jflow.train.fit` and
    :class:`jflow.train.Checkpointer` use.

    Raises:
      ValueError: ``step`` has more than one axis, or its entries differ.
    """
    if not isinstance(state, TrainState):
        raise ValueError(f"state must be a TrainState; got {type(state).__name__}")
    step = np.asarray(jax.device_get(state.step))
    if step.ndim == 0:
        return int(step)
    if step.ndim > 1 or step.size == 0:
        raise ValueError(
            f"state.step must be a scalar, or have shape (R,) for R vmapped runs; got shape {step.shape}"
        )
    if not np.all(step == step[0]):
        raise ValueError(
            f"the vmapped runs are at different steps {step.tolist()}; fit and Checkpointer need runs "
            "that advance together: step all of them with one make_vmapped_train_step, or train "
            "them as separate runs"
        )
    return int(step[0])
