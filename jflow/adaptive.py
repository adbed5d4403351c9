r"""Adaptive ODE solving: embedded Runge-Kutta pairs with a PI step-size controller.

``odeint_adaptive(u, x0, t0, t1)`` integrates :math:`\frac{d}{dt}X_t = u_t(X_t)` from ``t0``
to ``t1`` (either direction) with step sizes chosen so that the local error estimate of
each accepted step stays within ``atol + rtol * |x|``. It is the solver behind the NFE
column of Lipman et al. (2023, Table 1: "NFE with an adaptive solver", dopri5 at
``rtol = atol = 1e-5``), where the number of function evaluations measures how hard a
learned flow is to integrate.

Method (Hairer, Norsett & Wanner, *Solving ODEs I*, II.4 and II.5; Hairer & Wanner IV.2):

- **Dormand-Prince 5(4)** (``"dopri5"``): 7 stages, first-same-as-last (the last stage of
  an accepted step is the first of the next, so a step costs 6 evaluations), 5th-order
  solution, embedded 4th-order one for the error estimate
  :math:`e = h\sum_i (b_i - \hat b_i) k_i`.
- **Error norm**: :math:`\|e\| = \sqrt{\mathrm{mean}\,(e / (atol + rtol\max(|x|, |x_{new}|)))^2}`
  over *every element of the state* (the batch is one system, as in torchdiffeq and
  diffrax on a batched state): one step-size sequence for the whole batch. Under
  ``jax.vmap`` over samples each sample gets its own steps (the loop runs until the last
  one finishes).
- **PI controller** (Gustafsson): accept when :math:`\|e\| \le 1`; the next step is
  :math:`h \cdot \mathrm{clip}(0.9\,\|e\|^{-0.7/5}\,\|e_{prev}\|^{0.4/5}, 0.2, 10)`; after a
  rejection the step shrinks by :math:`\max(0.2, 0.9\|e\|^{-1/5})`.
- **Initial step**: Hairer's heuristic (II.4, one extra evaluation).

Everything runs in one ``lax.while_loop``: jittable and vmappable, the NFE is returned
(it is data dependent, so it is not known before running, unlike :func:`jflow.integrators.odeint`).
Reverse-mode differentiation through ``lax.while_loop`` is not supported by JAX: use
:func:`jflow.integrators.odeint` (fixed grid, ``lax.scan``) when you need gradients.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import check_choice, check_positive_int, is_concrete, working_precision

Array = jax.Array

__all__ = ["EmbeddedTableau", "EMBEDDED_TABLEAUS", "AdaptiveSolution", "odeint_adaptive"]


class EmbeddedTableau(NamedTuple):
    r"""An embedded explicit Runge-Kutta pair :math:`(a, b, \hat b, c)`.

    ``b`` gives the solution of order ``order``, ``b_hat`` the embedded solution of order
    ``order - 1`` used only for the error estimate. ``fsal``: the last stage is evaluated
    at the new point, so it is the first stage of the next step.
    """

    a: tuple
    b: tuple
    b_hat: tuple
    c: tuple
    order: int
    fsal: bool


EMBEDDED_TABLEAUS = {
    "dopri5": EmbeddedTableau(
        a=(
            (),
            (1 / 5,),
            (3 / 40, 9 / 40),
            (44 / 45, -56 / 15, 32 / 9),
            (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
            (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
            (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
        ),
        b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
        b_hat=(5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40),
        c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
        order=5,
        fsal=True,
    ),
}
"""Embedded pairs by name (data, not code)."""

_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0


class AdaptiveSolution(NamedTuple):
    """``x``: the state at ``t1`` (NaN where ``max_steps`` ran out first); ``nfe``: evaluations of ``u``."""

    x: Array
    nfe: Array


class _Carry(NamedTuple):
    t: Array
    x: Array
    k1: Array
    h: Array
    prev_err: Array
    nfe: Array
    steps: Array


def _combine(x, h, ks, coeffs):
    acc = sum(c * k for c, k in zip(coeffs, ks) if c != 0.0)
    return x + h * acc


def _error_norm(err, x, x_new, rtol, atol):
    scale = atol + rtol * jnp.maximum(jnp.abs(x), jnp.abs(x_new))
    return jnp.sqrt(jnp.mean(jnp.square(err / scale)))


def _initial_step(u, t0, x0, f0, direction, order, rtol, atol, args):
    """Hairer's starting step size (Solving ODEs I, II.4): one extra evaluation of ``u``."""
    scale = atol + rtol * jnp.abs(x0)
    d0 = jnp.sqrt(jnp.mean(jnp.square(x0 / scale)))
    d1 = jnp.sqrt(jnp.mean(jnp.square(f0 / scale)))
    h0 = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1)
    f1 = u(x0 + direction * h0 * f0, t0 + direction * h0, *args)
    d2 = jnp.sqrt(jnp.mean(jnp.square((f1 - f0) / scale))) / h0
    h1 = jnp.where(jnp.maximum(d1, d2) <= 1e-15, jnp.maximum(1e-6, h0 * 1e-3),
                   (0.01 / jnp.maximum(d1, d2)) ** (1.0 / order))
    return jnp.minimum(100 * h0, h1)


def _check_inputs(x0, t0, t1, rtol, atol):
    x0 = jnp.asarray(x0)
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        raise ValueError(f"x0 must be a floating array; got dtype {x0.dtype}. Cast it, e.g. x0.astype(jnp.float32).")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if is_concrete(value) and not (np.ndim(value) == 0 and float(value) > 0):
            raise ValueError(f"{name} must be a positive scalar tolerance; got {value!r}")
    if is_concrete(t0) and is_concrete(t1):
        a, b = float(t0), float(t1)
        if not (np.isfinite(a) and np.isfinite(b)) or a == b:
            raise ValueError(f"t0 and t1 must be finite and distinct; got t0={a}, t1={b}")
    return x0


def odeint_adaptive(
    u: Callable,
    x0,
    t0,
    t1,
    *,
    method: str = "dopri5",
    rtol=1e-5,
    atol=1e-5,
    max_steps: int = 4096,
    args: tuple = (),
) -> AdaptiveSolution:
    r"""Integrate :math:`\frac{d}{dt}X_t = u_t(X_t)` from ``X_{t0} = x0`` to ``t1`` with adaptive steps.

    Args:
      u: vector field ``u(x, t, *args)`` with a scalar ``t`` (the :func:`jflow.integrators.odeint`
        convention), returning an array shaped like ``x``.
      x0: initial state, a floating array (batch axis first); one step-size sequence for
        the whole array (see the module docstring). Below float32 (bfloat16, float16) it is
        integrated in float32, tolerances and times included, and returned in its own dtype
        (in bfloat16 the default tolerances could never be met).
      t0, t1: start and end time (``t1 < t0`` integrates backwards, e.g. data to noise);
        may be traced.
      method: ``"dopri5"`` (Dormand-Prince 5(4), :data:`EMBEDDED_TABLEAUS`).
      rtol, atol: relative and absolute tolerance of the local error (may be traced).
      max_steps: bound on attempted steps (accepted + rejected); the loop is a
        ``lax.while_loop``, so this also bounds the run time.
      args: extra arguments of ``u`` (changing their values does not recompile).

    Returns:
      :class:`AdaptiveSolution` ``(x, nfe)``, unpackable as ``x1, nfe = ...``: the state at
      ``t1`` and the number of evaluations of ``u`` (an int32 array; first evaluation and
      initial-step heuristic included). If ``max_steps`` attempts do not reach ``t1`` the
      state is all NaN (never a silently unfinished solve).
    """
    check_choice(method, EMBEDDED_TABLEAUS, "adaptive ODE method")
    max_steps = check_positive_int(max_steps, "max_steps", why="attempted steps before giving up")
    if not isinstance(args, tuple):
        raise ValueError(f"args must be a tuple (passed as u(x, t, *args)); got {type(args).__name__}")
    x0 = _check_inputs(x0, t0, t1, rtol, atol)
    tab = EMBEDDED_TABLEAUS[method]
    out_dtype, x0 = x0.dtype, working_precision(x0)
    dtype = x0.dtype
    t0, t1 = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)
    rtol, atol = jnp.asarray(rtol, dtype), jnp.asarray(atol, dtype)
    direction = jnp.sign(t1 - t0)
    f0 = u(x0, t0, *args)
    if jnp.shape(f0) != x0.shape:
        raise ValueError(f"the vector field must return an array of x's shape {x0.shape}; got {jnp.shape(f0)}")
    h_init = _initial_step(u, t0, x0, f0, direction, tab.order, rtol, atol, args)

    def attempt(c: _Carry):
        h = jnp.minimum(c.h, jnp.abs(t1 - c.t)) * direction
        ks = [c.k1]
        for row, ci in zip(tab.a[1:], tab.c[1:]):
            ks.append(u(_combine(c.x, h, ks, row), c.t + ci * h, *args))
        x_new = _combine(c.x, h, ks, tab.b)
        err = _error_norm(_combine(jnp.zeros_like(c.x), h, ks, np.subtract(tab.b, tab.b_hat)), c.x, x_new, rtol, atol)
        return h, ks, x_new, err

    def body(c: _Carry) -> _Carry:
        h, ks, x_new, err = attempt(c)
        accept = err <= 1.0
        safe_err = jnp.maximum(err, 1e-10)
        pi = _SAFETY * safe_err ** (-0.7 / tab.order) * c.prev_err ** (0.4 / tab.order)
        grow = jnp.clip(pi, _MIN_FACTOR, _MAX_FACTOR)
        shrink = jnp.maximum(_MIN_FACTOR, _SAFETY * safe_err ** (-1.0 / tab.order))
        factor = jnp.where(accept, grow, jnp.minimum(shrink, 1.0))
        # exact arrival: the last accepted step ends on t1 itself
        t_new = jnp.where(jnp.abs(t1 - (c.t + h)) <= 1e-7 * jnp.abs(t1 - t0), t1, c.t + h)
        return _Carry(
            t=jnp.where(accept, t_new, c.t),
            x=jnp.where(accept, x_new, c.x),
            k1=jnp.where(accept, ks[-1], c.k1) if tab.fsal else u(jnp.where(accept, x_new, c.x), c.t, *args),
            h=jnp.abs(h) * factor,
            prev_err=jnp.where(accept, safe_err, c.prev_err),
            nfe=c.nfe + len(tab.c) - (1 if tab.fsal else 0),
            steps=c.steps + 1,
        )

    def unfinished(c: _Carry):
        return (c.t != t1) & (c.steps < max_steps) & jnp.all(jnp.isfinite(c.x))

    start = _Carry(t0, x0, f0, h_init, jnp.asarray(1.0, dtype), jnp.asarray(2, jnp.int32), jnp.asarray(0, jnp.int32))
    end = jax.lax.while_loop(unfinished, body, start)
    x = jnp.where(end.t == t1, end.x, jnp.nan).astype(out_dtype)
    return AdaptiveSolution(x, end.nfe)
