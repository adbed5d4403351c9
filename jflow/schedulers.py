r"""Noise schedulers :math:`\alpha_t, \beta_t` of Gaussian probability paths.

Flow time: ``t = 0`` is noise (``p_init``), ``t = 1`` is data (``p_data``). A scheduler is
a callable ``t -> (alpha_t, beta_t)`` acting elementwise on an array ``t`` of any shape,
with (lecture 2, "Gaussian conditional probability path")

.. math:: \alpha_0 = \beta_1 = 0, \qquad \alpha_1 = \beta_0 = 1,

so that :math:`p_t(x|z) = \mathcal N(\alpha_t z, \beta_t^2 I)` runs from
:math:`\mathcal N(0, I)` at ``t = 0`` to :math:`\delta_z` at ``t = 1``.

Every scheduler here is an immutable dataclass registered as a JAX pytree: its numeric
parameters are leaves (so ``jax.vmap`` over, say, the exponent of
:class:`PolynomialScheduler` works) and with Python-number parameters it is hashable and
comparable (so it can be a static argument of ``jax.jit``).

``derivatives(sched, t)`` returns ``(alpha, beta, d_alpha, d_beta)``: closed forms for the
built-ins, ``jax.jvp`` for anything else, including any plain callable.
"""
from __future__ import annotations

import abc
import dataclasses
import math
from typing import Callable, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import as_float, frozen_pytree, is_concrete

Array = jax.Array
AlphaBeta = Tuple[Array, Array]


class Derivatives(NamedTuple):
    """What :func:`derivatives` returns: ``alpha_t, beta_t`` and their time derivatives.

    A named tuple, so ``alpha, beta, d_alpha, d_beta = derivatives(sched, t)`` still works
    and ``derivatives(sched, t).d_beta`` reads as the formula does.
    """

    alpha: Array
    beta: Array
    d_alpha: Array
    d_beta: Array


__all__ = [
    "Scheduler",
    "LinearScheduler",
    "CondOTScheduler",
    "CosineScheduler",
    "PolynomialScheduler",
    "SqrtScheduler",
    "LinearVPScheduler",
    "VPScheduler",
    "CustomScheduler",
    "derivatives",
    "Derivatives",
    "check_boundary",
    "get",
    "NAMES",
]


def _concrete_min(value) -> float | None:
    """``min(value)`` as a float when ``value`` is concrete, else ``None`` (under a trace)."""
    if not is_concrete(value):
        return None
    return float(np.min(np.asarray(value)))


def _finite_and(value, condition) -> bool:
    """True when every entry of the concrete ``value`` is finite and satisfies ``condition``."""
    v = np.asarray(value, np.float64)
    return bool(np.all(np.isfinite(v)) and np.all(condition(v)))


class Scheduler(abc.ABC):
    r"""Base class: subclasses implement ``alpha_beta(t)`` and may override ``derivatives(t)``.

    ``sched(t)`` casts ``t`` to a float array and returns ``(alpha_t, beta_t)``, each with the
    shape and float dtype of ``t``.
    """

    @abc.abstractmethod
    def alpha_beta(self, t: Array) -> AlphaBeta:
        """``(alpha_t, beta_t)`` for a float array ``t`` (elementwise)."""

    def __call__(self, t) -> AlphaBeta:
        return self.alpha_beta(as_float(t))

    def derivatives(self, t) -> Tuple[Array, Array, Array, Array]:
        """``(alpha, beta, d_alpha/dt, d_beta/dt)``; by ``jax.jvp`` unless overridden
        (:func:`derivatives` returns them as a :class:`Derivatives`)."""
        return _jvp_derivatives(self, as_float(t))


def _jvp_derivatives(sched: Callable, t: Array) -> Derivatives:
    (alpha, beta), (d_alpha, d_beta) = jax.jvp(sched, (t,), (jnp.ones_like(t),))
    return Derivatives(alpha, beta, d_alpha, d_beta)


def derivatives(sched: Callable, t) -> Derivatives:
    r"""``Derivatives(alpha, beta, d_alpha, d_beta)``: :math:`\alpha_t, \beta_t, \dot\alpha_t, \dot\beta_t` elementwise over ``t``.

    Uses the scheduler's closed form when it has one (every built-in does) and forward-mode
    autodiff (``jax.jvp`` with tangent 1, valid because schedulers act elementwise)
    otherwise, so any callable ``t -> (alpha, beta)`` is accepted.
    """
    t = as_float(t)
    method = getattr(sched, "derivatives", None)
    if method is not None:
        return Derivatives(*method(t))
    return _jvp_derivatives(sched, t)


@frozen_pytree
class LinearScheduler(Scheduler):
    r"""CondOT scheduler: :math:`\alpha_t = t,\ \beta_t = 1 - t`; :math:`\dot\alpha = 1,\ \dot\beta = -1`.

    Its conditional flow is the straight line :math:`x_t = t z + (1 - t)\epsilon` with
    velocity :math:`z - \epsilon` (Algorithm 4).
    """

    def alpha_beta(self, t):
        return t, 1.0 - t

    def derivatives(self, t):
        t = as_float(t)
        one = jnp.ones_like(t)
        return t, 1.0 - t, one, -one


CondOTScheduler = LinearScheduler


@frozen_pytree
class CosineScheduler(Scheduler):
    r""":math:`\alpha_t = \sin(\pi t / 2),\ \beta_t = \cos(\pi t / 2)`.

    :math:`\dot\alpha_t = \frac{\pi}{2}\cos(\pi t/2),\ \dot\beta_t = -\frac{\pi}{2}\sin(\pi t/2)`;
    variance preserving (:math:`\alpha_t^2 + \beta_t^2 = 1`).
    """

    def alpha_beta(self, t):
        # cos(pi/2) is 6e-17 in floating point; pin the endpoint so beta_1 = 0 exactly.
        angle = 0.5 * jnp.pi * t
        return jnp.sin(angle), jnp.where(t == 1.0, 0.0, jnp.cos(angle)).astype(t.dtype)

    def derivatives(self, t):
        t = as_float(t)
        alpha, beta = self.alpha_beta(t)
        half_pi = 0.5 * jnp.pi
        return alpha, beta, half_pi * beta, -half_pi * alpha


@frozen_pytree
class PolynomialScheduler(Scheduler):
    r""":math:`\alpha_t = t^n,\ \beta_t = 1 - t^n` for an exponent ``n > 0``.

    :math:`\dot\alpha_t = n t^{n-1} = -\dot\beta_t` (infinite at ``t = 0`` when ``n < 1``).
    ``n = 1`` is the CondOT scheduler.
    """

    n: float = 2.0

    def __post_init__(self):
        if _concrete_min(self.n) is not None and not _finite_and(self.n, lambda n: n > 0):
            raise ValueError(f"PolynomialScheduler needs a finite exponent n > 0; got n={self.n}")

    def alpha_beta(self, t):
        alpha = t**self.n
        return alpha, 1.0 - alpha

    def derivatives(self, t):
        t = as_float(t)
        alpha, beta = self.alpha_beta(t)
        d_alpha = self.n * t ** (self.n - 1.0)
        return alpha, beta, d_alpha, -d_alpha


@frozen_pytree
class SqrtScheduler(Scheduler):
    r""":math:`\alpha_t = t,\ \beta_t = \sqrt{1 - t}` (the path of lab 2).

    :math:`\dot\alpha_t = 1,\ \dot\beta_t = -1 / (2\sqrt{1 - t})`, which is :math:`-\infty` at
    ``t = 1``: fields of this path are singular at the data end.
    """

    def alpha_beta(self, t):
        return t, jnp.sqrt(1.0 - t)

    def derivatives(self, t):
        t = as_float(t)
        beta = jnp.sqrt(1.0 - t)
        return t, beta, jnp.ones_like(t), -0.5 / beta


@frozen_pytree
class LinearVPScheduler(Scheduler):
    r""":math:`\alpha_t = t,\ \beta_t = \sqrt{1 - t^2}` (variance preserving, linear mean).

    :math:`\dot\alpha_t = 1,\ \dot\beta_t = -t / \sqrt{1 - t^2}` (:math:`-\infty` at ``t = 1``).
    """

    def alpha_beta(self, t):
        return t, jnp.sqrt(1.0 - t * t)

    def derivatives(self, t):
        t = as_float(t)
        beta = jnp.sqrt(1.0 - t * t)
        return t, beta, jnp.ones_like(t), -t / beta


@frozen_pytree
class VPScheduler(Scheduler):
    r"""Variance-preserving scheduler of score SDEs (DDPM's continuous limit), in flow time.

    With diffusion time :math:`s = 1 - t` and
    :math:`T(s) = \beta_{\min} s + \tfrac12 (\beta_{\max} - \beta_{\min}) s^2`:

    .. math:: \alpha_t = e^{-T(s)/2}, \qquad \beta_t = \sqrt{1 - e^{-T(s)}},

    :math:`\dot\alpha_t = \tfrac12 T'(s)\,\alpha_t` and
    :math:`\dot\beta_t = -\tfrac12 T'(s) e^{-T(s)} / \beta_t`, with
    :math:`T'(s) = \beta_{\min} + (\beta_{\max} - \beta_{\min}) s`.

    Note: the noise end is only approximate, :math:`\alpha_0 = e^{-T(1)/2}` (about 6.6e-3
    for the defaults) rather than 0, exactly as in the VP SDE and in the flow matching
    literature. :math:`\dot\beta_t \to -\infty` at ``t = 1``.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self):
        if _concrete_min(self.beta_min) is not None and _concrete_min(self.beta_max) is not None:
            lo, hi = np.asarray(self.beta_min), np.asarray(self.beta_max)
            if not (_finite_and(lo, lambda v: v >= 0) and _finite_and(hi, lambda v: (v > 0) & (v >= lo))):
                raise ValueError(
                    f"VPScheduler needs finite 0 <= beta_min <= beta_max with beta_max > 0, e.g. "
                    f"VPScheduler(beta_min=0.1, beta_max=20.0); got beta_min={self.beta_min}, beta_max={self.beta_max}"
                )

    def _integral(self, t):
        s = 1.0 - t
        return self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s * s

    def alpha_beta(self, t):
        big_t = self._integral(t)
        return jnp.exp(-0.5 * big_t), jnp.sqrt(-jnp.expm1(-big_t))

    def derivatives(self, t):
        t = as_float(t)
        alpha, beta = self.alpha_beta(t)
        rate = self.beta_min + (self.beta_max - self.beta_min) * (1.0 - t)  # T'(s) = -dT/dt
        return alpha, beta, 0.5 * rate * alpha, -0.5 * rate * alpha * alpha / beta


@frozen_pytree(meta=("alpha_fn", "beta_fn", "d_alpha_fn", "d_beta_fn"))
class CustomScheduler(Scheduler):
    r"""A scheduler from two functions ``alpha_fn(t)``, ``beta_fn(t)`` (elementwise, jnp-traceable).

    Derivatives come from ``d_alpha_fn`` / ``d_beta_fn`` when given, otherwise from
    ``jax.jvp``. On construction the boundary conditions
    :math:`\alpha_0 = \beta_1 = 0,\ \alpha_1 = \beta_0 = 1` are checked (tolerance ``1e-6``)
    unless ``check=False``; a violation raises ``ValueError`` naming the condition.
    Functions are compared by identity, so two ``CustomScheduler`` s built from the same
    function objects are equal and hash alike (a valid static ``jit`` argument).
    """

    alpha_fn: Callable
    beta_fn: Callable
    d_alpha_fn: Callable | None = None
    d_beta_fn: Callable | None = None
    check: dataclasses.InitVar[bool] = True

    def __post_init__(self, check):
        if (self.d_alpha_fn is None) != (self.d_beta_fn is None):
            raise ValueError("give both d_alpha_fn and d_beta_fn, or neither")
        if check:
            problems = check_boundary(self)
            if problems:
                raise ValueError("scheduler violates " + "; ".join(problems))

    def alpha_beta(self, t):
        return jnp.asarray(self.alpha_fn(t), t.dtype), jnp.asarray(self.beta_fn(t), t.dtype)

    def derivatives(self, t):
        t = as_float(t)
        if self.d_alpha_fn is None:
            return _jvp_derivatives(self, t)
        alpha, beta = self.alpha_beta(t)
        return alpha, beta, jnp.asarray(self.d_alpha_fn(t), t.dtype), jnp.asarray(self.d_beta_fn(t), t.dtype)


def check_boundary(sched: Callable, atol: float = 1e-6) -> list:
    r"""List the violated boundary conditions :math:`\alpha_0 = \beta_1 = 0,\ \alpha_1 = \beta_0 = 1`.

    Returns an empty list when all four hold within ``atol`` (checked in float32).
    """
    (a0, a1), (b0, b1) = [
        [float(v) for v in jnp.asarray(x, jnp.float32)]
        for x in sched(jnp.asarray([0.0, 1.0], jnp.float32))
    ]
    wanted = {"alpha_0 = 0": (a0, 0.0), "alpha_1 = 1": (a1, 1.0), "beta_0 = 1": (b0, 1.0), "beta_1 = 0": (b1, 0.0)}
    return [
        f"{name} (got {got:.6g})"
        for name, (got, want) in wanted.items()
        if not (math.isfinite(got) and abs(got - want) <= atol)
    ]


NAMES = {
    "linear": LinearScheduler,
    "condot": LinearScheduler,
    "cosine": CosineScheduler,
    "polynomial": PolynomialScheduler,
    "sqrt": SqrtScheduler,
    "linear_vp": LinearVPScheduler,
    "vp": VPScheduler,
}


def get(name: str, **params) -> Scheduler:
    """A built-in scheduler by name (``linear``/``condot``, ``cosine``, ``polynomial``,
    ``sqrt``, ``linear_vp``, ``vp``), with keyword parameters such as ``n=3``."""
    if name not in NAMES:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {sorted(NAMES)}")
    try:
        return NAMES[name](**params)
    except TypeError as err:
        raise ValueError(f"bad parameters {params} for scheduler {name!r}: {err}") from None
