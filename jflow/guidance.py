r"""Classifier-free guidance: label dropout in training, the guided field in sampling.

Training (Algorithm 5 of the 2025 slides): :func:`drop_labels` replaces each label by the
empty label :math:`\varnothing` with probability ``p``, so one network learns both
:math:`u^\theta_t(x|y)` and :math:`u^\theta_t(x|\varnothing)` (``make_loss(label_dropout=p)``
calls it). Sampling (Algorithm 8): :func:`classifier_free_guidance` combines the two as
:math:`(1 - w)\,u_t(x|\varnothing) + w\,u_t(x|y)`.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import as_float, is_concrete

Array = jax.Array

__all__ = ["drop_labels", "classifier_free_guidance"]


def drop_labels(key, y, p, null_label) -> Array:
    r"""Replace each example's label by ``null_label`` with probability ``p`` (independently).

    Classifier-free guidance training (Algorithm 5 of the 2025 slides, step 6: "with
    probability p drop label: :math:`y \leftarrow \varnothing`"): one network learns both
    the guided field :math:`u^\theta_t(x|y)` and the unguided :math:`u^\theta_t(x|\varnothing)`
    that Algorithm 8 combines at sampling time.

    Args:
      key: a ``jax.random`` key.
      y: labels with the batch axis first: ``(B,)`` integer classes, or ``(B, ...)`` (e.g.
        one-hot rows or embeddings), in which case a whole row is replaced.
      p: drop probability in ``[0, 1]`` (may be a traced array). ``p = 0`` returns ``y``
        unchanged and ``p = 1`` replaces every label, exactly.
      null_label: the "empty" label :math:`\varnothing`, cast to ``y.dtype``; a scalar or an
        array that broadcasts to one example ``y[0]`` (e.g. an extra class index ``K`` for
        ``K`` classes, or a zero row).

    Returns:
      Labels of the shape and dtype of ``y``.
    """
    y = jnp.asarray(y)
    if y.ndim == 0:
        raise ValueError("y must have a batch axis first, shape (B,) or (B, ...); got a scalar")
    if is_concrete(p) and not (np.ndim(p) == 0 and 0.0 <= float(p) <= 1.0):
        raise ValueError(f"label drop probability p must be a scalar in [0, 1]; got {p}")
    if null_label is None:
        raise ValueError("null_label is required: the label that stands for 'no label' (the empty prompt)")
    null = jnp.asarray(null_label, y.dtype)
    try:
        ok = np.broadcast_shapes(null.shape, y.shape[1:]) == y.shape[1:]
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"null_label of shape {null.shape} does not broadcast to one example of y, shape {y.shape[1:]}"
        )
    drop = jax.random.bernoulli(key, p, (y.shape[0],))
    return jnp.where(drop.reshape(drop.shape + (1,) * (y.ndim - 1)), null, y)


def _broadcast_weight(w, x):
    w = as_float(w).astype(x.dtype)
    if w.ndim == 0:
        return w
    if w.ndim == 1 and w.shape[0] == x.shape[0]:
        return w.reshape(w.shape + (1,) * (x.ndim - 1))
    raise ValueError(
        f"guidance scale w must be a scalar or have shape (B,) with B = x.shape[0]; got "
        f"w.shape={tuple(w.shape)} for x.shape={tuple(x.shape)}"
    )


def classifier_free_guidance(u: Callable, null_label) -> Callable:
    r"""Classifier-free guidance (Algorithm 8) as a combinator on a conditional vector field.

    Given ``u(x, t, y, *rest)`` trained with label dropout (``y = null_label`` meaning
    "no label"), returns

    .. math:: \tilde u_t(x | y; w) = (1 - w)\,u_t(x|\varnothing) + w\,u_t(x|y)

    as ``guided(x, t, y, w, *rest)``, directly usable by the samplers with
    ``args=(y, w, *rest)`` (e.g. ``rest = (params,)``; then ``u`` is called
    ``u(x, t, y, params)``). Equivalent forms: :math:`u_\varnothing + w(u_y - u_\varnothing)`
    is the same field with the same ``w`` (``w = 0``: unconditional, ``w = 1``: conditional,
    ``w > 1``: guided, Algorithm 8); the form :math:`(1 + w')u_y - w' u_\varnothing` of
    other codebases is this one with :math:`w = 1 + w'` (their ``w' = 0`` is our ``w = 1``).

    ``w`` is a scalar or per-example ``(B,)`` array, an argument rather than a constant, so
    a jitted sampler does not recompile when it changes. The conditional and
    unconditional branches are one call of ``u`` on a doubled batch: ``x`` and ``y``
    are concatenated with ``x`` and ``null_label`` along the batch axis (a ``(B,)`` ``t``
    too). ``null_label`` is a scalar or array broadcastable to ``y``'s shape. For a flax
    model: ``classifier_free_guidance(as_field(model.apply, params), model.null_label)``.
    """

    def guided(x, t, y, w, *rest):
        x = jnp.asarray(x)
        y = jnp.asarray(y)
        if y.ndim == 0 or y.shape[0] != x.shape[0]:
            raise ValueError(
                f"labels y must have the batch size of x as first axis; got y.shape="
                f"{tuple(y.shape)} for x.shape={tuple(x.shape)}"
            )
        wb = _broadcast_weight(w, x)
        null = jnp.broadcast_to(jnp.asarray(null_label, dtype=y.dtype), y.shape)
        t = jnp.asarray(t)
        tt = t if t.ndim == 0 else jnp.concatenate([t, t], axis=0)
        out = u(jnp.concatenate([x, x], axis=0), tt, jnp.concatenate([y, null], axis=0), *rest)
        u_y, u_null = jnp.split(out, 2, axis=0)
        return (1.0 - wb) * u_null + wb * u_y

    if hasattr(u, "finite_at"):  # a guided converted field is singular where u is (jflow.fields.check_grid)
        guided.finite_at = u.finite_at
    return guided
