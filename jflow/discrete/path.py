"""The mixture path of discrete flow matching: ``kappa_t`` schedulers, sources and path samples
(see :mod:`jflow.discrete`)."""
from __future__ import annotations

import abc
from typing import Callable, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import as_float, check_choice, check_positive_int, check_time, expand_time, frozen_pytree, is_concrete

Array = jax.Array

SOURCES = ("mask", "uniform")


class Kappa(abc.ABC):
    r"""Base class of mixture-path schedulers :math:`\kappa_t`, increasing, :math:`\kappa_0 = 0,\ \kappa_1 = 1`.

    Subclasses implement ``kappa(t)`` (elementwise) and may override ``derivative(t)``
    (default: ``jax.jvp``). ``k(t)`` casts ``t`` to a float array first.
    """

    @abc.abstractmethod
    def kappa(self, t: Array) -> Array:
        """:math:`\\kappa_t` for a float array ``t`` (elementwise)."""

    def __call__(self, t) -> Array:
        return self.kappa(as_float(t))

    def derivative(self, t) -> Array:
        r""":math:`\dot\kappa_t` (forward-mode autodiff unless overridden)."""
        t = as_float(t)
        return jax.jvp(self.kappa, (t,), (jnp.ones_like(t),))[1]


def _finite_positive(value) -> bool:
    v = np.asarray(value, np.float64)
    return bool(np.all(np.isfinite(v)) and np.all(v > 0))


@frozen_pytree
class PolynomialKappa(Kappa):
    r""":math:`\kappa_t = t^n`, :math:`\dot\kappa_t = n\,t^{n-1}`, for an exponent ``n > 0``.

    ``exponent=1`` is the linear path (:math:`\dot\kappa_t/(1-\kappa_t) = 1/(1-t)`); larger
    exponents keep tokens at the source longer. For ``n < 1`` the rate is infinite at ``t = 0``,
    so :func:`discrete_euler` refuses a grid that starts there.
    """

    exponent: float = 1.0

    def __post_init__(self):
        if is_concrete(self.exponent) and not _finite_positive(self.exponent):
            raise ValueError(
                f"PolynomialKappa needs a finite exponent > 0 (kappa_t = t**exponent); got {self.exponent}"
            )

    def kappa(self, t):
        return t**self.exponent

    def derivative(self, t):
        t = as_float(t)
        return self.exponent * t ** (self.exponent - 1.0)


def kappa_derivatives(kappa: Callable, t) -> Tuple[Array, Array]:
    r"""``(kappa_t, d_kappa_t)`` elementwise over ``t`` (flow time: 0 source, 1 data).

    Uses ``kappa.derivative`` when it exists (every :class:`Kappa`), else ``jax.jvp``, so any
    elementwise callable ``t -> kappa_t`` is accepted.
    """
    t = as_float(t)
    value = jnp.asarray(kappa(t)).astype(t.dtype)
    method = getattr(kappa, "derivative", None)
    if method is not None:
        return value, jnp.asarray(method(t)).astype(t.dtype)
    return value, jax.jvp(lambda s: jnp.asarray(kappa(s)).astype(t.dtype), (t,), (jnp.ones_like(t),))[1]


def _check_kappa(kappa):
    if not callable(kappa):
        raise ValueError(f"kappa must be a scheduler t -> kappa_t such as PolynomialKappa(1.0); got {kappa!r}")


# --------------------------------------------------------------------------------------
# sources and the mixture path
# --------------------------------------------------------------------------------------


def mask_id(vocab_size: int) -> int:
    """The mask token of a vocabulary of ``vocab_size`` data tokens: ``vocab_size`` itself."""
    return check_positive_int(vocab_size, "vocab_size")


def _check_vocab(vocab_size) -> int:
    return check_positive_int(vocab_size, "vocab_size", why="the number of data tokens V; the mask id is V")


def sample_source(key, kind: str, shape, vocab_size: int, dtype=jnp.int32) -> Array:
    """Source tokens of shape ``shape``: ``"mask"`` (all equal to the mask id ``vocab_size``) or
    ``"uniform"`` (i.i.d. uniform on ``{0, ..., vocab_size - 1}``)."""
    check_choice(kind, SOURCES, "source")
    vocab_size = _check_vocab(vocab_size)
    shape = tuple(shape)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"dtype must be an integer dtype (token ids); got {jnp.dtype(dtype)}")
    if jnp.iinfo(dtype).max < vocab_size:
        raise ValueError(f"dtype {jnp.dtype(dtype)} cannot hold the mask id {vocab_size}; use int32")
    if kind == "mask":
        return jnp.full(shape, vocab_size, dtype)
    return jax.random.randint(key, shape, 0, vocab_size, dtype)


def _check_tokens(x, name: str, *, hi: int | None = None, what: str = "") -> Array:
    """``x`` as an integer array with a batch axis; values in ``[0, hi)`` when concrete and ``hi`` given."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise ValueError(
            f"{name} must hold integer token ids; got dtype {x.dtype}. Cast it, e.g. "
            f"{name}.astype(jnp.int32) (discrete flow matching works on tokens, not floats)"
        )
    if x.ndim == 0:
        raise ValueError(f"{name} must have a batch axis first, shape (B, D); got a scalar")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {x.shape}); need B >= 1 sequences")
    if hi is not None and is_concrete(x) and x.size:
        lo_v, hi_v = int(np.min(np.asarray(x))), int(np.max(np.asarray(x)))
        if lo_v < 0 or hi_v >= hi:
            raise ValueError(f"{name} must hold token ids in [0, {hi}){what}; got values in [{lo_v}, {hi_v}]")
    return x


def _check_path_time(t, x) -> Array:
    t = as_float(t)
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != x.shape[0]):
        raise ValueError(f"t must be a scalar or have shape (B,) = ({x.shape[0]},); got shape {t.shape}")
    return check_time(t)


def sample_mixture_path(key, kappa: Callable, x0, x1, t) -> Array:
    r"""Draw :math:`x_t \sim p_t(\cdot \mid x_0, x_1)`: token ``i`` is :math:`x_1^i` with probability
    :math:`\kappa_t`, else :math:`x_0^i`, independently over tokens.

    Args:
      key: a ``jax.random`` key.
      kappa: the scheduler, e.g. :class:`PolynomialKappa`.
      x0, x1: integer tokens of one shape ``(B, D)`` (source and data).
      t: flow time (0 source, 1 data), a scalar or shape ``(B,)``.

    Returns integer tokens of the shape of ``x1``, in the promoted dtype of ``x0`` and ``x1``.
    """
    _check_kappa(kappa)
    x0 = _check_tokens(x0, "x0")
    x1 = _check_tokens(x1, "x1")
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape; got x0.shape={x0.shape}, x1.shape={x1.shape}")
    t = _check_path_time(t, x1)
    t = t.astype(jnp.promote_types(t.dtype, jnp.float32))  # at least float32 for the coin flips
    k = expand_time(jnp.asarray(kappa(t)), x1)
    coin = jax.random.uniform(key, x1.shape, t.dtype)
    dtype = jnp.promote_types(x0.dtype, x1.dtype)
    return jnp.where(coin < k, x1.astype(dtype), x0.astype(dtype))
