"""The ablation's compiled programs, built once per run and passed explicitly.

A :class:`Programs` object owns every jitted function of one ``run()``: samplers, likelihood,
adaptive solve and field error, one per ``(parameterisation, path, kind)`` (the loss weighting
does not change how a model is sampled), each vmapped over the seeds. Building them on first
use and keeping them on the object (not in module-level caches) means that a second dataset
or a resumed run reuses the compiled code, and that nothing outlives the run.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import jax
import jax.numpy as jnp

from experiments.ablation.config import AblationConfig
from experiments.ablation.training import build_model
from jflow import metrics, paths, sampling, schedulers
from jflow.integrators import odeint_adaptive
from jflow.marginals import marginal_velocity


class Programs:
    """Jitted programs of one ablation run (see the module docstring)."""

    def __init__(self, cfg: AblationConfig):
        self.cfg = cfg
        self.model = build_model(cfg)
        self._built: Dict[Tuple, Callable] = {}

    def _get(self, key: Tuple, build: Callable[[], Callable]) -> Callable:
        if key not in self._built:
            self._built[key] = build()
        return self._built[key]

    def net(self, parameterization: str, scheduler: str):
        """``(sched, fn, u)``: the network ``fn(x, t, params)`` and it as a velocity (closed-form conversion)."""
        sched = schedulers.get(scheduler)

        def fn(x, t, params):
            return self.model.apply(params, x, t)

        return sched, fn, sampling.as_velocity(fn, sched, parameterization)

    def sampler(self, parameterization: str, scheduler: str, name: str) -> Callable:
        """Jitted ``(params (R, ...), x0 (R, N, d), ts, keys (R, 2)) -> samples (R, N, d)``."""
        return self._get(("sample", parameterization, scheduler, name),
                         lambda: self._build_sampler(parameterization, scheduler, name))

    def _build_sampler(self, parameterization, scheduler, name):
        sched, fn, u = self.net(parameterization, scheduler)
        snr = self.cfg.pc_snr

        def one(params, x0, ts, key):
            if name in ("euler", "heun"):
                return sampling.sample_ode(u, x0, ts, method=name, args=(params,))
            if name == "ddim":
                return sampling.ddim(fn, sched, parameterization, x0, ts, args=(params,))
            if name == "dpm_solver_pp":
                return sampling.dpm_solver_pp(fn, sched, parameterization, x0, ts, args=(params,))
            return sampling.predictor_corrector(fn, sched, parameterization, x0, ts, key=key, snr=snr,
                                                args=(params,))

        return jax.jit(jax.vmap(one, in_axes=(0, 0, None, 0)))

    def nll(self, parameterization: str, scheduler: str) -> Callable:
        """Jitted ``(params, x, ts_decreasing) -> (R,)`` mean NLL (Heun, exact divergence, 2-D)."""

        def build():
            _, _, u = self.net(parameterization, scheduler)

            def one(params, x, ts):
                return metrics.negative_log_likelihood(u, x, ts, method="heun", divergence="exact", args=(params,))

            return jax.jit(jax.vmap(one, in_axes=(0, None, None)))

        return self._get(("nll", parameterization, scheduler), build)

    def adaptive(self, parameterization: str, scheduler: str) -> Callable:
        """Jitted ``(params, x0 (R, N, d)) -> (samples, nfe (R,))``: Dormand-Prince 5(4) over the ODE grid's span."""

        def build():
            _, _, u = self.net(parameterization, scheduler)
            cfg = self.cfg

            def one(params, x0):
                return odeint_adaptive(u, x0, cfg.t_eps, 1.0 - cfg.t_eps, rtol=cfg.adaptive_tol,
                                       atol=cfg.adaptive_tol, args=(params,))

            return jax.jit(jax.vmap(one))

        return self._get(("adaptive", parameterization, scheduler), build)

    def field_error(self, parameterization: str, scheduler: str) -> Callable:
        """Jitted ``(params, gm, z, eps, t) -> (mse (R,), E||u_exact||^2)`` of the velocity at ``x_t``."""

        def build():
            sched, _, u = self.net(parameterization, scheduler)

            def errors(params, gm, z, eps, t):
                x = paths.sample_conditional(sched, z, eps, t)
                exact = marginal_velocity(sched, gm, x, t)
                learned = jax.vmap(lambda p: u(x, t, p))(params)
                mse = jnp.mean(jnp.sum((learned - exact) ** 2, axis=-1), axis=-1)
                return mse, jnp.mean(jnp.sum(exact**2, axis=-1))

            return jax.jit(errors)

        return self._get(("field", parameterization, scheduler), build)

    def data(self, dist, key, n: int):
        """``n`` samples of a toy distribution (jitted per distribution type and ``n``)."""
        fn = self._get(("data", type(dist), n), lambda: jax.jit(lambda d, k: d.sample(k, n)))
        return fn(dist, key)
