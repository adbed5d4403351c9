r"""Predictor-corrector sampling for score models (Song et al. 2021, Algorithms 1-3 of "Score-based
generative modeling through SDEs"), in flow time.

A Gaussian path :math:`x_t = \alpha_t z + \beta_t\epsilon` is the time reversal of the forward
diffusion with squared diffusion coefficient, in flow time (``t = 0`` noise, ``t = 1`` data),

.. math:: g_t^2 = 2\beta_t^2\,\dot\lambda_t, \qquad \lambda_t = \log(\alpha_t/\beta_t),

and the lectures' SDE extension trick with :math:`\sigma_t = g_t`,

.. math:: dX_t = \Big[u_t(X_t) + \frac{g_t^2}{2}\nabla\log p_t(X_t)\Big]dt + g_t\,dW_t,

is the reverse-time SDE of score-based diffusion (its drift is
:math:`2(\beta_t^2\dot\alpha_t/\alpha_t - \beta_t\dot\beta_t)\,s + (\dot\alpha_t/\alpha_t)\,x`).
Each grid step ``t -> t'`` first runs ``n_corrector`` Langevin steps at ``t`` (the corrector,
Song et al. Algorithm 4),

.. math:: x \leftarrow x + \varepsilon\,s_t(x) + \sqrt{2\varepsilon}\,\xi,\qquad
          \varepsilon = 2\Big(\mathrm{snr}\,\frac{\overline{\|\xi\|}}{\overline{\|s_t(x)\|}}\Big)^2

(norms per example, averaged over the batch as in Song et al.'s code: with per-example
norms a point where the score nearly vanishes, e.g. at a mode of a low-dimensional
density, would take an unbounded step; so the step size depends on the batch), then one
predictor step: Euler-Maruyama of the reverse SDE (``predictor="sde"``) or Euler of the
probability-flow ODE (``predictor="ode"``). The last predictor step adds no noise (Song et
al.'s "denoise at the end"). The score is :func:`jflow.paths.convert` of the model's output,
so any parameterisation works; the velocity and the reverse drift divide by
:math:`\alpha_t`, so the grid must start after ``t = 0`` for every parameterisation.
Network evaluations: ``(len(ts) - 1) * (1 + n_corrector)``.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jflow import paths
from jflow._checks import as_float, check_choice, check_positive_int, is_concrete, working_precision
from jflow.exponential import check_sampling_grid, first_alpha
from jflow.schedulers import derivatives

Array = jax.Array

__all__ = ["PREDICTORS", "predictor_corrector", "reverse_diffusion_coefficient"]

PREDICTORS = ("sde", "ode")


def reverse_diffusion_coefficient(sched, t) -> Array:
    r""":math:`g_t = \beta_t\sqrt{2\dot\lambda_t} = \sqrt{2(\beta_t^2\dot\alpha_t/\alpha_t - \beta_t\dot\beta_t)}`, the diffusion
    coefficient whose reverse SDE has the path's marginals (infinite at ``t = 0``, zero at ``t = 1``)."""
    alpha, beta, d_alpha, d_beta = derivatives(sched, t)
    return jnp.sqrt(2.0 * jnp.maximum(beta * beta * d_alpha / alpha - beta * d_beta, 0.0))


def _mean_norm(a):
    """Batch mean of the per-example Euclidean norms."""
    return jnp.mean(jnp.sqrt(jnp.sum(jnp.square(a), axis=tuple(range(1, a.ndim)))))


def predictor_corrector(
    fn: Callable,
    sched,
    parameterization: str,
    x0,
    ts,
    *,
    key: Array,
    snr=0.16,
    n_corrector: int = 1,
    predictor: str = "sde",
    args: tuple = (),
) -> Array:
    """Sample with a predictor and ``n_corrector`` Langevin corrector steps per grid step (module docstring).

    Args:
      fn: the model ``fn(x, t, *args)``, scalar flow time ``t``; predicts ``parameterization``.
      sched: the path's scheduler.
      parameterization: ``score`` (the usual case), ``noise``, ``data`` or ``velocity``.
      x0: samples at ``ts[0]`` (``N(0, I)``), batch axis first; below float32 it is sampled
        in float32 and returned in its own dtype.
      ts: increasing flow-time grid in ``(0, 1]``.
      key: PRNG key; grid step ``i`` uses ``fold_in(key, i)``.
      snr: the corrector's signal-to-noise ratio (Song et al. use 0.16 on CIFAR-10, 0.075
        on CelebA-HQ); may be a traced array. ``n_corrector=0`` turns the corrector off.
      predictor: ``"sde"`` (reverse SDE, Euler-Maruyama) or ``"ode"`` (probability flow, Euler).
    """
    check_choice(predictor, PREDICTORS, "predictor")
    n_corrector = check_positive_int(n_corrector, "n_corrector", minimum=0)
    ts = check_sampling_grid(ts, sched, parameterization, sampler="predictor_corrector")
    if is_concrete(ts) and first_alpha(sched, ts) <= 0:
        raise ValueError(
            "predictor_corrector: the reverse drift divides by alpha_t, which is 0 at the grid's "
            "first point; start later, e.g. uniform_grid(n, t0=1e-3)"
        )
    x0 = jnp.asarray(x0)
    out_dtype, x0 = x0.dtype, working_precision(x0)
    snr = as_float(snr).astype(x0.dtype)
    if is_concrete(snr) and not float(snr) > 0:
        raise ValueError(f"predictor_corrector: snr must be > 0; got {float(snr)}")
    ts = ts.astype(x0.dtype)
    last = ts.shape[0] - 2

    def score(x, t):
        return paths.convert(sched, fn(x, t, *args), x, t, source=parameterization, target="score")

    def corrector(x, key, t):
        def one(x, k):
            s = score(x, t)
            xi = jax.random.normal(k, x.shape, x.dtype)
            eps = 2.0 * jnp.square(snr * _mean_norm(xi) / jnp.maximum(_mean_norm(s), 1e-12))
            return x + eps * s + jnp.sqrt(2.0 * eps) * xi, None

        return jax.lax.scan(one, x, jax.random.split(key, n_corrector))[0] if n_corrector else x

    def step(x, inp):
        i, t, t_next = inp
        k_corr, k_pred = jax.random.split(jax.random.fold_in(key, i))
        x = corrector(x, k_corr, t)
        s = score(x, t)
        u = paths.convert(sched, s, x, t, source="score", target="velocity")
        h = t_next - t
        if predictor == "ode":
            return (x + h * u).astype(x.dtype), None
        g = reverse_diffusion_coefficient(sched, t)
        noise = jnp.where(i == last, 0.0, g * jnp.sqrt(h)) * jax.random.normal(k_pred, x.shape, x.dtype)
        return (x + h * (u + 0.5 * g * g * s) + noise).astype(x.dtype), None

    idx = jnp.arange(ts.shape[0] - 1)
    return jax.lax.scan(step, x0, (idx, ts[:-1], ts[1:]))[0].astype(out_dtype)
