r"""Diffusion samplers in log-SNR time: DDIM, ancestral DDPM and DPM-Solver++(2M).

For a Gaussian path :math:`x_t = \alpha_t z + \beta_t \epsilon` (flow time: ``t = 0`` noise,
``t = 1`` data) write :math:`\lambda_t = \log(\alpha_t / \beta_t)` (half the log
signal-to-noise ratio; it increases from :math:`-\infty` at ``t = 0`` to :math:`+\infty` at
``t = 1``). The probability-flow ODE in data-prediction form,
:math:`\frac{dx}{d\lambda} = \frac{\dot\beta}{\beta}\frac{dt}{d\lambda}x + \ldots`, has the exact
solution (Lu et al. 2022, DPM-Solver++, eq. 8), from ``t`` to ``s > t`` with
:math:`h = \lambda_s - \lambda_t`,

.. math:: x_s = \frac{\beta_s}{\beta_t} x_t + \alpha_s \int_{\lambda_t}^{\lambda_s} e^{-(\lambda_s - \lambda)}\,\hat z_\lambda\,d\lambda,

where :math:`\hat z = E[z \mid x_t]` is the data prediction. The linear part is integrated
exactly, which is why these samplers do not amplify a network's error near the noise end
the way stepping the converted velocity in ``t`` does (that conversion divides by
:math:`\alpha_t`). Approximating :math:`\hat z` by a constant on the step gives the
first-order exponential integrator

.. math:: x_s = \frac{\beta_s}{\beta_t} x_t + \alpha_s\,(1 - e^{-h})\,\hat z_t
              = \alpha_s \hat z_t + \beta_s \hat\epsilon_t,

which is DDIM (Song et al. 2021, eta = 0; the lectures: "DDIM ~ probability flow ODE"),
with :math:`\hat\epsilon_t = (x_t - \alpha_t\hat z_t)/\beta_t`. A linear approximation of
:math:`\hat z` through the previous step's prediction gives DPM-Solver++(2M), second order
with one network evaluation per step. DDIM with ``eta > 0`` adds fresh noise; ``eta = 1``
is exactly ancestral DDPM sampling from the Gaussian posterior :math:`q(x_s \mid x_t, \hat z_t)`.

Every sampler takes the model as ``fn(x, t, *args)`` (scalar ``t``), the scheduler, and the
parameterisation the model predicts (``velocity``, ``score``, ``noise``, ``data``); the data
and noise predictions come from :func:`jflow.paths.convert`. All are one ``lax.scan`` over an
increasing grid ``ts`` in ``[0, 1]``, jittable and vmappable, with exactly ``len(ts) - 1``
network evaluations (never at ``ts[-1]``, so a grid may end at ``t = 1``). A grid may start at
``t = 0`` only for velocity and data models: a noise or score prediction at pure noise holds
no information about the data (:math:`\hat z = (x - \beta\hat\epsilon)/\alpha` with
:math:`\alpha_0 = 0`); outside ``jit`` such a grid raises, under ``jit`` it gives NaN.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jflow import paths
from jflow._checks import as_float, check_choice, is_concrete, working_precision

Array = jax.Array

__all__ = ["ddim", "ddpm_ancestral", "dpm_solver_pp", "denoised_and_noise", "check_sampling_grid"]

_NEEDS_ALPHA = ("noise", "score")


def check_sampling_grid(ts, sched, parameterization: str, *, sampler: str):
    """Validate an increasing flow-time grid in ``[0, 1]`` for ``sampler`` (values only outside ``jit``).

    Raises ``ValueError`` for a grid that is not 1-D with >= 2 points, not strictly
    increasing within ``[0, 1]``, or that starts where ``alpha_t = 0`` while the model
    predicts noise or a score.
    """
    check_choice(parameterization, paths.PARAMETERIZATIONS, "parameterization")
    ts = as_float(ts)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"{sampler}: ts must be a 1-D grid with >= 2 points; got shape {tuple(ts.shape)}")
    if not is_concrete(ts):
        return ts
    v = np.asarray(ts, np.float64)
    if not (np.all(np.isfinite(v)) and np.all(np.diff(v) > 0) and v[0] >= 0 and v[-1] <= 1):
        raise ValueError(
            f"{sampler}: ts must increase strictly from noise to data within [0, 1] (flow time); "
            f"got {v if v.size <= 6 else f'{v[:3]} ... {v[-3:]}'}"
        )
    if parameterization in _NEEDS_ALPHA and first_alpha(sched, ts) <= 0:
        raise ValueError(
            f"{sampler}: the grid starts at t={v[0]:g} where alpha_t = 0, and a {parameterization} "
            "prediction holds no information about the data there; start later, e.g. "
            "uniform_grid(n, t0=1e-3), or sample a velocity or data model"
        )
    return ts


def first_alpha(sched, ts) -> float:
    """``alpha`` at a concrete grid's first point, evaluated eagerly even inside a ``jit`` trace."""
    with jax.ensure_compile_time_eval():
        return float(sched(jnp.asarray(ts)[:1])[0][0])


def denoised_and_noise(fn: Callable, sched, parameterization: str, x, t, args: tuple = ()):
    r"""The model's data and noise predictions :math:`(\hat z, \hat\epsilon)` at ``(x, t)``, scalar ``t``.

    They satisfy :math:`x = \alpha_t\hat z + \beta_t\hat\epsilon`. Finite wherever the conversion
    is (:func:`jflow.paths.convert`): a velocity model everywhere but ``t = 1``, a data model
    for :math:`\beta_t > 0`, a noise or score model for :math:`\alpha_t > 0`.
    """
    out = fn(x, t, *args)
    if jnp.shape(out) != jnp.shape(x):
        raise ValueError(f"fn must return an array of x's shape {jnp.shape(x)}; got {jnp.shape(out)}")
    z_hat = paths.convert(sched, out, x, t, source=parameterization, target="data")
    eps_hat = paths.convert(sched, out, x, t, source=parameterization, target="noise")
    return z_hat, eps_hat


def _coefficients(sched, t, s):
    """``alpha_t, beta_t, alpha_s, beta_s`` and ``r = e^{-h} = alpha_t beta_s / (beta_t alpha_s)``."""
    (a_t, b_t), (a_s, b_s) = sched(t), sched(s)
    r = jnp.where(a_t * b_s == 0, 0.0, a_t * b_s / jnp.where(b_t * a_s == 0, 1.0, b_t * a_s))
    return a_t, b_t, a_s, b_s, r


def ddim(
    fn: Callable,
    sched,
    parameterization: str,
    x0,
    ts,
    *,
    eta=0.0,
    key: Optional[Array] = None,
    args: tuple = (),
) -> Array:
    r"""DDIM (Song et al. 2021) in flow time: from ``x0`` at ``ts[0]`` to ``ts[-1]``, one evaluation per step.

    Each step ``t -> s`` computes :math:`(\hat z, \hat\epsilon)` (:func:`denoised_and_noise`) and

    .. math:: x_s = \alpha_s\hat z + \sqrt{\beta_s^2 - c^2}\,\hat\epsilon + c\,\xi, \qquad
              c = \eta\,\beta_s\sqrt{1 - e^{-2h}}, \quad e^{-h} = \frac{\alpha_t\beta_s}{\beta_t\alpha_s},

    :math:`\xi \sim N(0, I)`. ``eta = 0`` is the deterministic first-order exponential
    integrator of the probability-flow ODE (equal to :func:`dpm_solver_pp` with
    ``order=1``); ``eta = 1`` is ancestral DDPM (:func:`ddpm_ancestral`). For a VP path
    :math:`c^2` is DDIM's :math:`\sigma_t^2(\eta) = \eta^2\frac{1-\bar\alpha_s}{1-\bar\alpha_t}(1 - \bar\alpha_t/\bar\alpha_s)`.

    Args:
      fn: the model ``fn(x, t, *args)`` (scalar flow time ``t``).
      sched: the path's scheduler ``t -> (alpha_t, beta_t)``.
      parameterization: what ``fn`` predicts: ``velocity``, ``score``, ``noise`` or ``data``.
      x0: samples at ``ts[0]`` (``N(0, I)`` for ``ts[0] = 0``), batch axis first. Below
        float32 (bfloat16, float16) it is sampled in float32 and returned in its own dtype,
        as in :func:`jflow.integrators.odeint` (also in :func:`dpm_solver_pp`).
      ts: increasing flow-time grid in ``[0, 1]``; see the module docstring for ``ts[0] = 0``.
      eta: noise level in ``[0, 1]`` (may be a traced array; ``eta > 0`` needs ``key``).
      key: PRNG key for ``eta > 0``; step ``i`` uses ``fold_in(key, i)``.
      args: extra arguments of ``fn``.
    """
    ts = check_sampling_grid(ts, sched, parameterization, sampler="ddim")
    x0 = jnp.asarray(x0)
    out_dtype, x0 = x0.dtype, working_precision(x0)
    eta = as_float(eta).astype(x0.dtype)
    if is_concrete(eta):
        if eta.ndim != 0 or not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"ddim: eta must be a scalar in [0, 1] (0 deterministic, 1 ancestral DDPM); got {eta}")
        if float(eta) > 0 and key is None:
            raise ValueError("ddim: eta > 0 draws fresh noise each step; pass key=jax.random.PRNGKey(...)")
    key = jax.random.PRNGKey(0) if key is None else key
    ts = ts.astype(x0.dtype)

    def step(x, inp):
        i, t, s = inp
        z_hat, eps_hat = denoised_and_noise(fn, sched, parameterization, x, t, args)
        _, _, a_s, b_s, r = _coefficients(sched, t, s)
        c = eta * b_s * jnp.sqrt(jnp.maximum(1.0 - r * r, 0.0))
        keep = jnp.sqrt(jnp.maximum(b_s * b_s - c * c, 0.0))
        noise = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
        return (a_s * z_hat + keep * eps_hat + c * noise).astype(x.dtype), None

    idx = jnp.arange(ts.shape[0] - 1)
    return jax.lax.scan(step, x0, (idx, ts[:-1], ts[1:]))[0].astype(out_dtype)


def ddpm_ancestral(fn: Callable, sched, parameterization: str, x0, ts, *, key: Array, args: tuple = ()) -> Array:
    r"""Ancestral DDPM sampling (Ho et al. 2020) on any Gaussian path: :func:`ddim` with ``eta = 1``.

    Each step samples the Gaussian posterior of the path between the grid points given the
    data prediction, :math:`x_s \sim q(x_s \mid x_t, z = \hat z_t)` with (``s > t`` in flow time,
    :math:`\alpha_{t|s} = \alpha_t/\alpha_s`, :math:`\beta_{t|s}^2 = \beta_t^2 - \alpha_{t|s}^2\beta_s^2`)

    .. math:: \mu = \frac{\alpha_s\beta_{t|s}^2}{\beta_t^2}\hat z + \frac{\alpha_{t|s}\beta_s^2}{\beta_t^2}x_t,
              \qquad \Sigma = \frac{\beta_s^2\beta_{t|s}^2}{\beta_t^2} I,

    which equals DDIM's step at ``eta = 1`` term by term. On a VP path and the DDPM grid this
    is Algorithm 2 of Ho et al.
    """
    return ddim(fn, sched, parameterization, x0, ts, eta=1.0, key=key, args=args)


def dpm_solver_pp(fn: Callable, sched, parameterization: str, x0, ts, *, order: int = 2, args: tuple = ()) -> Array:
    r"""DPM-Solver++ (Lu et al. 2022) with data prediction: ``order=1`` (= DDIM) or the multistep ``order=2`` (2M).

    Step ``i`` from :math:`t_{i-1}` to :math:`t_i`, :math:`h_i = \lambda_{t_i} - \lambda_{t_{i-1}}`:

    .. math:: x_i = \frac{\beta_{t_i}}{\beta_{t_{i-1}}}x_{i-1} + \alpha_{t_i}(1 - e^{-h_i})\,D_i,\qquad
              D_i = \Big(1 + \frac{1}{2r_i}\Big)\hat z_{i-1} - \frac{1}{2r_i}\hat z_{i-2},\quad r_i = \frac{h_{i-1}}{h_i},

    with :math:`D_i = \hat z_{i-1}` for ``order=1``, on the first step, and wherever
    :math:`h_{i-1}` or :math:`h_i` is infinite (a step from ``t = 0`` or to ``t = 1``: those
    steps are first order). One network evaluation per step, global order ``order`` on a
    grid away from both ends (tested against exact Gaussian-mixture fields).
    """
    if order not in (1, 2):
        raise ValueError(f"dpm_solver_pp: order must be 1 or 2 (2 = DPM-Solver++(2M)); got {order!r}")
    ts = check_sampling_grid(ts, sched, parameterization, sampler="dpm_solver_pp")
    x0 = jnp.asarray(x0)
    out_dtype, x0 = x0.dtype, working_precision(x0)
    ts = ts.astype(x0.dtype)

    def lam(t):
        alpha, beta = sched(t)
        return jnp.log(alpha) - jnp.log(beta)

    def step(carry, inp):
        x, z_prev, h_prev = carry
        t, s = inp
        z_hat, _ = denoised_and_noise(fn, sched, parameterization, x, t, args)
        a_t, b_t, a_s, b_s, r = _coefficients(sched, t, s)
        h = lam(s) - lam(t)
        second = (order == 2) & jnp.isfinite(h) & jnp.isfinite(h_prev)
        w = jnp.where(second, h / (2.0 * jnp.where(second, h_prev, 1.0)), 0.0)
        d = z_hat + w * (z_hat - z_prev)
        ratio = jnp.where(b_t == 0, 0.0, b_s / jnp.where(b_t == 0, 1.0, b_t))
        x_new = ratio * x + a_s * (1.0 - r) * d
        return (x_new.astype(x.dtype), z_hat.astype(x.dtype), h), None

    init = (x0, jnp.zeros_like(x0), jnp.asarray(jnp.inf, x0.dtype))
    return jax.lax.scan(step, init, (ts[:-1], ts[1:]))[0][0].astype(out_dtype)

