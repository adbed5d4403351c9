r"""Evaluation of the ablation: samples and their metrics, likelihoods, the field error, the reference row.

Metrics against held-out data (mean and std over seeds): energy distance, MMD, sliced
Wasserstein-2, and for deterministic samplers the NLL. For Gaussian mixture data the
learned velocity is compared with the exact marginal velocity of its own path
(:mod:`jflow.marginals`).
"""
from __future__ import annotations

import functools
from typing import Callable, Dict, List, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.ablation.config import METRICS, AblationConfig, RunSpec
from experiments.ablation.samplers import SAMPLERS, model_fields, padded_grid
from experiments.common import Streams
from jflow import metrics as jmetrics
from jflow import paths
from jflow.marginals import GaussianMixture, marginal_velocity


class EvalPrograms(NamedTuple):
    """The compiled programs evaluating one run family (a method on a path), built once per run.

    ``samplers``: sampler name -> program (:class:`experiments.ablation.samplers.Sampler`);
    ``likelihoods``: the NLL programs of the deterministic samplers; ``field_error``:
    ``(params, gm, z, eps, t) -> (mse (R,), E||u_exact||^2)``; ``velocity(x, t, params)``
    and ``exact_velocity(gm, x, t)``: the learned and the exact field (figures).
    """

    samplers: Dict[str, Callable]
    likelihoods: Dict[str, Callable]
    field_error: Callable
    velocity: Callable
    exact_velocity: Callable


def evaluation_programs(cfg: AblationConfig, model, spec: RunSpec) -> EvalPrograms:
    """The :class:`EvalPrograms` of ``spec``'s network ``model`` for the samplers of ``cfg``."""
    fields = model_fields(model, spec.parameterization, spec.scheduler)
    chosen = {name: SAMPLERS[name] for name in cfg.samplers}
    sched, u = fields.sched, fields.velocity

    def field_error(params, gm, z, eps, t):
        x = paths.sample_conditional(sched, z, eps, t)
        exact = marginal_velocity(sched, gm, x, t)
        learned = jax.vmap(lambda p: u(x, t, p))(params)
        mse = jnp.mean(jnp.sum((learned - exact) ** 2, axis=-1), axis=-1)
        return mse, jnp.mean(jnp.sum(exact ** 2, axis=-1))

    return EvalPrograms(
        samplers={name: s.build(fields) for name, s in chosen.items()},
        likelihoods={name: s.build_likelihood(fields) for name, s in chosen.items() if s.build_likelihood},
        field_error=jax.jit(field_error),
        velocity=jax.jit(u),
        exact_velocity=jax.jit(lambda gm, x, t: marginal_velocity(sched, gm, x, t)),
    )


@functools.partial(jax.jit, static_argnums=2)
def sample_data(dist, key, n: int):
    """``n`` points of the toy distribution ``dist``."""
    return dist.sample(key, n)


def mean_std(values) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for one value) in float64."""
    v = np.asarray(values, np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def two_sample_metrics(cfg: AblationConfig, x, y, key) -> Dict[str, float]:
    """Energy distance, MMD and sliced W2 between the point sets ``x`` and ``y``."""
    return {
        "energy": float(jmetrics.energy_distance(x, y)),
        "mmd": float(jmetrics.mmd(x, y)),
        "sw2": float(jmetrics.sliced_wasserstein(x, y, key=key, num_projections=cfg.sliced_projections)),
    }


def _per_seed_metrics(cfg: AblationConfig, xs: np.ndarray, heldout, key) -> Dict[str, list]:
    """The sample metrics of every seed's samples ``xs[r]`` (NaN for a seed with non-finite samples)."""
    per_seed = {m: [] for m in METRICS}
    finite = np.isfinite(xs).all(axis=(1, 2))
    for r in range(cfg.seeds):
        if finite[r]:
            for m, v in two_sample_metrics(cfg, xs[r], heldout, key).items():
                per_seed[m].append(v)
        else:
            for m in ("energy", "mmd", "sw2"):
                per_seed[m].append(float("nan"))
    return per_seed


def _row(dataset: str, spec: RunSpec, sampler: str, sigma: float, n: int, per_seed: Dict[str, list]) -> dict:
    row = {
        "dataset": dataset, "method": spec.method, "scheduler": spec.scheduler,
        "parameterization": spec.parameterization, "sampler": sampler, "sigma": sigma, "steps": n,
        "nfe": SAMPLERS[sampler].nfe(n),
    }
    for m in METRICS:
        row[f"{m}_mean"], row[f"{m}_std"] = mean_std(per_seed[m]) if per_seed[m] else (None, None)
    return row


def evaluate(cfg: AblationConfig, dataset: str, spec: RunSpec, programs: EvalPrograms, params, heldout,
             streams: Streams, bar) -> Tuple[List[dict], Dict[Tuple, np.ndarray]]:
    """Sample ``spec``'s models with every sampler, sigma and step count; rows of metrics (mean/std over seeds).

    Returns the rows and the trajectories ``(len(ts), N, d)`` of seed 0 at the largest step
    count for each ``(sampler, sigma)`` (for the figures).
    """
    x0 = jax.random.normal(streams.key("x0"), (cfg.seeds, cfg.n_samples, heldout.shape[1]), jnp.float32)
    sde_keys = streams.keys("sde", cfg.seeds)
    rows, kept = [], {}
    for sampler, sigma in cfg.sampler_settings():
        for n in cfg.sample_steps:
            ts, window = padded_grid(cfg, n)
            # (R, len(ts), N, d); padded steps repeat the final state
            traj = np.asarray(programs.samplers[sampler](params, x0, ts, window, jnp.float32(sigma), sde_keys))
            per_seed = _per_seed_metrics(cfg, traj[:, -1], heldout, streams.key("metrics"))
            if sampler in programs.likelihoods:
                ts_back, window = padded_grid(cfg, n, reverse=True)
                nll = programs.likelihoods[sampler](params, heldout[: cfg.nll_samples], ts_back, window)
                per_seed["nll"] = list(np.asarray(nll))
            rows.append(_row(dataset, spec, sampler, sigma, n, per_seed))
            if n == max(cfg.sample_steps):
                kept[(sampler, sigma)] = traj[0]  # seed 0, for the figures
            bar.update(1)
    return rows, kept


def field_error(cfg: AblationConfig, program: Callable, params, gm: GaussianMixture, heldout,
                streams: Streams) -> dict:
    r"""Mean squared error of the learned velocity (converted) against the exact marginal velocity.

    :math:`E_{x \sim p_t}\|u^\theta_t(x) - u_t(x)\|^2` for each ``t`` in ``field_times`` (the
    exact field of the run's own path), mean over times; also relative to :math:`E\|u_t\|^2`.
    ``program`` is :attr:`EvalPrograms.field_error`.
    """
    z = heldout[: cfg.field_samples]
    per_t, rel_t = [], []
    for i, t in enumerate(cfg.field_times):
        eps = jax.random.normal(streams.key("field_noise", i), z.shape, jnp.float32)
        mse, ref = program(params, gm, z, eps, jnp.float32(t))
        per_t.append(np.asarray(mse))
        rel_t.append(np.asarray(mse) / float(ref))
    per_t, rel_t = np.stack(per_t), np.stack(rel_t)  # (T, R)
    mse_mean, mse_std = mean_std(per_t.mean(axis=0))
    rel_mean, rel_std = mean_std(rel_t.mean(axis=0))
    return {
        "field_mse_mean": mse_mean, "field_mse_std": mse_std,
        "field_rel_mean": rel_mean, "field_rel_std": rel_std,
        "field_mse_by_t": {f"{t:g}": float(v) for t, v in zip(cfg.field_times, per_t.mean(axis=1))},
    }


def reference_row(cfg: AblationConfig, dataset: str, dist, heldout, streams: Streams) -> dict:
    """Metrics of a second independent data sample of size ``n_samples`` (the floor), and exact NLL."""
    other = np.asarray(sample_data(dist, streams.key("reference"), cfg.n_samples))
    m = two_sample_metrics(cfg, other, heldout, streams.key("metrics"))
    row = {"dataset": dataset, "method": "reference (data vs data)", "scheduler": "-",
           "parameterization": "-", "sampler": "-", "sigma": 0.0, "steps": 0, "nfe": 0}
    for name in ("energy", "mmd", "sw2"):
        row[f"{name}_mean"], row[f"{name}_std"] = m[name], 0.0
    if isinstance(dist, GaussianMixture):
        row["nll_mean"] = float(-jnp.mean(dist.log_prob(heldout[: cfg.nll_samples])))
    else:
        row["nll_mean"] = None
    row["nll_std"] = None if row["nll_mean"] is None else 0.0
    return row
