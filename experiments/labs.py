r"""The figures of the lectures' three labs, as one script on top of jflow.

=========== ===========================================================================================
``which``   figure(s)
=========== ===========================================================================================
brownian    Brownian motion :math:`dX_t = \sigma dW_t` (Euler-Maruyama, ``jflow.integrators.sdeint``) with
            the exact envelope :math:`\pm 2\sigma\sqrt t`
ou          Ornstein-Uhlenbeck :math:`dX_t = -\theta X_t dt + \sigma dW_t` for several :math:`\theta`
            (``jflow.sampling.ou_process``): trajectories, and the law of :math:`X_T` against the stationary
            density :math:`\mathcal N(0, \sigma^2 / 2\theta)`
langevin    Langevin dynamics :math:`dX_s = \frac{\sigma^2}{2}\nabla\log p(X_s) ds + \sigma dW_s` on the
            labs' Gaussian mixture (``jflow.sampling.langevin``): particles at several times over the
            stationary density, and trajectories
fm_gmm      flow matching (CondOT, Algorithm 4) on the Gaussian mixture: samples and trajectories of the
            learned ODE next to those of the exact marginal field (``jflow.marginals``)
sm_gmm      denoising score matching (Algorithm 5) on the Gaussian mixture, sampled with the SDE
            extension trick (``jflow.sampling.sample_sde``); samples and trajectories
moons       flow matching and score matching on moons and on the checkerboard: samples + trajectories
bridge      flow matching from :math:`p_{init}` = circles to :math:`p_{data}` = checkerboard
            (``jflow.paths.bridge``): samples at several times and trajectories
cfg         digits with classifier-free guidance: ``experiments.images`` at the preset ``cfg_preset``
=========== ===========================================================================================

Run::

    python -m experiments.labs                          # every lab (a few minutes on a 2-core CPU)
    python -m experiments.labs --which ou,langevin      # some of them
    python -m experiments.labs --preset smoke           # seconds (tests)

Every lab writes PNG files into the run directory (``runs/labs-<preset>`` by default) and
prints their paths.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import Timer, cli, parse_config, progress, require, run_dir, save_json

LABS = ("brownian", "ou", "langevin", "fm_gmm", "sm_gmm", "moons", "bridge", "cfg")
SCHEDULERS = ("linear", "cosine")


@dataclasses.dataclass(frozen=True)
class LabsConfig:
    """Figures of the lectures' labs (SDE simulation, flow and score matching, bridging, guidance)."""

    which: str = "all"  # "all" or a comma-separated list of labs
    seed: int = 0
    # lab 1: SDE simulation
    n_paths: int = 12  # trajectories drawn per panel
    n_particles: int = 2000  # particles for the histograms / Langevin snapshots
    sim_steps: int = 500
    sim_time: float = 5.0  # horizon of the Brownian / OU simulations (simulation time, not flow time)
    ou_thetas: Tuple[float, ...] = (0.25, 1.0, 4.0)
    ou_sigma: float = 1.0
    langevin_steps: int = 1000
    langevin_step_size: float = 0.01
    langevin_sigma: float = 2.0
    # labs 2-3: training an MLP (jflow.models.MLP) on 2-D data
    scheduler: str = "linear"
    train_steps: int = 2000
    batch_size: int = 256
    width: int = 128
    depth: int = 3
    learning_rate: float = 2e-3
    steps_per_call: int = 100
    n_samples: int = 1000
    ode_steps: int = 100
    sde_sigma: float = 1.0  # diffusion coefficient sigma_t (constant) of the score-matching sampler
    t_start: float = 0.01  # grids start at t_start > 0 where a field converted from a score is singular
    # cfg lab
    cfg_preset: str = "default"

    def labs(self) -> Tuple[str, ...]:
        names = tuple(n.strip() for n in self.which.split(",") if n.strip())
        return LABS if names == ("all",) else names

    def validate(self):
        from experiments.images import PRESETS as IMAGE_PRESETS

        names = self.labs()
        unknown = [n for n in names if n not in LABS]
        require(bool(names) and not unknown, "which",
                f"unknown lab(s) {unknown or [self.which]}; choose 'all' or a comma-separated list of {list(LABS)}")
        for field in ("n_paths", "n_particles", "sim_steps", "langevin_steps", "train_steps", "batch_size", "width",
                      "depth", "steps_per_call", "n_samples", "ode_steps"):
            require(getattr(self, field) >= 1, field, f"must be >= 1; got {getattr(self, field)}")
        require(self.seed >= 0, "seed", f"must be >= 0; got {self.seed}")
        require(self.train_steps % self.steps_per_call == 0, "train_steps",
                f"must be a multiple of steps_per_call={self.steps_per_call}; got {self.train_steps}")
        require(self.n_paths <= self.n_particles, "n_paths", f"must be <= n_particles={self.n_particles}")
        for field in ("sim_time", "ou_sigma", "langevin_step_size", "langevin_sigma", "learning_rate"):
            value = getattr(self, field)
            require(math.isfinite(value) and value > 0, field, f"must be finite and > 0; got {value}")
        require(len(self.ou_thetas) >= 1 and all(math.isfinite(t) and t > 0 for t in self.ou_thetas), "ou_thetas",
                f"must be a non-empty list of positive numbers; got {self.ou_thetas}")
        require(self.scheduler in SCHEDULERS, "scheduler", f"unknown scheduler {self.scheduler!r}; choose one of {list(SCHEDULERS)}")
        require(math.isfinite(self.sde_sigma) and self.sde_sigma >= 0, "sde_sigma", f"must be >= 0; got {self.sde_sigma}")
        require(0.0 < self.t_start < 0.5, "t_start", f"must lie in (0, 0.5); got {self.t_start}")
        require(self.cfg_preset in IMAGE_PRESETS, "cfg_preset",
                f"unknown experiments.images preset {self.cfg_preset!r}; choose one of {sorted(IMAGE_PRESETS)}")


PRESETS = {
    "default": {},
    "smoke": dict(
        n_paths=3, n_particles=64, sim_steps=20, langevin_steps=20, train_steps=4, batch_size=32, width=16, depth=1,
        steps_per_call=2, n_samples=64, ode_steps=4, cfg_preset="smoke",
    ),
}


# --------------------------------------------------------------------------- helpers


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, written: List[Path]) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    written.append(path)


def _scheduler(name: str):
    from jflow.schedulers import CosineScheduler, LinearScheduler

    return {"linear": LinearScheduler, "cosine": CosineScheduler}[name]()


def _density_contours(ax, log_prob: Callable, lim: float, n: int = 120) -> None:
    """Filled contours of ``exp(log_prob)`` on ``[-lim, lim]^2``."""
    g = np.linspace(-lim, lim, n)
    xx, yy = np.meshgrid(g, g)
    pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)
    dens = np.exp(np.asarray(log_prob(pts))).reshape(n, n)
    ax.contourf(xx, yy, dens, levels=12, cmap="Blues", alpha=0.6)


def _scatter(ax, x, title: str, lim: float, color="C1") -> None:
    x = np.asarray(x)
    ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, color=color)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)


def _trajectories(ax, traj, title: str, lim: float, n: int = 60) -> None:
    """Trajectories ``(T, N, 2)``: lines from start (grey dots) to end (red dots)."""
    traj = np.asarray(traj)[:, :n]
    ax.plot(traj[:, :, 0], traj[:, :, 1], lw=0.5, alpha=0.6, color="C0")
    ax.scatter(traj[0, :, 0], traj[0, :, 1], s=4, color="grey", zorder=3)
    ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=4, color="C3", zorder=3)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)


# --------------------------------------------------------------------------- lab 1: SDEs


def lab_brownian(cfg: LabsConfig, out: Path, key) -> List[Path]:
    """Brownian motion paths by Euler-Maruyama with the exact +- 2 sqrt(t) envelope of W_t ~ N(0, t)."""
    from jflow.integrators import sdeint, uniform_grid

    plt, written = _plt(), []
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
    _save(fig, out / "brownian.png", written)
    return written


def lab_ou(cfg: LabsConfig, out: Path, key) -> List[Path]:
    """OU trajectories for each theta, and the law of X_T against the stationary N(0, sigma^2 / 2 theta)."""
    from jflow.integrators import uniform_grid
    from jflow.sampling import ou_process

    plt, written = _plt(), []
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
    _save(fig, out / "ou.png", written)
    return written


def lab_langevin(cfg: LabsConfig, out: Path, key) -> List[Path]:
    """Langevin dynamics on the labs' Gaussian mixture from a wide Gaussian start."""
    from jflow.data import symmetric_mixture
    from jflow.sampling import langevin

    plt, written = _plt(), []
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
        _density_contours(ax, gm.log_prob, lim)
        _scatter(ax, traj[s], f"s = {s * cfg.langevin_step_size:.3g}", lim)
    _density_contours(axes[-1], gm.log_prob, lim)
    _trajectories(axes[-1], traj, "trajectories", lim, n=cfg.n_paths)
    fig.suptitle(rf"Langevin dynamics, $\sigma$={cfg.langevin_sigma:g}, h={cfg.langevin_step_size:g}: "
                 "particles converge to the (stationary) mixture", fontsize=10)
    _save(fig, out / "langevin.png", written)
    return written


# --------------------------------------------------------------------------- labs 2-3: training on 2-D data


def _ode_sampler(model):
    """Jitted ``(params, x0, grid, key) -> trajectory`` of the learned ODE (Algorithm 1, Euler)."""
    from jflow.sampling import sample_ode

    def run(params, x0, grid, key):
        del key
        return sample_ode(lambda x, t, p: model.apply(p, x, t), x0, grid, trajectory=True, args=(params,))

    return jax.jit(run)


@functools.lru_cache(maxsize=8)
def _toy_program(parameterization: str, scheduler: str, width: int, depth: int, learning_rate: float,
                 sde_sigma: float):
    r"""``(model, optimizer, fused_step, sampler)`` of an MLP trained with ``make_loss``; cached so the
    labs share compiled programs (e.g. moons and checkerboard).

    ``velocity``: flow matching (Algorithm 4 for CondOT), sampled with the ODE. ``score``:
    denoising score matching (Algorithm 5) weighted by :math:`\beta_t^2` (the numerically stable
    DDPM form, see :mod:`jflow.losses`), sampled with the SDE extension trick, the velocity
    obtained from the score by the conversion formula (``jflow.sampling.as_velocity``).
    """
    from jflow.losses import make_loss
    from jflow.models import get_model
    from jflow.sampling import as_velocity, sample_sde
    from jflow.train import make_fused_train_step, make_optimizer

    model = get_model("mlp", width=width, depth=depth)
    sched = _scheduler(scheduler)
    weighting = (lambda t: sched(t)[1] ** 2) if parameterization == "score" else None
    loss = make_loss(lambda p, x, t, y: model.apply(p, x, t), sched, parameterization=parameterization,
                     weighting=weighting)
    if parameterization == "velocity":
        sampler = _ode_sampler(model)
    else:
        def score(x, t, p):
            return model.apply(p, x, t)

        u = as_velocity(score, sched, "score")
        sampler = jax.jit(lambda params, x0, grid, key: sample_sde(u, score, sde_sigma, x0, grid, key=key,
                                                                    trajectory=True, args=(params,)))
    return model, make_optimizer(learning_rate, clip_norm=1.0), make_fused_train_step(loss), sampler


@functools.lru_cache(maxsize=4)
def _bridge_program(scheduler: str, width: int, depth: int, learning_rate: float):
    r"""Flow matching between two sample sets: regress ``u(x_t, t)`` on the bridge velocity of
    ``jflow.paths.bridge`` (:math:`x_t = \alpha_t z + \beta_t x_0`, target
    :math:`\dot\alpha_t z + \dot\beta_t x_0`), with the batch mean of the squared norm."""
    from jflow.losses import sample_time
    from jflow.models import get_model
    from jflow.paths import bridge
    from jflow.train import make_fused_train_step, make_optimizer

    model = get_model("mlp", width=width, depth=depth)
    sched = _scheduler(scheduler)

    def loss(params, batch, key):
        x0, z = batch["x0"], batch["z"]
        t = sample_time(key, x0.shape[0], dtype=x0.dtype)
        x_t, target = bridge(sched, x0, z, t)
        value = jnp.mean(jnp.sum(jnp.square(model.apply(params, x_t, t) - target), axis=-1))
        return value, {}

    return model, make_optimizer(learning_rate, clip_norm=1.0), make_fused_train_step(loss), _ode_sampler(model)


def _fit(cfg: LabsConfig, program, batch_fn: Callable, key, desc: str):
    """Train an MLP of ``program`` for ``cfg.train_steps`` steps; returns its parameters."""
    from jflow.train import create_train_state, fit

    model, optimizer, step, _ = program
    init_key, train_key = jax.random.split(key)
    params = model.init(init_key, jnp.zeros((1, 2)), jnp.zeros((1,)))
    bar = progress(total=cfg.train_steps, desc=desc)

    def log_fn(step_index, metrics):
        bar.update(cfg.steps_per_call)
        bar.set_postfix(loss=f"{metrics['loss']:.4f}")

    try:
        state, _ = fit(step, create_train_state(params, optimizer), batch_fn, train_key, num_steps=cfg.train_steps,
                       steps_per_call=cfg.steps_per_call, log_every=cfg.steps_per_call, log_fn=log_fn)
    finally:
        bar.close()
    return state.params


def _sampler_batches(sample: Callable, key, batch_size: int):
    """``step -> {"x": batch}``: batch ``step`` drawn from ``fold_in(key, step)`` (a pure function of the step)."""
    draw = jax.jit(lambda k: sample(k, batch_size))
    return lambda step: {"x": draw(jax.random.fold_in(key, step))}


def _train_and_sample(cfg: LabsConfig, data, method: str, key, desc: str):
    """Train flow matching (``"fm"``) or score matching (``"sm"``) on ``data``; return ``(samples, trajectory)``.

    FM samples the learned ODE (Algorithm 1) on ``[0, 1]``; SM samples the SDE extension with
    ``sigma_t = sde_sigma`` (Euler-Maruyama) on ``[t_start, 1]``, since the velocity converted
    from a score is singular at ``t = 0``.
    """
    from jflow.integrators import uniform_grid

    k_data, k_train, k_x0, k_sde = jax.random.split(key, 4)
    parameterization = "velocity" if method == "fm" else "score"
    program = _toy_program(parameterization, cfg.scheduler, cfg.width, cfg.depth, cfg.learning_rate, cfg.sde_sigma)
    params = _fit(cfg, program, _sampler_batches(data.sample, k_data, cfg.batch_size), k_train, desc)
    x0 = jax.random.normal(k_x0, (cfg.n_samples, 2))
    grid = uniform_grid(cfg.ode_steps, 0.0 if method == "fm" else cfg.t_start, 1.0)
    traj = np.asarray(program[3](params, x0, grid, k_sde))
    return traj[-1], traj


def lab_gmm(cfg: LabsConfig, out: Path, key, method: str) -> List[Path]:
    """Flow matching (``fm``) or score matching (``sm``) on the labs' Gaussian mixture."""
    from jflow.data import symmetric_mixture
    from jflow.integrators import uniform_grid

    plt, written = _plt(), []
    gm = symmetric_mixture()
    name = {"fm": "flow matching (CondOT ODE)", "sm": f"score matching (SDE, sigma={cfg.sde_sigma:g})"}[method]
    samples, traj = _train_and_sample(cfg, gm, method, key, f"{method} gmm")
    lim = 15.0
    ncols = 4 if method == "fm" else 3
    fig, axes = plt.subplots(1, ncols, figsize=(3.4 * ncols, 3.6))
    _density_contours(axes[0], gm.log_prob, lim)
    _scatter(axes[0], gm.sample(jax.random.fold_in(key, 7), cfg.n_samples), "data", lim, color="C0")
    _density_contours(axes[1], gm.log_prob, lim)
    _scatter(axes[1], samples, f"learned: {cfg.n_samples} samples", lim)
    _trajectories(axes[2], traj, "learned trajectories", lim, n=cfg.n_paths * 5)
    if method == "fm":
        sched = _scheduler(cfg.scheduler)
        exact = np.asarray(_exact_paths(sched, gm, traj[0], uniform_grid(cfg.ode_steps)))
        _trajectories(axes[3], exact, "exact marginal field trajectories", lim, n=cfg.n_paths * 5)
    fig.suptitle(f"{name} on the Gaussian mixture, {cfg.train_steps} steps, scheduler {cfg.scheduler}", fontsize=10)
    _save(fig, out / f"{method}_gmm.png", written)
    return written


def _exact_paths(sched, gm, x0, grid):
    from jflow.marginals import marginal_velocity
    from jflow.sampling import sample_ode

    run = jax.jit(lambda x, g: sample_ode(lambda y, t: marginal_velocity(sched, gm, y, t), x, g, trajectory=True))
    return run(jnp.asarray(x0), grid)


def lab_moons(cfg: LabsConfig, out: Path, key) -> List[Path]:
    """Flow matching and score matching on moons and on the checkerboard."""
    from jflow.data import get_toy

    plt, written = _plt(), []
    datasets = {"moons": (get_toy("moons"), 2.0), "checkerboard": (get_toy("checkerboard"), 2.5)}
    fig, axes = plt.subplots(len(datasets), 5, figsize=(16, 3.3 * len(datasets)), squeeze=False)
    for i, (name, (data, lim)) in enumerate(datasets.items()):
        _scatter(axes[i, 0], data.sample(jax.random.fold_in(key, 100 + i), cfg.n_samples), f"{name}: data", lim, "C0")
        for j, method in enumerate(("fm", "sm")):
            samples, traj = _train_and_sample(cfg, data, method, jax.random.fold_in(key, 10 * i + j), f"{method} {name}")
            label = "flow matching" if method == "fm" else "score matching (SDE)"
            _scatter(axes[i, 1 + 2 * j], samples, f"{label}: samples", lim)
            _trajectories(axes[i, 2 + 2 * j], traj, f"{label}: trajectories", lim, n=cfg.n_paths * 5)
    _save(fig, out / "moons_checkerboard.png", written)
    return written


def lab_bridge(cfg: LabsConfig, out: Path, key) -> List[Path]:
    """Flow matching with p_init = circles, p_data = checkerboard (the bridging construction)."""
    from jflow.data import get_toy
    from jflow.integrators import uniform_grid

    plt, written = _plt(), []
    source, target = get_toy("circles", scale=2.0), get_toy("checkerboard")
    k_s, k_t, k_train, k_x0 = jax.random.split(key, 4)
    draw_s = jax.jit(lambda k: source.sample(k, cfg.batch_size))
    draw_t = jax.jit(lambda k: target.sample(k, cfg.batch_size))

    def batch_fn(step):  # independent coupling (x0, z) ~ p_init x p_data
        return {"x0": draw_s(jax.random.fold_in(k_s, step)), "z": draw_t(jax.random.fold_in(k_t, step))}

    program = _bridge_program(cfg.scheduler, cfg.width, cfg.depth, cfg.learning_rate)
    params = _fit(cfg, program, batch_fn, k_train, "bridge")
    x0 = source.sample(k_x0, cfg.n_samples)
    traj = np.asarray(program[3](params, x0, uniform_grid(cfg.ode_steps), k_x0))
    lim = 2.5
    fractions = (0.0, 0.25, 0.5, 0.75, 1.0)
    fig, axes = plt.subplots(1, len(fractions) + 1, figsize=(3.0 * (len(fractions) + 1), 3.3))
    for ax, f in zip(axes, fractions):
        _scatter(ax, traj[int(round(f * cfg.ode_steps))], f"t = {f:g}", lim)
    _trajectories(axes[-1], traj, "trajectories", lim, n=cfg.n_paths * 5)
    fig.suptitle("bridging: flow matching from circles (t=0) to the checkerboard (t=1)", fontsize=10)
    _save(fig, out / "bridge.png", written)
    return written


def lab_cfg(cfg: LabsConfig, out: Path, key) -> List[Path]:
    """Digits with classifier-free guidance: experiments.images at preset ``cfg_preset`` into ``out/cfg``."""
    from experiments import images

    config = images.ImageConfig(**images.PRESETS[cfg.cfg_preset])
    config.validate()
    sub = out / "cfg"
    sub.mkdir(exist_ok=True)
    images.run(config, sub)
    return sorted(sub.glob("*.png"))


# --------------------------------------------------------------------------- main


def run(cfg: LabsConfig, out: Path, *, log=print) -> Dict[str, List[str]]:
    """Run the selected labs; returns ``{lab: [png paths]}`` (also saved as ``figures.json``)."""
    save_json(out / "config.json", dataclasses.asdict(cfg))
    key = jax.random.PRNGKey(cfg.seed)
    labs = {
        "brownian": lab_brownian,
        "ou": lab_ou,
        "langevin": lab_langevin,
        "fm_gmm": lambda c, o, k: lab_gmm(c, o, k, "fm"),
        "sm_gmm": lambda c, o, k: lab_gmm(c, o, k, "sm"),
        "moons": lab_moons,
        "bridge": lab_bridge,
        "cfg": lab_cfg,
    }
    figures = {}
    for i, name in enumerate(cfg.labs()):
        with Timer() as timer:
            written = labs[name](cfg, out, jax.random.fold_in(key, i))
        figures[name] = [str(p) for p in written]
        log(f"[{name}] {timer.seconds:.1f}s: " + ", ".join(str(p) for p in written))
    save_json(out / "figures.json", figures)
    return figures


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, List[str]]:
    config, args = parse_config(LabsConfig, PRESETS, argv, description=__doc__.split("\n\n")[0])
    out = run_dir(args.out, f"labs-{args.preset}")
    return run(config, out)


if __name__ == "__main__":
    cli(main)
