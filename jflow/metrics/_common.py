"""Input checks and the NaN rule shared by the metrics (see :mod:`jflow.metrics`).

Outside ``jit`` non-finite samples raise ``ValueError``; under a trace every jittable metric
passes its value through :func:`nan_unless_finite`, so a NaN or inf input gives NaN, never a
finite number. Samples are promoted to float32 at least before any reduction.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import as_float, is_concrete

Array = jax.Array


def all_finite(*arrays) -> Array:
    """One boolean: every entry of every (float) array is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in arrays]))


def nan_unless_finite(value, *inputs):
    """``value`` (a pytree of float arrays) where all ``inputs`` are finite, NaN otherwise (the under-jit rule)."""
    ok = all_finite(*inputs)
    return jax.tree_util.tree_map(lambda v: jnp.where(ok, v, jnp.nan).astype(v.dtype), value)


all_finite_jit = jax.jit(all_finite)


def check_finite(name: str, a) -> None:
    """Raise ``ValueError`` naming ``name`` if the concrete array ``a`` holds NaN or inf (no-op under a trace)."""
    if is_concrete(a) and not bool(all_finite_jit(a)):
        raise ValueError(f"{name} contains NaN or inf; metrics need finite samples")


def at_least_f32(x) -> Array:
    """``x`` as a float array of float32 precision at least (half precision promoted, float64 kept)."""
    x = as_float(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def as_vectors(x, name: str) -> Array:
    """A checked sample set ``(N, ...)`` flattened to ``(N, d)`` vectors, float32 at least."""
    x = at_least_f32(x)
    if x.ndim < 2 or x.shape[0] < 1 or x.size == 0:
        raise ValueError(
            f"{name} must have shape (N, ...) with a batch axis first, N >= 1 and at least one value per "
            f"sample; got shape {tuple(x.shape)} (a single 1-D sample set of N values: {name}[:, None])"
        )
    check_finite(name, x)
    return x.reshape(x.shape[0], -1)


def pair(x, y) -> tuple[Array, Array]:
    """Two checked sample sets of the same trailing shape, as vectors of one dtype."""
    x, y = as_vectors(x, "x"), as_vectors(y, "y")
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(
            f"x and y must have the same trailing shape; got x: {x.shape} and y: {y.shape} after flattening"
        )
    dtype = jnp.result_type(x, y)
    return x.astype(dtype), y.astype(dtype)


def host_array(value, name: str, metric: str) -> np.ndarray:
    """``value`` as a float64 numpy array; a clear error under ``jit``/``vmap`` (host metrics cannot trace)."""
    if not is_concrete(value):
        raise ValueError(f"{metric} runs on the host (numpy/scipy) and cannot be traced; call it outside jit/vmap")
    return np.asarray(value, np.float64)
