"""Pytree helpers of the train package, in one place: stack runs, split batches, replicate.

- :func:`stack_trees` / :func:`unstack_tree`: a leading *run* axis (independent runs of a
  vmapped step, see :func:`jflow.train.vmap_runs`);
- :func:`split_batch`: ``(B, ...) -> (n, B/n, ...)``, the per-device batches of a ``pmap``
  step, and (with ``name="num_microbatches"``) the micro-batches of gradient accumulation;
- :func:`replicate` / :func:`unreplicate`: a leading *device* axis of identical copies;
- :func:`cast_floating`: the floating leaves in another dtype (mixed precision).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["stack_trees", "unstack_tree", "split_batch", "replicate", "unreplicate", "cast_floating"]

PyTree = Any


def stack_trees(trees: Sequence[PyTree]) -> PyTree:
    """Stack same-structured pytrees along a new leading axis (e.g. runs for a vmapped step)."""
    if not trees:
        raise ValueError("stack_trees needs at least one tree")
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def stack_on_host(trees: Sequence[PyTree]) -> PyTree:
    """:func:`stack_trees` with numpy, leaving the result on the host (the ``k`` batches of a
    fused call, before ``prepare_batch`` places them)."""
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def unstack_tree(tree: PyTree, index: int) -> PyTree:
    """Entry ``index`` of the leading axis of every leaf (one run of a vmapped state)."""
    return jax.tree.map(lambda x: x[index], tree)


def split_batch(batch: PyTree, num_devices: Optional[int] = None, *, name: str = "num_devices") -> PyTree:
    """Reshape every leaf ``(B, ...) -> (n, B/n, ...)`` with ``n = num_devices`` (default
    ``jax.local_device_count()``): the per-device batches of :func:`jflow.train.make_pmap_train_step`.

    ``name`` is the argument named by the error when ``n`` does not divide ``B`` (the
    train step passes ``"num_microbatches"`` for gradient accumulation).
    """
    n = jax.local_device_count() if num_devices is None else num_devices

    def one(x):
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[0] % n:
            raise ValueError(
                f"{name}={n} must divide the batch size (a multiple of {n}); got a batch leaf of "
                f"shape {x.shape}"
            )
        return x.reshape((n, x.shape[0] // n) + x.shape[1:])

    return jax.tree.map(one, batch)


def replicate(tree: PyTree, num_devices: Optional[int] = None) -> PyTree:
    """Stack ``num_devices`` copies (default ``jax.local_device_count()``) on a new leading axis."""
    n = jax.local_device_count() if num_devices is None else num_devices
    return jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (n,) + jnp.shape(x)), tree)


def unreplicate(tree: PyTree) -> PyTree:
    """The first copy of a replicated tree (inverse of :func:`replicate`)."""
    return jax.tree.map(lambda x: x[0], tree)


def cast_floating(tree: PyTree, dtype) -> PyTree:
    """Every floating leaf cast to ``dtype``; integer and boolean leaves unchanged."""

    def one(x):
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(one, tree)
