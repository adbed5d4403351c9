r"""Labs 2-3 with trained models: flow and score matching on the Gaussian mixture, moons and the
checkerboard; bridging circles to the checkerboard; digits with classifier-free guidance."""
from __future__ import annotations

from pathlib import Path
from typing import List

import jax
import jax.numpy as jnp
import numpy as np

from experiments import images
from experiments.labs.config import SCHEDULERS, LabsConfig
from experiments.labs.figures import density_contours, plt, save, scatter, trajectories
from experiments.labs.training import LabPrograms, fit_mlp, train_and_sample
from jflow.data import get_toy, symmetric_mixture
from jflow.integrators import uniform_grid
from jflow.marginals import marginal_velocity
from jflow.sampling import sample_ode


def lab_gmm(cfg: LabsConfig, out: Path, key, programs: LabPrograms, method: str) -> List[Path]:
    """Flow matching (``fm``) or score matching (``sm``) on the labs' Gaussian mixture."""
    written = []
    gm = symmetric_mixture()
    name = {"fm": "flow matching (CondOT ODE)", "sm": f"score matching (SDE, sigma={cfg.sde_sigma:g})"}[method]
    samples, traj = train_and_sample(cfg, programs, gm, method, key, f"{method} gmm")
    lim = 15.0
    ncols = 4 if method == "fm" else 3
    fig, axes = plt.subplots(1, ncols, figsize=(3.4 * ncols, 3.6))
    density_contours(axes[0], gm.log_prob, lim)
    scatter(axes[0], gm.sample(jax.random.fold_in(key, 7), cfg.n_samples), "data", lim, color="C0")
    density_contours(axes[1], gm.log_prob, lim)
    scatter(axes[1], samples, f"learned: {cfg.n_samples} samples", lim)
    trajectories(axes[2], traj, "learned trajectories", lim, n=cfg.n_paths * 5)
    if method == "fm":
        exact = np.asarray(_exact_paths(SCHEDULERS[cfg.scheduler](), gm, traj[0], uniform_grid(cfg.ode_steps)))
        trajectories(axes[3], exact, "exact marginal field trajectories", lim, n=cfg.n_paths * 5)
    fig.suptitle(f"{name} on the Gaussian mixture, {cfg.train_steps} steps, scheduler {cfg.scheduler}", fontsize=10)
    save(fig, out / f"{method}_gmm.png", written)
    return written


def _exact_paths(sched, gm, x0, grid):
    """Trajectories of the exact marginal velocity of the mixture ``gm`` (``jflow.marginals``) from ``x0``."""
    run = jax.jit(lambda x, g: sample_ode(lambda y, t: marginal_velocity(sched, gm, y, t), x, g, trajectory=True))
    return run(jnp.asarray(x0), grid)


def lab_moons(cfg: LabsConfig, out: Path, key, programs: LabPrograms) -> List[Path]:
    """Flow matching and score matching on moons and on the checkerboard."""
    written = []
    datasets = {"moons": (get_toy("moons"), 2.0), "checkerboard": (get_toy("checkerboard"), 2.5)}
    fig, axes = plt.subplots(len(datasets), 5, figsize=(16, 3.3 * len(datasets)), squeeze=False)
    for i, (name, (data, lim)) in enumerate(datasets.items()):
        scatter(axes[i, 0], data.sample(jax.random.fold_in(key, 100 + i), cfg.n_samples), f"{name}: data", lim, "C0")
        for j, method in enumerate(("fm", "sm")):
            samples, traj = train_and_sample(cfg, programs, data, method, jax.random.fold_in(key, 10 * i + j),
                                             f"{method} {name}")
            label = "flow matching" if method == "fm" else "score matching (SDE)"
            scatter(axes[i, 1 + 2 * j], samples, f"{label}: samples", lim)
            trajectories(axes[i, 2 + 2 * j], traj, f"{label}: trajectories", lim, n=cfg.n_paths * 5)
    save(fig, out / "moons_checkerboard.png", written)
    return written


def lab_bridge(cfg: LabsConfig, out: Path, key, programs: LabPrograms) -> List[Path]:
    """Flow matching with p_init = circles, p_data = checkerboard (the bridging construction)."""
    written = []
    source, target = get_toy("circles", scale=2.0), get_toy("checkerboard")
    k_s, k_t, k_train, k_x0 = jax.random.split(key, 4)
    draw_s = jax.jit(lambda k: source.sample(k, cfg.batch_size))
    draw_t = jax.jit(lambda k: target.sample(k, cfg.batch_size))

    def batch_fn(step):  # independent coupling (x0, z) ~ p_init x p_data
        return {"x0": draw_s(jax.random.fold_in(k_s, step)), "z": draw_t(jax.random.fold_in(k_t, step))}

    params = fit_mlp(cfg, programs.bridge, batch_fn, k_train, "bridge")
    x0 = source.sample(k_x0, cfg.n_samples)
    traj = np.asarray(programs.bridge.sampler(params, x0, uniform_grid(cfg.ode_steps), k_x0))
    lim = 2.5
    fractions = (0.0, 0.25, 0.5, 0.75, 1.0)
    fig, axes = plt.subplots(1, len(fractions) + 1, figsize=(3.0 * (len(fractions) + 1), 3.3))
    for ax, f in zip(axes, fractions):
        scatter(ax, traj[int(round(f * cfg.ode_steps))], f"t = {f:g}", lim)
    trajectories(axes[-1], traj, "trajectories", lim, n=cfg.n_paths * 5)
    fig.suptitle("bridging: flow matching from circles (t=0) to the checkerboard (t=1)", fontsize=10)
    save(fig, out / "bridge.png", written)
    return written


def lab_cfg(cfg: LabsConfig, out: Path, key) -> List[Path]:
    """Digits with classifier-free guidance: experiments.images at preset ``cfg_preset`` into ``out/cfg``."""
    del key  # the image experiment has its own seed
    config = images.ImageConfig(**images.PRESETS[cfg.cfg_preset])
    config.validate()
    sub = out / "cfg"
    sub.mkdir(exist_ok=True)
    images.run(config, sub)
    return sorted(sub.glob("*.png"))
