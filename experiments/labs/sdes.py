r"""Lab 1: simulating SDEs (Brownian motion, Ornstein-Uhlenbeck, Langevin dynamics) against their exact laws."""
from __future__ import annotations

from pathlib import Path
from typing import List

import jax
import jax.numpy as jnp
import numpy as np

from experiments.labs.config import LabsConfig
from experiments.labs.figures import density_contours, plt, save, scatter, trajectories
from jflow.data import symmetric_mixture
from jflow.integrators import sdeint, uniform_grid
from jflow.sampling import langevin, ou_process


def lab_brownian(cfg: LabsConfig, out: Path, key) -> List[Path]:
    """Brownian motion paths by Euler-Maruyama with the exact +- 2 sqrt(t) envelope of W_t ~ N(0, t)."""
    written = []
    ts = uniform_grid(cfg.sim_steps, 0.0, cfg.sim_time)
    paths = sdeint(lambda x, t: jnp.zeros_like(x), 1.0, jnp.zeros((cfg.n_particles, 1)), ts, key=key, trajectory=True)
    paths = np.asarray(paths[..., 0])
    t = np.asarray(ts)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(t, paths[:, : cfg.n_paths], lw=0.8)
    ax.fill_between(t, -2 * np.sqrt(t), 2 * np.sqrt(t), color="grey", alpha=0.2, label=r"$\pm 2\sqrt{t}$ (exact)")
    ax.plot(t, 2 * paths.std(axis=1), "k--", lw=1, label=f"2 x std over {cfg.n_particles} paths")
    ax.set_xlabel("t")
    ax.set_ylabel(r"$W_t$")
    ax.set_title(r"Brownian motion, $W_{t+h} = W_t + \sqrt{h}\,\epsilon_t$", fontsize=10)
    ax.legend(fontsize=8)
    save(fig, out / "brownian.png", written)
    return written


def lab_ou(cfg: LabsConfig, out: Path, key) -> List[Path]:
    """OU trajectories for each theta, and the law of X_T against the stationary N(0, sigma^2 / 2 theta)."""
    written = []
    ts = uniform_grid(cfg.sim_steps, 0.0, cfg.sim_time)
    x0 = jnp.linspace(-5.0, 5.0, cfg.n_particles)[:, None]
    n = len(cfg.ou_thetas)
    fig, axes = plt.subplots(n, 2, figsize=(9, 2.6 * n), squeeze=False, gridspec_kw={"width_ratios": [3, 1]})
    for i, theta in enumerate(cfg.ou_thetas):
        traj = np.asarray(ou_process(x0, ts, key=jax.random.fold_in(key, i), theta=theta, sigma=cfg.ou_sigma,
                                     trajectory=True))[..., 0]
        pick = np.linspace(0, cfg.n_particles - 1, cfg.n_paths).astype(int)
        axes[i, 0].plot(np.asarray(ts), traj[:, pick], lw=0.8)
        axes[i, 0].set_title(rf"OU: $\theta$={theta:g}, $\sigma$={cfg.ou_sigma:g}", fontsize=9)
        axes[i, 0].set_xlabel("t")
        var = cfg.ou_sigma ** 2 / (2 * theta)
        grid = np.linspace(-5, 5, 200)
        axes[i, 1].hist(traj[-1], bins=30, density=True, orientation="horizontal", alpha=0.5, color="C0",
                        label=rf"$X_T$, T={cfg.sim_time:g}")
        axes[i, 1].plot(np.exp(-grid ** 2 / (2 * var)) / np.sqrt(2 * np.pi * var), grid, "k", lw=1,
                        label=r"$\mathcal{N}(0, \sigma^2/2\theta)$")
        axes[i, 1].set_ylim(-5, 5)
        axes[i, 0].set_ylim(-5, 5)
        axes[i, 1].legend(fontsize=7)
    save(fig, out / "ou.png", written)
    return written


def lab_langevin(cfg: LabsConfig, out: Path, key) -> List[Path]:
    """Langevin dynamics on the labs' Gaussian mixture from a wide Gaussian start."""
    written = []
    gm = symmetric_mixture()
    score = jax.grad(lambda x: jnp.sum(gm.log_prob(x)))
    k0, k1 = jax.random.split(key)
    x0 = 15.0 * jax.random.normal(k0, (cfg.n_particles, 2))
    traj = np.asarray(langevin(score, x0, key=k1, n_steps=cfg.langevin_steps, step_size=cfg.langevin_step_size,
                               sigma=cfg.langevin_sigma, trajectory=True))
    lim = 20.0
    snaps = sorted({0, cfg.langevin_steps // 10, cfg.langevin_steps // 3, cfg.langevin_steps})
    fig, axes = plt.subplots(1, len(snaps) + 1, figsize=(3.2 * (len(snaps) + 1), 3.4))
    for ax, s in zip(axes, snaps):
        density_contours(ax, gm.log_prob, lim)
        scatter(ax, traj[s], f"s = {s * cfg.langevin_step_size:.3g}", lim)
    density_contours(axes[-1], gm.log_prob, lim)
    trajectories(axes[-1], traj, "trajectories", lim, n=cfg.n_paths)
    fig.suptitle(rf"Langevin dynamics, $\sigma$={cfg.langevin_sigma:g}, h={cfg.langevin_step_size:g}: "
                 "particles converge to the (stationary) mixture", fontsize=10)
    save(fig, out / "langevin.png", written)
    return written
