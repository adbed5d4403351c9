r"""The ablation's samplers as a registry, and the shared time grid.

A trained network is turned into its velocity and score by the closed-form conversions of
:func:`jflow.sampling.as_velocity` / :func:`jflow.sampling.as_score` (:class:`Fields`); each
entry of :data:`SAMPLERS` builds, from those fields, one compiled program that samples every
seed at once (``vmap``) and, for a deterministic sampler, the program of its negative
log-likelihood. A new sampler is one more entry.

One compiled program per (method, path, sampler) serves every step count: the grid of ``n``
steps is padded to the largest count with points just past its end (spacing
``delta = t_eps / (2 * max_steps)``, so they stay inside ``(1 - t_eps, 1 - t_eps / 2)``), and
outside the window ``[t_start - delta/2, t_end + delta/2]`` the drift and sigma are switched
off by ``lax.cond``: a padded step leaves the state exactly unchanged and costs no network
evaluation (the predicate depends on t only, so it stays a real branch under vmap).
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jflow import metrics as jmetrics
from jflow import schedulers
from jflow.integrators import num_evals, sdeint, uniform_grid
from jflow.sampling import as_score, as_velocity, sample_ode, sde_extension_drift


class Fields(NamedTuple):
    """A trained network as fields: ``velocity(x, t, params)`` and ``score(x, t, params)`` on path ``sched``."""

    sched: Callable
    velocity: Callable
    score: Callable


def model_fields(model, parameterization: str, scheduler: str) -> Fields:
    """The network ``model`` (predicting ``parameterization`` on the path ``scheduler``) as :class:`Fields`."""
    sched = schedulers.get(scheduler)

    def net(x, t, params):
        return model.apply(params, x, t)

    return Fields(sched, as_velocity(net, sched, parameterization), as_score(net, sched, parameterization))


def gate(f: Callable) -> Callable:
    """``g(x, t, params, window, *rest)``: ``f(x, t, params, *rest)`` inside ``window = [lo, hi]``, else 0."""

    def g(x, t, params, window, *rest):
        active = (t >= window[0]) & (t <= window[1])
        return jax.lax.cond(active, lambda: f(x, t, params, *rest), lambda: jnp.zeros_like(x))

    return g


class Sampler(NamedTuple):
    """One sampler: ``build(fields)`` returns its compiled program
    ``(params (R, ...), x0 (R, N, d), ts, window, sigma, keys (R, 2)) -> (R, len(ts), N, d)`` trajectories;
    ``nfe(n)`` is its number of network evaluations for ``n`` steps; ``build_likelihood(fields)``
    (deterministic samplers) returns ``(params, x, ts_decreasing, window) -> (R,)`` mean NLL; a
    ``stochastic`` sampler is run once per ``sigma`` of the config (a deterministic one at 0);
    ``short``: its name in figures (default: the registry name)."""

    build: Callable[[Fields], Callable]
    nfe: Callable[[int], int]
    build_likelihood: Optional[Callable[[Fields], Callable]] = None
    stochastic: bool = False
    short: Optional[str] = None


def _ode(method: str, fields: Fields) -> Callable:
    """The flow ODE :math:`dX_t = u_t(X_t) dt` (Algorithm 1) by ``method`` (``jflow.sampling.sample_ode``)."""
    u = gate(fields.velocity)

    def one(params, x0, ts, window):
        return sample_ode(u, x0, ts, method=method, trajectory=True, args=(params, window))

    program = jax.jit(jax.vmap(one, in_axes=(0, 0, None, None)))
    return lambda params, x0, ts, window, sigma, keys: program(params, x0, ts, window)


def _ode_likelihood(method: str, fields: Fields) -> Callable:
    """NLL by the instantaneous change of variables (exact divergence, 2-D), integrated by ``method``."""
    u = gate(fields.velocity)

    def one(params, x, ts, window):
        return jmetrics.negative_log_likelihood(u, x, ts, method=method, divergence="exact", args=(params, window))

    return jax.jit(jax.vmap(one, in_axes=(0, None, None, None)))


def _euler_maruyama(fields: Fields) -> Callable:
    r"""Euler-Maruyama of the SDE extension trick (lecture 2),
    :math:`dX_t = [u_t(X_t) + \frac{\sigma^2}{2}\nabla\log p_t(X_t)] dt + \sigma dW_t`
    (``jflow.sampling.sde_extension_drift``), constant ``sigma`` (an array argument: no
    recompilation per value)."""

    def extension_drift(x, t, params, sigma):
        return sde_extension_drift(fields.velocity, fields.score, sigma)(x, t, params)

    drift = gate(extension_drift)

    def sigma_fn(t, params, window, sigma):
        return jnp.where((t >= window[0]) & (t <= window[1]), sigma, jnp.zeros_like(sigma))

    def one(params, x0, ts, window, sigma, key):
        return sdeint(drift, sigma_fn, x0, ts, key=key, trajectory=True, args=(params, window, sigma))

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None, None, None, 0)))


def _ode_sampler(method: str) -> Sampler:
    return Sampler(functools.partial(_ode, method), functools.partial(num_evals, method),
                   functools.partial(_ode_likelihood, method))


#: sampler name -> how to build and count it.
SAMPLERS = {
    "euler": _ode_sampler("euler"),
    "heun": _ode_sampler("heun"),
    "euler_maruyama": Sampler(_euler_maruyama, functools.partial(num_evals, "euler_maruyama"), stochastic=True,
                              short="EM"),
}


def sample_grid(cfg, n_steps: int) -> jax.Array:
    """The sampling grid shared by all methods: ``n_steps`` uniform steps on ``[t_eps, 1 - t_eps]``."""
    return uniform_grid(n_steps, cfg.t_eps, 1.0 - cfg.t_eps, dtype=jnp.float32)


def padded_grid(cfg, n_steps: int, *, reverse: bool = False) -> Tuple[jax.Array, jax.Array]:
    """``(ts, window)``: :func:`sample_grid` (reversed for likelihoods) padded to ``max(sample_steps)``
    steps with points past its end, and the window outside which the fields are switched off."""
    n_max = max(cfg.sample_steps)
    delta = cfg.t_eps / (2.0 * n_max)
    t0, t1 = cfg.t_eps, 1.0 - cfg.t_eps
    real = np.asarray(sample_grid(cfg, n_steps), np.float64)
    pad = np.arange(1, n_max - n_steps + 1) * delta
    ts = np.concatenate([real[::-1], t0 - pad]) if reverse else np.concatenate([real, t1 + pad])
    window = np.array([t0 - 0.5 * delta, t1 + 0.5 * delta])
    return jnp.asarray(ts, jnp.float32), jnp.asarray(window, jnp.float32)
