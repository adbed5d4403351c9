r"""Log-likelihood of a flow model by the instantaneous change of variables.

Flow time: ``t = 0`` is noise (base density :math:`p_0`, default N(0, I)), ``t = 1`` is
data. Along a trajectory of :math:`\frac{d}{dt}X_t = u_t(X_t)` the continuity equation
gives :math:`\frac{d}{dt}\log p_t(X_t) = -\operatorname{div} u_t(X_t)`, hence

.. math:: \log p_1(x) = \log p_0(X_0) - \int_0^1 \operatorname{div} u_t(X_t)\,dt,
          \qquad X_1 = x.

:func:`log_likelihood` integrates the augmented state :math:`(X_t, a_t)` with
:math:`\dot a_t = \operatorname{div} u_t(X_t)`, :math:`a_1 = 0` backwards over a
decreasing grid from ``t = 1`` to ``t = 0``, and returns
:math:`\log p_0(X_0) + a_0`.

Divergence: ``"exact"`` is the trace of the per-example Jacobian (``jax.jacfwd``, cost
``d`` JVPs; for small ``d``); ``"hutchinson"`` is the unbiased estimator
:math:`\operatorname{div} u \approx \epsilon^\top (\partial u/\partial x)\,\epsilon` with
:math:`E[\epsilon\epsilon^\top] = I` (Rademacher or Gaussian probes, one JVP per probe and
evaluation). The probes are drawn once and kept fixed along the trajectory, so the
estimate is the exact log-likelihood of the ODE for that probe and its expectation is the
exact value up to the integration error.

The field is assumed to act on examples independently (no batch-norm across the batch):
the divergence of example ``b`` only looks at ``u(x)[b]``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import as_float, check_choice, check_positive_int, is_concrete
from jflow.fields import check_grid
from jflow.integrators import odeint

Array = jax.Array

__all__ = ["standard_normal_log_prob", "divergence_exact", "divergence_hutchinson", "log_likelihood", "bits_per_dim"]

DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


def standard_normal_log_prob(x: Array) -> Array:
    r""":math:`\log \mathcal N(x; 0, I) = -\frac12\|x\|^2 - \frac d2\log 2\pi`, summed over the trailing axes (shape ``(B,)``).

    Summed in float32 at least (a half-precision :math:`\|x\|^2` overflows for large ``d``).
    """
    x = as_float(x)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    axes = tuple(range(1, x.ndim))
    d = int(np.prod(x.shape[1:]))
    return -0.5 * jnp.sum(x * x, axis=axes) - 0.5 * d * math.log(2 * math.pi)


def _value_and_div_exact(u: Callable, x: Array, t, args: tuple):
    """``(u(x), div u(x))`` from one ``jacfwd`` per example (the primal comes back as aux)."""

    def one(xi):
        def flat(v):
            out = u(v.reshape((1,) + xi.shape), t, *args).reshape(xi.shape)
            return out.reshape(-1), out

        jac, out = jax.jacfwd(flat, has_aux=True)(xi.reshape(-1))
        return out, jnp.trace(jac)

    return jax.vmap(one)(x)


def _value_and_div_hutchinson(u: Callable, x: Array, t, probe: Array, args: tuple):
    """``(u(x), mean_p eps_p^T J eps_p)`` with one JVP per probe (the primal comes with it)."""
    axes = tuple(range(1, x.ndim))

    def one(eps):
        out, jvp = jax.jvp(lambda v: u(v, t, *args), (x,), (eps,))
        return out, jnp.sum(eps * jvp, axis=axes)

    outs, est = jax.vmap(one)(probe)
    return outs[0], jnp.mean(est, axis=0)


def divergence_exact(u: Callable, x: Array, t, *args) -> Array:
    r"""Exact :math:`\operatorname{div} u_t(x) = \operatorname{tr}\,\partial u_t(x)/\partial x` per example, shape ``(B,)``.

    Builds the ``d x d`` Jacobian of each example with ``jax.jacfwd`` (``vmap`` over the
    batch, ``d`` = product of the trailing axes): use for small ``d``.
    """
    return _value_and_div_exact(u, jnp.asarray(x), t, args)[1]


def divergence_hutchinson(u: Callable, x: Array, t, probe: Array, *args) -> Array:
    r"""Hutchinson estimate :math:`\epsilon^\top \frac{\partial u_t}{\partial x}(x)\,\epsilon` per example, shape ``(B,)``.

    ``probe`` has shape ``(P, *x.shape)`` (``P`` probes, averaged) with
    :math:`E[\epsilon\epsilon^\top] = I`. One forward-mode JVP per probe on the whole batch.
    """
    x = jnp.asarray(x)
    probe = jnp.asarray(probe)
    if probe.shape[1:] != x.shape:
        raise ValueError(f"probe must have shape (P, *x.shape) = (P, {x.shape}); got {probe.shape}")
    return _value_and_div_hutchinson(u, x, t, probe, args)[1]


def _draw_probes(key, kind, n_probes, shape, dtype):
    full = (n_probes,) + tuple(shape)
    if kind == "rademacher":
        return jax.random.rademacher(key, full, dtype=dtype)
    return jax.random.normal(key, full, dtype=dtype)


def log_likelihood(
    u: Callable,
    x: Array,
    ts,
    *,
    method: str = "rk4",
    divergence: str = "exact",
    key: Optional[Array] = None,
    probe: str = "rademacher",
    n_probes: int = 1,
    base_log_prob: Callable = standard_normal_log_prob,
    args: tuple = (),
) -> Array:
    r"""Log-density :math:`\log p_1(x)` of data ``x`` under the flow of ``u`` (instantaneous change of variables).

    Integrates :math:`\frac{d}{dt}(X_t, a_t) = (u_t(X_t), \operatorname{div}u_t(X_t))` from
    :math:`(x, 0)` at ``ts[0]`` to ``ts[-1]`` and returns
    :math:`\log p_0(X_{ts[-1]}) + a_{ts[-1]}`, i.e.
    :math:`\log p_1(x) = \log p_0(X_0) - \int_0^1 \operatorname{div} u_t(X_t)\,dt`.

    Args:
      u: vector field ``u(x, t, *args)`` with scalar ``t`` (flow time, 0 noise, 1 data).
      x: data, shape ``(B, ...)``.
      ts: **decreasing** grid from data to noise, normally from 1 to 0, e.g.
        ``uniform_grid(n, 1.0, 0.0)``; start below 1 if ``u`` is singular at ``t = 1``
        (the result is then the log-density of ``p_{ts[0]}``), end above 0 if it is
        singular at ``t = 0`` (a velocity from a score or noise model: then ``X_{ts[-1]}``
        is taken as a sample of ``p_0``). Outside ``jit`` a concrete grid on which
        ``method`` evaluates a converted field (:func:`jflow.sampling.as_velocity`) where it
        is singular raises ``ValueError`` with the grid to use; under ``jit`` with a traced
        grid the result is NaN.
      method: ODE method of :func:`jflow.integrators.odeint` (default ``"rk4"``).
      divergence: ``"exact"`` (jacfwd, small ``d``) or ``"hutchinson"`` (needs ``key``).
      key: PRNG key for the Hutchinson probes, drawn once and fixed along the trajectory.
      probe: ``"rademacher"`` or ``"gaussian"``; ``n_probes``: probes averaged per example.
      base_log_prob: :math:`\log p_0` of a batch, default :func:`standard_normal_log_prob`.
      args: extra arguments for ``u`` (e.g. parameters), no recompilation when they change.

    Returns:
      ``(B,)`` log-densities (nats), in ``x``'s float dtype, float32 at least (a float16 or
      bfloat16 ``x`` is integrated in float32).
    """
    check_choice(divergence, DIVERGENCES, "divergence")
    check_choice(probe, PROBES, "probe")
    x = as_float(x)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # integrate in float32 at least
    if x.ndim < 2:
        raise ValueError(f"x must have a batch axis and at least one data axis, shape (B, ...); got {x.shape}")
    if is_concrete(ts):
        grid = np.asarray(ts, dtype=np.float64)
        if grid.ndim == 1 and grid.shape[0] >= 2 and not grid[0] > grid[-1]:
            raise ValueError(
                "ts must decrease from data (t=1) to noise (t=0), e.g. uniform_grid(n, 1.0, 0.0); "
                f"got ts[0]={grid[0]}, ts[-1]={grid[-1]}"
            )
    check_grid(u, ts, method, x.dtype, caller="log_likelihood", name="u")
    if divergence == "exact":
        value_and_div = lambda y, t: _value_and_div_exact(u, y, t, args)
    else:
        if key is None:
            raise ValueError("divergence='hutchinson' needs a PRNG key: log_likelihood(..., key=key)")
        n_probes = check_positive_int(n_probes, "n_probes", why="probes averaged per example")
        eps = _draw_probes(key, probe, n_probes, x.shape, x.dtype)
        value_and_div = lambda y, t: _value_and_div_hutchinson(u, y, t, eps, args)

    def augmented(state, t):
        value, div = value_and_div(state[0], t)
        return value, div.astype(x.dtype)

    state0 = (x, jnp.zeros(x.shape[:1], x.dtype))
    x0, acc = odeint(augmented, state0, ts, method=method)
    return base_log_prob(x0) + acc


def bits_per_dim(
    u: Callable,
    x_int: Array,
    ts,
    *,
    key: Array,
    n_bins: int = 256,
    data_range=(-1.0, 1.0),
    **kwargs,
) -> Array:
    r"""Bits per dimension of integer images under the flow, with uniform dequantisation.

    Pixels :math:`x \in \{0, \dots, K-1\}^D` (``K = n_bins``) are dequantised as
    :math:`y = (x + v)/K`, :math:`v \sim U[0, 1)^D`, and mapped affinely to the model's data
    range, :math:`z = lo + (hi - lo) y`. Since the discrete probability is at least the
    dequantised density integrated over the unit cube (Jensen),

    .. math:: \log P(x) \ge \log p_1(z) + D\log(hi - lo) - D\log K, \qquad
              \text{bpd} = -\frac{\log p_1(z) + D\log(hi - lo) - D\log K}{D\log 2},

    an upper bound on the true bits per dimension (one dequantisation sample per image).
    ``key`` draws the dequantisation noise and, if ``divergence="hutchinson"``, the
    probes; other keyword arguments go to :func:`log_likelihood`. Returns ``(B,)``.
    """
    if key is None:
        raise ValueError("bits_per_dim needs a PRNG key for the dequantisation noise")
    n_bins = check_positive_int(n_bins, "n_bins", minimum=2, why="pixel values 0..n_bins-1")
    x_int = jnp.asarray(x_int)
    if is_concrete(x_int):
        v = np.asarray(x_int)
        if v.size and (np.isnan(v).any() or v.min() < 0 or v.max() > n_bins - 1 or not np.all(v == np.round(v))):
            raise ValueError(f"x_int must hold integer pixel values in [0, {n_bins - 1}]; got range [{v.min()}, {v.max()}]")
    lo, hi = (float(v) for v in data_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(f"data_range must be finite (lo, hi) with hi > lo; got {data_range}")
    dtype = jnp.result_type(float)
    k_deq, k_probe = jax.random.split(key)
    y = (x_int.astype(dtype) + jax.random.uniform(k_deq, x_int.shape, dtype)) / n_bins
    z = lo + (hi - lo) * y
    if kwargs.get("divergence") == "hutchinson":
        kwargs.setdefault("key", k_probe)
    logp = log_likelihood(u, z, ts, **kwargs)
    d = int(np.prod(x_int.shape[1:]))
    return -(logp + d * math.log(hi - lo) - d * math.log(n_bins)) / (d * math.log(2.0))
