"""Non-finite losses and gradients: the error, the host-side check and the in-step guard.

Every train step reports ``finite`` (loss and gradient norm finite). By default a
non-finite update is applied anyway and the training loop (:func:`jflow.train.fit`, or
:func:`check_finite` in your own loop) stops with :class:`NonFiniteError` naming the step,
before any checkpoint of the bad state is written; :meth:`jflow.train.Checkpointer.save`
refuses a state holding NaN/inf (:func:`all_finite`). With ``skip_nonfinite=True`` the
step applies :func:`keep_if_finite`: a non-finite update leaves ``params``, ``opt_state``
and ``ema_params`` unchanged, increments ``state.nonfinite_count`` and still advances
``state.step`` (the next update gets new randomness and the next batch).
"""
from __future__ import annotations

from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np

from jflow.train.state import TrainState

__all__ = ["NonFiniteError", "check_finite", "keep_if_finite", "all_finite"]

PyTree = Any


class NonFiniteError(FloatingPointError):
    """The loss or the gradient of a train step was NaN or infinite."""


def keep_if_finite(new: TrainState, old: TrainState, finite: jax.Array) -> TrainState:
    """``new`` if ``finite``, else ``old``'s params, optimizer state and EMA (traceable).

    ``step`` comes from ``new`` either way; ``nonfinite_count`` counts the kept updates.
    """

    def keep(updated, previous):
        return jax.tree.map(lambda a, b: jnp.where(finite, a, b), updated, previous)

    return new.replace(
        params=keep(new.params, old.params),
        opt_state=keep(new.opt_state, old.opt_state),
        ema_params=keep(new.ema_params, old.ema_params),
        nonfinite_count=old.nonfinite_count + jnp.where(finite, 0, 1).astype(jnp.int32),
    )


@jax.jit
def all_finite(tree: PyTree) -> jax.Array:
    """``True`` iff every floating leaf of ``tree`` is free of NaN and inf (a bool array)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def check_finite(metrics: Dict[str, Any], first_step: int, *, steps_per_call: int = 1) -> None:
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
