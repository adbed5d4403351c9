"""Input validation, time broadcasting and the samplers' working precision, shared by the
library's pure functions.

Checks on *values* (t in [0, 1]) run only when the value is concrete, i.e. outside
``jit``; under ``jit`` the same code traces to nothing, so checks cost nothing in compiled
loops. Checks on *shapes* always run (shapes are static under ``jit``).
"""
from __future__ import annotations

import dataclasses
import operator

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds values we can read on the host (not a tracer)."""
    return not isinstance(x, jax.core.Tracer)


def as_float(x):
    """``x`` as a floating jnp array; keeps float16/32/64, casts ints and bools to the default float."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def check_time(t, name: str = "t", lo: float = 0.0, hi: float = 1.0):
    """Raise ``ValueError`` if a concrete ``t`` has values outside ``[lo, hi]`` or NaN."""
    if is_concrete(t):
        values = np.asarray(t)
        if values.size and (np.isnan(values).any() or values.min() < lo or values.max() > hi):
            raise ValueError(
                f"{name} must lie in [{lo}, {hi}] (flow time: t=0 is noise, t=1 is data); "
                f"got values in [{np.nanmin(values) if not np.isnan(values).all() else 'nan'}, "
                f"{np.nanmax(values) if not np.isnan(values).all() else 'nan'}]"
                + (" including NaN" if np.isnan(values).any() else "")
            )
    return t


def expand_time(t, x, name: str = "t"):
    """Reshape ``t`` (scalar or ``(B,)``) so that it broadcasts over the trailing axes of ``x``.

    ``t`` takes the float dtype of ``x`` (so outputs keep the dtype of the state).

    A scalar stays a scalar; a ``(B,)`` vector becomes ``(B, 1, ..., 1)`` with ``x.ndim`` axes.
    Any other shape raises ``ValueError``.
    """
    t = as_float(t)
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
        t = t.astype(x.dtype)  # float32 x stays float32 even with a float64 t
    if t.ndim == 0:
        return t
    if t.ndim == 1 and x.ndim >= 1 and t.shape[0] == x.shape[0]:
        return t.reshape(t.shape + (1,) * (x.ndim - 1))
    raise ValueError(
        f"{name} must be a scalar or have shape (B,) with B = x.shape[0]; got {name}.shape="
        f"{tuple(t.shape)} for x.shape={tuple(x.shape)}. Per-example code: use jax.vmap."
    )


def check_same_shape(**arrays):
    """Raise ``ValueError`` unless all named arrays have the same shape."""
    shapes = {k: tuple(jnp.shape(v)) for k, v in arrays.items()}
    if len(set(shapes.values())) > 1:
        desc = ", ".join(f"{k}.shape={s}" for k, s in shapes.items())
        raise ValueError(f"shape mismatch: {desc}; these arguments must have the same shape")


def check_choice(value: str, choices, name: str) -> str:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(choices)}")
    return value


def check_positive_int(value, name: str, *, minimum: int = 1, why: str = "") -> int:
    """``value`` as a Python int ``>= minimum``, else ``ValueError`` naming ``name``.

    Accepts Python and numpy integers (not bools, floats or arrays under a trace: such a
    value usually fixes a shape, so it must be static). ``why`` is appended to the message,
    e.g. ``"it fixes the grid's shape"``.
    """
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not ok or operator.index(value) < minimum:
        suffix = f" ({why})" if why else ""
        raise ValueError(f"{name} must be a Python int >= {minimum}{suffix}; got {value!r}")
    return operator.index(value)


def frozen_pytree(cls=None, *, meta=()):
    """Frozen dataclass registered as a pytree: numeric fields are leaves, ``meta`` fields static.

    The one way jflow makes its small immutable value types (schedulers, toy
    distributions, mixtures) into pytrees. Registered with ``register_pytree_with_keys``
    and an unflatten that bypasses ``__init__``: (1) the tree structure records the class
    itself, so two classes with the same field names never share a treedef (and a jit
    cache entry), and (2) tree operations that carry non-numbers in the leaves (shapes,
    ``vmap`` axis specs) do not re-run the constructor's validation.
    """

    def wrap(cls):
        if not dataclasses.is_dataclass(cls):
            cls = dataclasses.dataclass(frozen=True)(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        data = tuple(n for n in names if n not in meta)

        def flatten_with_keys(obj):
            children = tuple((jax.tree_util.GetAttrKey(n), getattr(obj, n)) for n in data)
            return children, tuple(getattr(obj, n) for n in meta)

        def flatten(obj):
            return tuple(getattr(obj, n) for n in data), tuple(getattr(obj, n) for n in meta)

        def unflatten(aux, leaves):
            obj = object.__new__(cls)
            for name, value in zip(data + tuple(meta), tuple(leaves) + tuple(aux)):
                object.__setattr__(obj, name, value)
            return obj

        jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
        return cls

    return wrap if cls is None else wrap(cls)


def _host_value(value):
    """``value`` as a numpy array when it is known on the host, else ``None`` (tracers, sentinels)."""
    if isinstance(value, (int, float, np.ndarray, np.generic)):
        return np.asarray(value)
    if isinstance(value, jax.Array) and is_concrete(value):
        return np.asarray(value)
    return None


def check_scalar_in(value, name: str, *, lo: float, hi: float = float("inf"), lo_open: bool = False,
                    hi_open: bool = False):
    """Raise ``ValueError`` naming ``name`` unless a concrete ``value`` is a scalar in the interval
    from ``lo`` to ``hi`` (open ends as given; NaN fails). Traced values pass unchecked."""
    v = _host_value(value)
    if v is None:
        return value
    if v.ndim != 0:
        raise ValueError(f"{name} must be a scalar; got shape {v.shape}")
    if np.isnan(v) or (v <= lo if lo_open else v < lo) or (v >= hi if hi_open else v > hi):
        interval = ("(" if lo_open else "[") + f"{lo}, {hi}" + (")" if hi_open else "]")
        raise ValueError(f"{name} must lie in {interval}; got {float(v)}")
    return value


def working_precision(tree):
    """Each leaf in at least float32: the precision every sampler carries a state in.

    In bfloat16 (8 significant bits) a step ``x + h u`` with ``|h u| < |x| / 256`` rounds back
    to ``x``, and a grid of a few hundred points has repeated times, so low-precision states
    are integrated in float32 and cast back at the end (:func:`cast_like`).
    """
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.promote_types(a.dtype, jnp.float32)), tree)


def cast_like(tree, like):
    """``tree``'s leaves in the dtypes of ``like``'s (a trajectory's extra time axis is fine)."""
    return jax.tree_util.tree_map(lambda a, b: a.astype(b.dtype), tree, like)
