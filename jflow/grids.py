r"""Time grids for the fixed-step integrators: uniform, power-law and EDM.

A grid is a 1-D array of ``n_steps + 1`` strictly monotone times (:func:`check_grid_values`
validates one), ``ts[0]`` where integration starts and ``ts[-1]`` where it ends (flow time: ``0`` noise, ``1`` data).
``n_steps`` is a Python int (it fixes the shape, so a jitted sampler compiles once per
length); the endpoints may be traced arrays. A grid with concrete endpoints is computed
eagerly even inside ``jit`` (``jax.ensure_compile_time_eval``), so it stays a concrete array
there and the samplers can still check it against a field's singular ends.
:mod:`jflow.integrators` re-exports these.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import as_float, is_concrete

Array = jax.Array

__all__ = ["uniform_grid", "power_grid", "edm_grid"]


def _check_steps(n_steps) -> int:
    if not isinstance(n_steps, (int, np.integer)) or isinstance(n_steps, bool) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive Python int (it fixes the grid's shape); got {n_steps!r}")
    return int(n_steps)


def _check_endpoints(t0, t1):
    """Finite and distinct endpoints (checked when concrete; traced endpoints are allowed)."""
    if is_concrete(t0) and is_concrete(t1):
        a, b = float(np.asarray(t0)), float(np.asarray(t1))
        if not (math.isfinite(a) and math.isfinite(b)) or a == b:
            raise ValueError(f"grid endpoints must be finite and distinct; got t0={a}, t1={b}")


def uniform_grid(n_steps: int, t0: float = 0.0, t1: float = 1.0, dtype=None) -> Array:
    """``n_steps + 1`` equally spaced points from ``t0`` to ``t1`` (``t1 < t0`` gives a decreasing grid).

    ``uniform_grid(n)`` is the grid of Algorithm 1 (step ``h = 1/n``). Use
    ``t0 = eps`` or ``t1 = 1 - eps`` to avoid a field's singular endpoint. ``n_steps``
    fixes the shape (a Python int); ``t0`` and ``t1`` may be traced arrays under ``jit``.
    """
    n = _check_steps(n_steps)
    _check_endpoints(t0, t1)
    with jax.ensure_compile_time_eval():
        return jnp.linspace(t0, t1, n + 1, dtype=dtype or jnp.result_type(float))


def power_grid(n_steps: int, rho: float = 2.0, t0: float = 0.0, t1: float = 1.0, dtype=None) -> Array:
    r"""``n_steps + 1`` points from ``t0`` to ``t1`` whose steps shrink towards ``t1``:

    .. math:: t_i = t_0 + (t_1 - t_0)\big(1 - (1 - i/n)^{\rho}\big), \qquad i = 0..n.

    ``t0``, ``t1`` and ``rho`` may be Python or numpy scalars or (traced) JAX arrays.
    ``rho = 1`` is uniform; ``rho > 1`` concentrates steps near ``t1`` (the data end in
    flow time, where learned and exact marginal fields change fastest): the last step is
    :math:`(t_1 - t_0)\,n^{-\rho}`, the first :math:`\approx \rho (t_1 - t_0)/n`. Pass
    ``t1 = 1 - eps`` to stop short of the singular ``t = 1`` of score-based fields.
    """
    n = _check_steps(n_steps)
    _check_endpoints(t0, t1)
    if is_concrete(rho) and not (np.ndim(rho) == 0 and float(np.asarray(rho)) >= 1.0):
        raise ValueError(f"rho must be a scalar >= 1 (1 = uniform grid); got {rho!r}")
    dtype = dtype or jnp.result_type(float)
    with jax.ensure_compile_time_eval():
        s = jnp.linspace(0.0, 1.0, n + 1, dtype=dtype)
        out = t0 + (t1 - t0) * (1.0 - (1.0 - s) ** rho)
        return out.at[-1].set(t1)


def edm_grid(
    n_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0, dtype=None
) -> Array:
    r"""The EDM noise-level grid (Karras et al. 2022) expressed in flow time.

    EDM spaces noise levels as
    :math:`\sigma_i = \big(\sigma_{\max}^{1/\rho} + \tfrac{i}{n}(\sigma_{\min}^{1/\rho} - \sigma_{\max}^{1/\rho})\big)^{\rho}`
    for the process :math:`x = z + \sigma\epsilon`. The CondOT path
    :math:`x_t = t z + (1 - t)\epsilon` is that process scaled by ``t`` with
    :math:`\sigma = (1 - t)/t`, hence :math:`t_i = 1 / (1 + \sigma_i)`: an increasing grid
    from :math:`1/(1+\sigma_{\max})` (close to noise) to :math:`1/(1+\sigma_{\min}) < 1`,
    both endpoints away from the singular times ``0`` and ``1``, steps dense near data.
    """
    n = _check_steps(n_steps)
    if not (0.0 < sigma_min < sigma_max and math.isfinite(sigma_max)) or rho <= 0:
        raise ValueError(
            f"need 0 < sigma_min < sigma_max < inf and rho > 0; got sigma_min={sigma_min}, "
            f"sigma_max={sigma_max}, rho={rho}"
        )
    dtype = dtype or jnp.result_type(float)
    with jax.ensure_compile_time_eval():
        s = jnp.linspace(0.0, 1.0, n + 1, dtype=dtype)
        sig = (sigma_max ** (1 / rho) + s * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
        return 1.0 / (1.0 + sig)


def check_grid_values(ts, dtype) -> Array:
    """Validate a time grid (shape always, values when concrete) and cast it to ``dtype``."""
    ts = as_float(ts)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(
            f"ts must be a 1-D time grid with at least two points; got shape {tuple(ts.shape)}. "
            "Build one with jflow.grids.uniform_grid(n_steps) or power_grid(n_steps)."
        )
    if is_concrete(ts):
        v = np.asarray(ts, dtype=np.float64)
        if not np.isfinite(v).all():
            raise ValueError("ts contains NaN or inf; every grid point must be finite")
        d = np.diff(v)
        if not ((d > 0).all() or (d < 0).all()):
            raise ValueError(
                "ts must be strictly increasing (noise -> data) or strictly decreasing "
                f"(data -> noise); got {v if v.size <= 8 else f'{v[:4]} ... {v[-4:]}'}"
            )
    return ts.astype(dtype)
