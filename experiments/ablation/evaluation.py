"""Evaluation of trained runs: samples per sampler and step count, likelihood, adaptive NFE, field error."""
from __future__ import annotations

from typing import Dict, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.ablation.config import GENERIC_SAMPLERS, AblationConfig, RunSpec, streams
from experiments.ablation.programs import Programs
from jflow import metrics
from jflow.integrators import num_evals, uniform_grid
from jflow.marginals import GaussianMixture

SAMPLE_METRICS = ("energy", "mmd", "sw2")


def mean_std(values) -> Tuple[float, float]:
    v = np.asarray(values, np.float64)
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else 0.0)


def sampling_grid(cfg: AblationConfig, sampler: str, n_steps: int) -> jax.Array:
    """``n_steps`` uniform steps: ``[t_eps, 1 - t_eps]`` for the generic ODE samplers (their converted
    fields are singular at both ends and Heun evaluates the right one), ``[t_eps, 1]`` for the
    diffusion samplers (they never evaluate the model at the last point)."""
    end = 1.0 - cfg.t_eps if sampler in GENERIC_SAMPLERS else 1.0
    return uniform_grid(n_steps, cfg.t_eps, end, dtype=jnp.float32)


def sampler_nfe(sampler: str, n_steps: int) -> int:
    if sampler in GENERIC_SAMPLERS:
        return num_evals(sampler, n_steps)
    return 2 * n_steps if sampler == "pc" else n_steps  # one predictor + one corrector evaluation per step


def sample_metrics(cfg: AblationConfig, xs: np.ndarray, heldout: np.ndarray, key) -> Dict[str, list]:
    """Per-seed energy distance, MMD and sliced W2 of ``xs`` (R, N, d) against held-out data (NaN if not finite)."""
    out = {m: [] for m in SAMPLE_METRICS}
    for x in xs:
        if not np.isfinite(x).all():
            for m in SAMPLE_METRICS:
                out[m].append(float("nan"))
            continue
        out["energy"].append(float(metrics.energy_distance(x, heldout)))
        out["mmd"].append(float(metrics.mmd(x, heldout)))
        out["sw2"].append(float(metrics.sliced_wasserstein(x, heldout, key=key, num_projections=cfg.sliced_projections)))
    return out


def _with_stats(row: dict, per_seed: Dict[str, list]) -> dict:
    for m, values in per_seed.items():
        row[f"{m}_mean"], row[f"{m}_std"] = mean_std(values)
    return row


def evaluate(cfg: AblationConfig, programs: Programs, dataset: str, spec: RunSpec, params, heldout, bar):
    """Rows of metrics (mean/std over seeds) for every applicable sampler and step count, and seed 0's
    samples at the largest step count per sampler (for the figures)."""
    rng = streams(cfg)
    x0 = jax.random.normal(rng.key("x0"), (cfg.seeds, cfg.n_samples, heldout.shape[1]), jnp.float32)
    keys = rng.keys("sampler", cfg.seeds)
    rows, kept = [], {}
    for sampler in cfg.sampler_runs(spec):
        program = programs.sampler(spec.parameterization, spec.scheduler, sampler)
        for n in cfg.sample_steps:
            xs = np.asarray(program(params, x0, sampling_grid(cfg, sampler, n), keys))
            row = {"dataset": dataset, "run": spec.name, "method": spec.method, "path": spec.scheduler,
                   "weighting": spec.weighting, "sampler": sampler, "steps": n, "nfe": sampler_nfe(sampler, n)}
            rows.append(_with_stats(row, sample_metrics(cfg, xs, heldout, rng.key("metric"))))
            if n == max(cfg.sample_steps):
                kept[sampler] = xs[0]
            bar.update(1)
    return rows, kept


def model_summary(cfg: AblationConfig, programs: Programs, spec: RunSpec, params, heldout, gm) -> dict:
    """Per trained run: NLL (Heun, largest step count), Dormand-Prince NFE and sample quality, field error."""
    rng = streams(cfg)
    p, s = spec.parameterization, spec.scheduler
    back = uniform_grid(max(cfg.sample_steps), 1.0 - cfg.t_eps, cfg.t_eps, dtype=jnp.float32)
    out = {}
    out["nll_mean"], out["nll_std"] = mean_std(np.asarray(programs.nll(p, s)(params, heldout[: cfg.nll_samples], back)))
    x0 = jax.random.normal(rng.key("x0"), (cfg.seeds, cfg.n_samples, heldout.shape[1]), jnp.float32)
    xs, nfe = programs.adaptive(p, s)(params, x0[:, : cfg.adaptive_samples])
    out["dopri5_nfe_mean"], out["dopri5_nfe_std"] = mean_std(np.asarray(nfe))
    energy = sample_metrics(cfg, np.asarray(xs), heldout, rng.key("metric"))["energy"]
    out["dopri5_energy_mean"], out["dopri5_energy_std"] = mean_std(energy)
    if gm is not None:
        out.update(field_error(cfg, programs, spec, params, gm, heldout))
    return out


def field_error(cfg: AblationConfig, programs: Programs, spec: RunSpec, params, gm: GaussianMixture, heldout) -> dict:
    r""":math:`E_{x \sim p_t}\|u^\theta_t(x) - u_t(x)\|^2` of the learned velocity (converted) against the exact
    marginal velocity of the run's own path, for each ``t`` in ``field_times`` (ends included), and its mean."""
    fn = programs.field_error(spec.parameterization, spec.scheduler)
    rng = streams(cfg)
    z = heldout[: cfg.field_samples]
    per_t, rel_t = [], []
    for i, t in enumerate(cfg.field_times):
        eps = jax.random.normal(rng.key("field", i), z.shape, jnp.float32)
        mse, ref = fn(params, gm, z, eps, jnp.float32(t))
        per_t.append(np.asarray(mse))
        rel_t.append(np.asarray(mse) / float(ref))
    per_t, rel_t = np.stack(per_t), np.stack(rel_t)  # (T, R)
    mse_mean, mse_std = mean_std(per_t.mean(axis=0))
    rel_mean, rel_std = mean_std(rel_t.mean(axis=0))
    return {
        "field_mse_mean": mse_mean, "field_mse_std": mse_std, "field_rel_mean": rel_mean, "field_rel_std": rel_std,
        "field_mse_by_t": {f"{t:g}": float(v) for t, v in zip(cfg.field_times, per_t.mean(axis=1))},
    }


def reference_row(cfg: AblationConfig, programs: Programs, dataset: str, dist, heldout) -> dict:
    """Metrics of a second independent data sample of size ``n_samples`` (the floor), and the exact NLL."""
    rng = streams(cfg)
    other = np.asarray(programs.data(dist, rng.key("reference"), cfg.n_samples))
    per = sample_metrics(cfg, other[None], heldout, rng.key("metric"))
    row = {"dataset": dataset, "run": "reference (data vs data)", "method": "-", "path": "-",
           "weighting": "-", "sampler": "-", "steps": 0, "nfe": 0}
    row = _with_stats(row, per)
    if isinstance(dist, GaussianMixture):
        row["nll_exact"] = float(-jnp.mean(dist.log_prob(heldout[: cfg.nll_samples])))
    return row


def best_rows(rows: List[dict], steps: int) -> List[dict]:
    """Per run, the row with the lowest energy distance at ``steps`` steps (the run's best sampler)."""
    best: Dict[Tuple[str, str], dict] = {}
    for r in rows:
        if r["steps"] != steps or not np.isfinite(r["energy_mean"]):
            continue
        k = (r["dataset"], r["run"])
        if k not in best or r["energy_mean"] < best[k]["energy_mean"]:
            best[k] = r
    return list(best.values())
