r"""The main job: CondOT flow matching vs (denoising) score matching, same network, budget and seeds.

Run::

    python -m experiments.ablation                       # default preset, a few minutes on a 2-core CPU
    python -m experiments.ablation --preset smoke        # seconds (CI)
    python -m experiments.ablation --preset gpu          # the same comparison at GPU scale
    python -m experiments.ablation --schedulers linear,cosine,vp --train_steps 5000 --out runs/my-ablation

Methods (the config tuple ``methods``), each trained with the jflow MLP, the same optimizer,
learning rate, number of steps, batch size, seeds, and the same stream of data, times and
noise per seed (run ``r`` of every method uses the key ``fold_in(PRNGKey(seed), r)``):

- ``flow_matching``: velocity parameterisation on the CondOT path
  :math:`x_t = t z + (1 - t)\epsilon` (Algorithm 4, loss :math:`\|u^\theta_t(x_t) - (z - \epsilon)\|^2`).
- ``score_matching``: score parameterisation, denoising score matching on a Gaussian path
  (Algorithm 5, loss :math:`\|s^\theta_t(x_t) + \epsilon/\beta_t\|^2`, ``t <= score_t_max``).
- ``noise_prediction``: DDPM noise prediction on a Gaussian path (:math:`\|\epsilon^\theta_t(x_t) - \epsilon\|^2`).

The Gaussian path of the two score-based methods is ``schedulers`` (a tuple: ``linear``,
``cosine``, ``vp``; each entry is a separate training run). Flow matching always uses the
CondOT (``linear``) path.

Sampling: every trained model (all seeds at once, ``vmap``) is integrated with the flow ODE
(``euler``, ``heun``) and with the SDE extension trick (``euler_maruyama``, constant
diffusion coefficient ``sigma`` for each value of ``sigmas``), for each number of steps in
``sample_steps``. The network output is turned into the velocity and the score by
:func:`jflow.sampling.as_velocity` / :func:`jflow.sampling.as_score` (closed-form
conversions of :func:`jflow.paths.convert`).

**Time grid (documented choice).** Every sampler of every method uses the same uniform grid
from ``t_eps`` to ``1 - t_eps`` (default ``1e-3``). Score-based fields are singular at both
ends (the score at ``t = 1`` where :math:`\beta_1 = 0`, the velocity converted from a score
or noise prediction at ``t = 0`` where :math:`\alpha_0 = 0`), and Heun evaluates the right
end of each step; one grid for all methods keeps the comparison fair. ``x0 ~ N(0, I)``
stands for :math:`p_{t_{\rm eps}}`.

Metrics against held-out data (``n_eval`` points, independent of training), mean and std
over seeds: energy distance, MMD (RBF mixture, ``jflow.metrics.DEFAULT_BANDWIDTHS``),
sliced Wasserstein-2, and for ODE rows the negative log-likelihood (nats) of ``nll_samples``
held-out points by the instantaneous change of variables with the exact divergence,
integrated with the row's method and number of steps over the reversed grid. For Gaussian
mixture data (``symmetric_mixture``, ``eight_gaussians``) the learned velocity field is
compared with the exact marginal velocity of its own path (``jflow.marginals``): mean
squared error :math:`E\|u^\theta_t(x) - u_t(x)\|^2` over :math:`x \sim p_t`, averaged over
the times ``field_times`` (relative error: divided by :math:`E\|u_t(x)\|^2`). A
``reference`` row gives the metrics of a second independent data sample (the floor set by
the sample size) and, for a mixture, the exact NLL.

Outputs in the run directory (``--out``, default ``runs/ablation-<preset>``): ``config.json``,
``results.{json,csv,md}`` (one row per dataset x method x scheduler x sampler x sigma x
steps), ``models.{json,csv,md}`` (training loss, time, field error per trained model),
``training.json`` (per run: resumed from which step, wall time), figures
``<dataset>_{samples,metrics,trajectories,vector_field,field_error}.png``, and
``checkpoints/`` (orbax, one directory per trained method). Rerunning the same command in
the same directory resumes an interrupted training from its latest checkpoint (a finished
one is only restored) and recomputes the evaluation.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import (
    cli,
    Timer,
    markdown_table,
    parse_config,
    progress,
    require,
    run_dir,
    save_json,
    write_table,
)
from jflow import metrics as jmetrics
from jflow import paths, schedulers
from jflow.data import TOYS, get_toy
from jflow.integrators import num_evals, sdeint, uniform_grid
from jflow.losses import make_loss
from jflow.marginals import GaussianMixture, marginal_velocity
from jflow.models import MLP
from jflow.sampling import as_score, as_velocity, sample_ode, sde_extension_drift
from jflow.train import (
    CheckpointError,
    Checkpointer,
    create_train_state,
    current_step,
    fit,
    make_optimizer,
    make_vmapped_train_step,
)

__all__ = ["AblationConfig", "PRESETS", "METHODS", "SCHEDULERS", "SAMPLERS", "main", "run"]

#: method name -> what the network predicts (the loss's parameterisation).
METHODS = {"flow_matching": "velocity", "score_matching": "score", "noise_prediction": "noise"}
#: Gaussian paths available to the score-based methods.
SCHEDULERS = ("linear", "cosine", "vp")
SAMPLERS = ("euler", "heun", "euler_maruyama")
ODE_SAMPLERS = ("euler", "heun")
#: the path of flow matching (CondOT).
FLOW_MATCHING_SCHEDULER = "linear"
METRICS = ("energy", "mmd", "sw2", "nll")


@dataclasses.dataclass(frozen=True)
class AblationConfig:
    """CondOT flow matching vs score matching ablation on 2-D toy data (experiments/ablation.py)."""

    datasets: Tuple[str, ...] = ("symmetric_mixture",)
    methods: Tuple[str, ...] = tuple(METHODS)
    schedulers: Tuple[str, ...] = ("linear",)
    seeds: int = 3
    seed: int = 0
    width: int = 64
    depth: int = 2
    train_steps: int = 2000
    batch_size: int = 256
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    ema_decay: float = 0.0
    steps_per_call: int = 100
    save_every: int = 500
    score_t_max: float = 1.0 - 1e-3
    samplers: Tuple[str, ...] = SAMPLERS
    sigmas: Tuple[float, ...] = (0.5, 1.0)
    sample_steps: Tuple[int, ...] = (4, 8, 16, 32, 64)
    t_eps: float = 1e-3
    n_samples: int = 1000
    n_eval: int = 1000
    nll_samples: int = 300
    field_times: Tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    field_samples: int = 500
    sliced_projections: int = 128
    figures: bool = True

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field (before anything runs)."""
        require(len(self.datasets) > 0, "datasets", "give at least one toy distribution")
        for name in self.datasets:
            require(name in TOYS, "datasets", f"unknown toy distribution {name!r}; choose from {sorted(TOYS)}")
        require(len(self.methods) > 0, "methods", "give at least one method")
        for name in self.methods:
            require(name in METHODS, "methods", f"unknown method {name!r}; choose from {list(METHODS)}")
        require(len(set(self.methods)) == len(self.methods), "methods", "duplicate entries")
        require(len(self.schedulers) > 0, "schedulers", "give at least one Gaussian-path scheduler")
        for name in self.schedulers:
            require(name in SCHEDULERS, "schedulers", f"unknown scheduler {name!r}; choose from {list(SCHEDULERS)}")
        require(len(set(self.schedulers)) == len(self.schedulers), "schedulers", "duplicate entries")
        for field in ("seeds", "width", "depth", "train_steps", "batch_size", "steps_per_call",
                      "save_every", "n_samples", "n_eval", "nll_samples", "field_samples",
                      "sliced_projections"):
            value = getattr(self, field)
            require(isinstance(value, int) and value >= 1, field, f"must be a positive integer; got {value!r}")
        require(self.seed >= 0, "seed", f"must be >= 0; got {self.seed}")
        require(self.train_steps % self.steps_per_call == 0, "train_steps",
                f"must be a multiple of steps_per_call={self.steps_per_call}; got {self.train_steps}")
        require(self.save_every % self.steps_per_call == 0, "save_every",
                f"must be a multiple of steps_per_call={self.steps_per_call}; got {self.save_every}")
        require(0 <= self.warmup_steps < self.train_steps, "warmup_steps",
                f"must satisfy 0 <= warmup_steps < train_steps={self.train_steps}; got {self.warmup_steps}")
        require(math.isfinite(self.learning_rate) and self.learning_rate > 0, "learning_rate",
                f"must be > 0; got {self.learning_rate}")
        require(0.0 <= self.ema_decay < 1.0, "ema_decay", f"must lie in [0, 1) (0 = no EMA); got {self.ema_decay}")
        require(0.5 < self.score_t_max < 1.0, "score_t_max",
                f"must lie in (0.5, 1): the score target -eps/beta_t is infinite at t = 1; got {self.score_t_max}")
        require(len(self.samplers) > 0, "samplers", "give at least one sampler")
        for name in self.samplers:
            require(name in SAMPLERS, "samplers", f"unknown sampler {name!r}; choose from {list(SAMPLERS)}")
        if "euler_maruyama" in self.samplers:
            require(len(self.sigmas) > 0, "sigmas", "euler_maruyama needs at least one diffusion level sigma")
        for s in self.sigmas:
            require(math.isfinite(s) and s > 0, "sigmas", f"each sigma must be > 0 (sigma = 0 is the Euler ODE); got {s}")
        require(len(self.sample_steps) > 0, "sample_steps", "give at least one number of sampling steps")
        for n in self.sample_steps:
            require(1 <= n <= 1024, "sample_steps", f"each number of steps must be an integer in [1, 1024]; got {n}")
        require(0.0 < self.t_eps < 0.1, "t_eps", f"must lie in (0, 0.1) (grid [t_eps, 1 - t_eps]); got {self.t_eps}")
        require(len(self.field_times) > 0, "field_times", "give at least one time")
        for t in self.field_times:
            require(0.0 < t < 1.0, "field_times", f"each time must lie in (0, 1) (flow time); got {t}")

    def training_signature(self, dataset: str, method: str, scheduler: str) -> dict:
        """Everything that determines one training run (stored with its checkpoints)."""
        return {
            "dataset": dataset, "method": method, "scheduler": scheduler,
            "parameterization": METHODS[method], "seeds": self.seeds, "seed": self.seed,
            "width": self.width, "depth": self.depth, "train_steps": self.train_steps,
            "batch_size": self.batch_size, "learning_rate": self.learning_rate,
            "warmup_steps": self.warmup_steps, "ema_decay": self.ema_decay,
            "steps_per_call": self.steps_per_call,
            "score_t_max": self.score_t_max if METHODS[method] == "score" else None,
        }


PRESETS = {
    "default": {},
    "smoke": dict(
        seeds=2, width=16, depth=1, train_steps=20, batch_size=64, warmup_steps=2,
        steps_per_call=5, save_every=10, sigmas=(0.5,), sample_steps=(2, 4), n_samples=128,
        n_eval=128, nll_samples=32, field_times=(0.5,), field_samples=64, sliced_projections=16,
    ),
    "gpu": dict(
        datasets=("symmetric_mixture", "eight_gaussians", "checkerboard"),
        schedulers=("linear", "cosine", "vp"), seeds=5, width=256, depth=4, train_steps=20000,
        batch_size=1024, learning_rate=1e-3, warmup_steps=500, ema_decay=0.999,
        steps_per_call=500, save_every=5000, sigmas=(0.25, 0.5, 1.0),
        sample_steps=(4, 8, 16, 32, 64, 128, 256), n_samples=5000, n_eval=5000,
        nll_samples=2000, field_times=(0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95),
        field_samples=2000, sliced_projections=256,
    ),
}


# ------------------------------------------------------------------------------------------
# Runs
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One trained model family: a method on a path (all seeds of it are trained together)."""

    method: str
    scheduler: str

    @property
    def parameterization(self) -> str:
        return METHODS[self.method]

    @property
    def name(self) -> str:
        return f"{self.method}@{self.scheduler}"


def run_specs(cfg: AblationConfig) -> List[RunSpec]:
    """Flow matching on CondOT once; each score-based method on each Gaussian path of ``schedulers``."""
    specs = []
    for method in cfg.methods:
        if METHODS[method] == "velocity":
            specs.append(RunSpec(method, FLOW_MATCHING_SCHEDULER))
        else:
            specs.extend(RunSpec(method, s) for s in cfg.schedulers)
    return specs


def build_model(cfg: AblationConfig) -> MLP:
    return MLP(width=cfg.width, depth=cfg.depth)


def _seed_keys(cfg: AblationConfig, stream: int) -> jax.Array:
    """``(R, 2)`` keys, run ``r``: ``fold_in(fold_in(PRNGKey(seed), r), stream)``; equal for every method."""
    base = jax.random.PRNGKey(cfg.seed)
    return jnp.stack([jax.random.fold_in(jax.random.fold_in(base, r), stream) for r in range(cfg.seeds)])


@functools.lru_cache(maxsize=None)
def _init_fn(model: MLP, dim: int):
    """Jitted ``key -> params`` (one seed; compiled once per model and shared by every method)."""
    return jax.jit(lambda k: model.init(k, jnp.zeros((1, dim), jnp.float32), jnp.zeros((1,), jnp.float32)))


def _training_fns(cfg: AblationConfig, dataset: str, spec: RunSpec):
    """Cached :func:`_build_training_fns` keyed by the training signature (sampling settings do not matter)."""
    signature = cfg.training_signature(dataset, spec.method, spec.scheduler)
    return _build_training_fns(tuple(sorted(signature.items())))


@functools.lru_cache(maxsize=None)
def _build_training_fns(signature_items: tuple):
    """``(make_state, step_fn)`` of one training run family, cached so a rerun in-process does not recompile.

    ``make_state(stacked_params)`` is the vmapped :class:`~jflow.train.TrainState` of the
    ``seeds`` runs (``step`` of shape ``(seeds,)``); ``step_fn(states, batches, keys)``
    (:func:`jflow.train.make_vmapped_train_step` with ``fused=True``) does ``steps_per_call``
    updates of all runs at once (``lax.scan`` over the updates, ``jax.vmap`` over the runs).
    :func:`jflow.train.fit` and its :class:`~jflow.train.Checkpointer` take the vmapped state as
    one run at its common step.
    """
    sig = dict(signature_items)
    cfg = AblationConfig(**{k: v for k, v in sig.items() if k in AblationConfig.__dataclass_fields__ and v is not None})
    spec = RunSpec(sig["method"], sig["scheduler"])
    model = build_model(cfg)
    dist = get_toy(sig["dataset"])
    base_loss = make_loss(
        model.apply, schedulers.get(spec.scheduler), parameterization=spec.parameterization,
        t_max=cfg.score_t_max if spec.parameterization == "score" else None, time_bins=0,
    )

    def loss_fn(params, batch, key):
        # Fresh data every step from the run's key: every method sees the same data, times
        # and noise for a given seed (the key split is the same for every method).
        key_data, key_loss = jax.random.split(key)
        return base_loss(params, {"x": dist.sample(key_data, cfg.batch_size)}, key_loss)

    tx = make_optimizer(cfg.learning_rate, name="adam", warmup_steps=cfg.warmup_steps,
                        total_steps=cfg.train_steps)
    ema = cfg.ema_decay if cfg.ema_decay > 0 else None
    make_state = jax.jit(jax.vmap(lambda p: create_train_state(p, tx, ema_decay=ema)))
    # the batch (the step number) is shared by the runs and unused: the loss draws its data
    return make_state, make_vmapped_train_step(lambda _: loss_fn, fused=True)


def initial_params(cfg: AblationConfig, dim: int):
    """Initial parameters of the ``seeds`` runs, stacked (leading axis ``seeds``); equal for every method."""
    init = _init_fn(build_model(cfg), dim)
    keys = _seed_keys(cfg, 0)
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *[init(keys[r]) for r in range(cfg.seeds)])


def train(cfg: AblationConfig, dataset: str, spec: RunSpec, ckpt_dir: Path, bar) -> Tuple[dict, dict]:
    """Train ``cfg.seeds`` runs of ``spec`` together (vmapped, ``steps_per_call`` fused updates per call).

    Uses :func:`jflow.train.fit`: checkpoints every ``save_every`` steps into ``ckpt_dir`` and
    resumes from the latest checkpoint there (its stored training signature must match).
    Returns the stacked final parameters (EMA if enabled) and a dict of training facts.
    """
    make_state, step_fn = _training_fns(cfg, dataset, spec)
    states = make_state(initial_params(cfg, get_toy(dataset).dim))
    signature = cfg.training_signature(dataset, spec.method, spec.scheduler)
    k = cfg.steps_per_call
    losses: List[Tuple[int, float]] = []

    def log_fn(step, logged):
        losses.append((step, logged["loss"]))
        bar.update(k)
        bar.set_postfix_str(f"{dataset} {spec.name} loss={logged['loss']:.4g}")

    with Checkpointer(ckpt_dir, max_to_keep=2) as ckpt:
        resumed_from = ckpt.latest_step() or 0
        bar.update(resumed_from)
        with Timer() as timer:
            states, _ = fit(
                step_fn, states, lambda s: np.int32(s), _seed_keys(cfg, 1),
                num_steps=cfg.train_steps, steps_per_call=k, checkpointer=ckpt,
                save_every=cfg.save_every, config=signature, log_every=k, log_fn=log_fn,
            )
            jax.block_until_ready(states.params)
    # restored arrays are placed like the fresh state (uncommitted): the samplers do not recompile
    final = states.ema_params if states.ema_params is not None else states.params
    tail = [v for _, v in losses[-max(1, len(losses) // 10):]]
    info = {
        "dataset": dataset, "run": spec.name, "resumed_from_step": int(resumed_from),
        "final_step": current_step(states), "steps_trained_now": cfg.train_steps - int(resumed_from),
        "train_seconds": timer.seconds, "final_loss": float(np.mean(tail)) if tail else None,
        "loss_curve": losses,
    }
    return final, info


# ------------------------------------------------------------------------------------------
# Sampling and evaluation
# ------------------------------------------------------------------------------------------
#
# One compiled function per (model, method, path, sampler) serves every step count: the grid
# of n steps is padded to the largest count with points just past its end (spacing
# ``delta = t_eps / (2 * max_steps)``, so they stay inside (1 - t_eps, 1 - t_eps / 2)), and
# outside the window [t_start - delta/2, t_end + delta/2] the drift and sigma are switched
# off by ``lax.cond``: a padded step leaves the state exactly unchanged and costs no network
# evaluation (the predicate depends on t only, so it stays a real branch under vmap).


def _gate(f: Callable) -> Callable:
    """``g(x, t, params, window, *rest)``: ``f(x, t, params, *rest)`` inside ``window = [lo, hi]``, else 0."""

    def g(x, t, params, window, *rest):
        active = (t >= window[0]) & (t <= window[1])
        return jax.lax.cond(active, lambda: f(x, t, params, *rest), lambda: jnp.zeros_like(x))

    return g


@functools.lru_cache(maxsize=None)
def _fields(model: MLP, parameterization: str, scheduler: str):
    """``(sched, u, score)``: the network as velocity and as score (jflow.sampling conversions)."""
    sched = schedulers.get(scheduler)

    def net(x, t, params):
        return model.apply(params, x, t)

    return sched, as_velocity(net, sched, parameterization), as_score(net, sched, parameterization)


@functools.lru_cache(maxsize=None)
def _ode_sampler(model: MLP, parameterization: str, scheduler: str, method: str, trajectory: bool = True):
    """Jitted ``(params (R, ...), x0 (R, N, d), ts, window) -> (R, len(ts), N, d)`` trajectories."""
    _, u, _ = _fields(model, parameterization, scheduler)
    u_gated = _gate(u)

    def one(params, x0, ts, window):
        return sample_ode(u_gated, x0, ts, method=method, trajectory=trajectory, args=(params, window))

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None, None)))


@functools.lru_cache(maxsize=None)
def _sde_sampler(model: MLP, parameterization: str, scheduler: str, trajectory: bool = True):
    """Jitted ``(params, x0, ts, window, sigma, keys (R, 2)) -> (R, len(ts), N, d)``: Euler-Maruyama of the
    SDE extension trick (``jflow.sampling.sde_extension_drift``) with constant ``sigma`` (an array
    argument, no recompilation per value)."""
    _, u, score = _fields(model, parameterization, scheduler)

    def extension_drift(x, t, params, sigma):
        return sde_extension_drift(u, score, sigma)(x, t, params)

    drift = _gate(extension_drift)

    def sigma_fn(t, params, window, sigma):
        return jnp.where((t >= window[0]) & (t <= window[1]), sigma, jnp.zeros_like(sigma))

    def one(params, x0, ts, window, sigma, key):
        return sdeint(drift, sigma_fn, x0, ts, key=key, trajectory=trajectory, args=(params, window, sigma))

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None, None, None, 0)))


@functools.lru_cache(maxsize=None)
def _nll_fn(model: MLP, parameterization: str, scheduler: str, method: str):
    """Jitted ``(params, x, ts_decreasing, window) -> (R,)`` mean NLL (exact divergence, 2-D)."""
    _, u, _ = _fields(model, parameterization, scheduler)
    u_gated = _gate(u)

    def one(params, x, ts, window):
        return jmetrics.negative_log_likelihood(u_gated, x, ts, method=method, divergence="exact",
                                                args=(params, window))

    return jax.jit(jax.vmap(one, in_axes=(0, None, None, None)))


@functools.lru_cache(maxsize=None)
def _field_error_fn(model: MLP, parameterization: str, scheduler: str):
    """Jitted ``(params, gm, z, eps, t) -> (mse (R,), E||u_exact||^2)`` of the velocity at ``x_t``."""
    sched, u, _ = _fields(model, parameterization, scheduler)

    def errors(params, gm, z, eps, t):
        x = paths.sample_conditional(sched, z, eps, t)
        exact = marginal_velocity(sched, gm, x, t)
        learned = jax.vmap(lambda p: u(x, t, p))(params)
        mse = jnp.mean(jnp.sum((learned - exact) ** 2, axis=-1), axis=-1)
        return mse, jnp.mean(jnp.sum(exact ** 2, axis=-1))

    return jax.jit(errors)


@functools.lru_cache(maxsize=None)
def _quiver_fns(model: MLP, parameterization: str, scheduler: str):
    """Jitted learned velocity ``(x, t, params)`` and exact marginal velocity ``(gm, x, t)``."""
    sched, u, _ = _fields(model, parameterization, scheduler)
    return jax.jit(u), jax.jit(lambda gm, x, t: marginal_velocity(sched, gm, x, t))


@functools.partial(jax.jit, static_argnums=2)
def _sample_data(dist, key, n: int):
    return dist.sample(key, n)


def sample_grid(cfg: AblationConfig, n_steps: int) -> jax.Array:
    """The sampling grid shared by all methods: ``n_steps`` uniform steps on ``[t_eps, 1 - t_eps]``."""
    return uniform_grid(n_steps, cfg.t_eps, 1.0 - cfg.t_eps, dtype=jnp.float32)


def padded_grid(cfg: AblationConfig, n_steps: int, *, reverse: bool = False) -> Tuple[jax.Array, jax.Array]:
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


def _mean_std(values) -> Tuple[float, float]:
    v = np.asarray(values, np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _two_sample_metrics(cfg, x, y, key) -> Dict[str, float]:
    return {
        "energy": float(jmetrics.energy_distance(x, y)),
        "mmd": float(jmetrics.mmd(x, y)),
        "sw2": float(jmetrics.sliced_wasserstein(x, y, key=key, num_projections=cfg.sliced_projections)),
    }


def sampler_settings(cfg: AblationConfig) -> List[Tuple[str, float]]:
    """``(sampler, sigma)`` pairs: ``(ode, 0.0)`` for the ODE samplers, one per sigma for the SDE."""
    out = []
    for s in cfg.samplers:
        out.extend([(s, float(sig)) for sig in cfg.sigmas] if s == "euler_maruyama" else [(s, 0.0)])
    return out


def evaluate(cfg, dataset, spec, params, heldout, bar) -> Tuple[List[dict], Dict[Tuple, np.ndarray]]:
    """Sample ``spec``'s models with every sampler, sigma and step count; rows of metrics (mean/std over seeds).

    Returns the rows and the trajectories ``(len(ts), N, d)`` of seed 0 at the largest step
    count for each ``(sampler, sigma)`` (for the figures).
    """
    model = build_model(cfg)
    param, sched_name = spec.parameterization, spec.scheduler
    dim = heldout.shape[1]
    x0 = jax.random.normal(jax.random.PRNGKey(cfg.seed + 1), (cfg.seeds, cfg.n_samples, dim), jnp.float32)
    sde_keys = _seed_keys(cfg, 2)
    metric_key = jax.random.PRNGKey(cfg.seed + 3)
    nll_x = heldout[: cfg.nll_samples]
    rows, kept = [], {}
    for sampler, sigma in sampler_settings(cfg):
        for n in cfg.sample_steps:
            ts, window = padded_grid(cfg, n)
            if sampler == "euler_maruyama":
                xs = _sde_sampler(model, param, sched_name)(params, x0, ts, window, jnp.float32(sigma), sde_keys)
            else:
                xs = _ode_sampler(model, param, sched_name, sampler)(params, x0, ts, window)
            traj = np.asarray(xs)  # (R, len(ts), N, d); padded steps repeat the final state
            xs = traj[:, -1]
            per_seed = {m: [] for m in METRICS}
            finite = np.isfinite(xs).all(axis=(1, 2))
            for r in range(cfg.seeds):
                if finite[r]:
                    for m, v in _two_sample_metrics(cfg, xs[r], heldout, metric_key).items():
                        per_seed[m].append(v)
                else:
                    for m in ("energy", "mmd", "sw2"):
                        per_seed[m].append(float("nan"))
            if sampler in ODE_SAMPLERS:
                ts_back, window = padded_grid(cfg, n, reverse=True)
                nll = np.asarray(_nll_fn(model, param, sched_name, sampler)(params, nll_x, ts_back, window))
                per_seed["nll"] = list(nll)
            row = {
                "dataset": dataset, "method": spec.method, "scheduler": sched_name,
                "parameterization": param, "sampler": sampler, "sigma": sigma, "steps": n,
                "nfe": num_evals(sampler, n),
            }
            for m in METRICS:
                if per_seed[m]:
                    row[f"{m}_mean"], row[f"{m}_std"] = _mean_std(per_seed[m])
                else:
                    row[f"{m}_mean"], row[f"{m}_std"] = None, None
            rows.append(row)
            if n == max(cfg.sample_steps):
                kept[(sampler, sigma)] = traj[0]  # seed 0, for the figures
            bar.update(1)
    return rows, kept


def field_error(cfg, spec, params, gm: GaussianMixture, heldout) -> dict:
    r"""Mean squared error of the learned velocity (converted) against the exact marginal velocity.

    :math:`E_{x \sim p_t}\|u^\theta_t(x) - u_t(x)\|^2` for each ``t`` in ``field_times`` (the
    exact field of the run's own path), mean over times; also relative to :math:`E\|u_t\|^2`.
    """
    model = build_model(cfg)
    fn = _field_error_fn(model, spec.parameterization, spec.scheduler)
    z = heldout[: cfg.field_samples]
    per_t, rel_t = [], []
    for i, t in enumerate(cfg.field_times):
        eps = jax.random.normal(jax.random.PRNGKey(10_000 + i), z.shape, jnp.float32)
        mse, ref = fn(params, gm, z, eps, jnp.float32(t))
        per_t.append(np.asarray(mse))
        rel_t.append(np.asarray(mse) / float(ref))
    per_t, rel_t = np.stack(per_t), np.stack(rel_t)  # (T, R)
    mse_mean, mse_std = _mean_std(per_t.mean(axis=0))
    rel_mean, rel_std = _mean_std(rel_t.mean(axis=0))
    return {
        "field_mse_mean": mse_mean, "field_mse_std": mse_std,
        "field_rel_mean": rel_mean, "field_rel_std": rel_std,
        "field_mse_by_t": {f"{t:g}": float(v) for t, v in zip(cfg.field_times, per_t.mean(axis=1))},
    }


def reference_row(cfg, dataset, dist, heldout) -> dict:
    """Metrics of a second independent data sample of size ``n_samples`` (the floor), and exact NLL."""
    other = np.asarray(_sample_data(dist, jax.random.PRNGKey(cfg.seed + 5), cfg.n_samples))
    m = _two_sample_metrics(cfg, other, heldout, jax.random.PRNGKey(cfg.seed + 3))
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


# ------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(sampler, sigma):
    return f"EM sigma={sigma:g}" if sampler == "euler_maruyama" else sampler


def plot_samples(path, cfg, specs, samples, heldout):
    plt = _plt()
    settings = sampler_settings(cfg)
    ncols = 1 + len(settings)
    fig, axes = plt.subplots(len(specs), ncols, figsize=(2.6 * ncols, 2.6 * len(specs)), squeeze=False)
    lim = float(np.quantile(np.abs(heldout), 0.995)) * 1.25
    for i, spec in enumerate(specs):
        axes[i, 0].scatter(heldout[:, 0], heldout[:, 1], s=1, c="gray")
        axes[i, 0].set_title("held-out data" if i == 0 else "")
        axes[i, 0].set_ylabel(spec.name, fontsize=8)
        for j, setting in enumerate(settings, start=1):
            x = samples[spec.name][setting][-1]
            axes[i, j].scatter(x[:, 0], x[:, 1], s=1, c="C%d" % (i % 10))
            if i == 0:
                axes[i, j].set_title(f"{_label(*setting)}, {max(cfg.sample_steps)} steps", fontsize=8)
    for ax in axes.ravel():
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal")
    fig.suptitle("samples (seed 0) per method and sampler")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_metrics(path, cfg, rows, reference):
    plt = _plt()
    settings = sampler_settings(cfg)
    metric_names = [m for m in METRICS if any(r.get(f"{m}_mean") is not None for r in rows)]
    fig, axes = plt.subplots(len(metric_names), len(settings),
                             figsize=(3.2 * len(settings), 2.6 * len(metric_names)), squeeze=False)
    runs = list(dict.fromkeys((r["method"], r["scheduler"]) for r in rows))
    for i, m in enumerate(metric_names):
        for j, (sampler, sigma) in enumerate(settings):
            ax = axes[i, j]
            for c, run in enumerate(runs):
                sel = [r for r in rows if (r["method"], r["scheduler"]) == run and r["sampler"] == sampler
                       and r["sigma"] == sigma and r.get(f"{m}_mean") is not None]
                if not sel:
                    continue
                steps = [r["steps"] for r in sel]
                mean = np.array([r[f"{m}_mean"] for r in sel])
                std = np.array([r[f"{m}_std"] for r in sel])
                ax.errorbar(steps, mean, yerr=std, marker="o", ms=3, capsize=2, color=f"C{c}",
                            label=f"{run[0]}@{run[1]}")
            if not ax.lines:
                ax.set_axis_off()
                ax.text(0.5, 0.5, f"no {m} for the SDE", ha="center", va="center", transform=ax.transAxes)
                continue
            if reference.get(f"{m}_mean") is not None:
                ax.axhline(reference[f"{m}_mean"], color="k", ls="--", lw=0.8, label="reference")
            ax.set_xscale("log", base=2)
            if m != "nll":
                ax.set_yscale("log")
            if i == 0:
                ax.set_title(_label(sampler, sigma), fontsize=9)
            if j == 0:
                ax.set_ylabel(m)
            if i == len(metric_names) - 1:
                ax.set_xlabel("steps")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle("metric vs number of steps (mean +- std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_trajectories(path, cfg, specs, heldout, samples, n_paths=150):
    """ODE (Heun if sampled, else the first ODE sampler) and SDE (largest sigma) paths of seed 0."""
    plt = _plt()
    n = max(cfg.sample_steps)
    settings = sampler_settings(cfg)
    ode = [s for s in settings if s[0] == "heun"] or [s for s in settings if s[0] != "euler_maruyama"]
    sde = sorted(s for s in settings if s[0] == "euler_maruyama")
    shown = ode[:1] + sde[-1:]
    fig, axes = plt.subplots(len(shown), len(specs), figsize=(3.0 * len(specs), 3.0 * len(shown)), squeeze=False)
    lim = float(np.quantile(np.abs(heldout), 0.995)) * 1.25
    for j, spec in enumerate(specs):
        for i, setting in enumerate(shown):
            traj = np.asarray(samples[spec.name][setting])[:, :n_paths]
            ax = axes[i, j]
            ax.scatter(heldout[:, 0], heldout[:, 1], s=1, c="lightgray")
            ax.plot(traj[:, :, 0], traj[:, :, 1], lw=0.4, alpha=0.5, color="C0")
            ax.scatter(traj[0, :, 0], traj[0, :, 1], s=3, c="k", label="t = t_eps")
            ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=3, c="C3", label="t = 1 - t_eps")
            ax.set_title(f"{spec.name}\n{_label(*setting)}, {n} steps", fontsize=8)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
    axes[0, 0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_vector_field(path, cfg, specs, heldout, all_params, gm, times=(0.25, 0.5, 0.75, 0.9)):
    """Quiver of the learned velocity (seed 0, converted) and of the exact marginal velocity."""
    plt = _plt()
    model = build_model(cfg)
    lim = float(np.quantile(np.abs(heldout), 0.995)) * 1.1
    g = np.linspace(-lim, lim, 15, dtype=np.float32)
    grid = jnp.asarray(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2))
    fig, axes = plt.subplots(len(times), len(specs), figsize=(3.0 * len(specs), 3.0 * len(times)), squeeze=False)
    for j, spec in enumerate(specs):
        learned_fn, exact_fn = _quiver_fns(model, spec.parameterization, spec.scheduler)
        params0 = jax.tree.map(lambda p: p[0], all_params[spec.name])
        for i, t in enumerate(times):
            ax = axes[i, j]
            learned = np.asarray(learned_fn(grid, jnp.float32(t), params0))
            exact = np.asarray(exact_fn(gm, grid, jnp.float32(t))) if gm is not None else None
            # one arrow scale for both fields of a panel: the longest reference arrow spans 1.5 cells
            ref = exact if exact is not None else learned
            scale = float(np.max(np.linalg.norm(ref, axis=-1))) / (1.5 * (g[1] - g[0])) + 1e-12
            ax.quiver(grid[:, 0], grid[:, 1], learned[:, 0], learned[:, 1], color="C3", alpha=0.8,
                      angles="xy", scale_units="xy", scale=scale, label="learned")
            if exact is not None:
                ax.quiver(grid[:, 0], grid[:, 1], exact[:, 0], exact[:, 1], color="k", alpha=0.5,
                          angles="xy", scale_units="xy", scale=scale, label="exact")
            ax.set_title(f"{spec.name}, t={t:g}", fontsize=8)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].legend(fontsize=6, loc="lower left")
    fig.suptitle("learned (red) vs exact marginal (black) velocity" if gm is not None else "learned velocity")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_field_error(path, cfg, model_rows):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for c, row in enumerate(model_rows):
        ts = [float(t) for t in row["field_mse_by_t"]]
        ax.plot(ts, list(row["field_mse_by_t"].values()), marker="o", color=f"C{c}", label=row["run"])
    ax.set_yscale("log")
    ax.set_xlabel("t (flow time)")
    ax.set_ylabel("E||u_learned - u_exact||^2 (seed mean)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------


def _summary(rows: List[dict], cfg: AblationConfig) -> str:
    """Readable Markdown: every row at the largest step count, metrics as ``mean +- std``."""
    n = max(cfg.sample_steps)
    out = []
    for r in rows:
        if r["steps"] not in (n, 0):
            continue
        s = {"dataset": r["dataset"], "method": r["method"], "path": r["scheduler"],
             "sampler": _label(r["sampler"], r["sigma"]) if r["sampler"] != "-" else "-",
             "steps": r["steps"]}
        for m in METRICS:
            mean, std = r.get(f"{m}_mean"), r.get(f"{m}_std")
            s[m] = "-" if mean is None else (f"{mean:.4g}" if not std else f"{mean:.4g} +- {std:.2g}")
        out.append(s)
    return markdown_table(out)


def run(cfg: AblationConfig, out: Path, preset: str = "custom") -> dict:
    """Train, sample and evaluate every method for ``cfg``; write every output into ``out``."""
    specs = run_specs(cfg)
    resolved = dataclasses.asdict(cfg)
    resolved.update(preset=preset, runs=[s.name for s in specs],
                    sampling_grid=f"uniform, {list(cfg.sample_steps)} steps on [{cfg.t_eps}, {1 - cfg.t_eps}]",
                    devices=[str(d) for d in jax.devices()])
    save_json(out / "config.json", resolved)

    all_rows, model_rows, training, figures = [], [], [], []
    previous_file = out / "training.json"
    previous = ({(d["dataset"], d["run"]): d for d in json.loads(previous_file.read_text())}
                if previous_file.is_file() else {})
    n_eval_jobs = len(cfg.datasets) * len(specs) * len(sampler_settings(cfg)) * len(cfg.sample_steps)
    train_bar = progress(total=len(cfg.datasets) * len(specs) * cfg.train_steps, desc="train")
    eval_bar = None
    for dataset in cfg.datasets:
        dist = get_toy(dataset)
        gm = dist if isinstance(dist, GaussianMixture) else None
        heldout = np.asarray(_sample_data(dist, jax.random.PRNGKey(cfg.seed + 1_000_003), cfg.n_eval))
        params, samples = {}, {}
        for spec in specs:
            p, info = train(cfg, dataset, spec, out / "checkpoints" / f"{dataset}-{spec.method}-{spec.scheduler}",
                            train_bar)
            params[spec.name] = p
            earlier = previous.get((dataset, spec.name))
            if earlier is not None and info["resumed_from_step"] > 0:
                # the loss curve up to the checkpoint comes from the earlier, interrupted run
                info["loss_curve"] = [pt for pt in earlier.get("loss_curve", [])
                                      if pt[0] <= info["resumed_from_step"]] + info["loss_curve"]
                curve = [v for _, v in info["loss_curve"]]
                tail = curve[-max(1, len(curve) // 10):]
                info["final_loss"] = float(np.mean(tail)) if tail else None
            training.append(info)
        if eval_bar is None:
            train_bar.close()
            eval_bar = progress(total=n_eval_jobs, desc="sample")
        reference = reference_row(cfg, dataset, dist, heldout)
        rows = []
        for spec, info in zip(specs, training[-len(specs):]):
            r, samples[spec.name] = evaluate(cfg, dataset, spec, params[spec.name], heldout, eval_bar)
            rows.extend(r)
            mrow = {"dataset": dataset, "run": spec.name, "method": spec.method, "scheduler": spec.scheduler,
                    "parameterization": spec.parameterization, "final_loss": info["final_loss"],
                    "train_seconds": info["train_seconds"], "resumed_from_step": info["resumed_from_step"]}
            if gm is not None:
                mrow.update(field_error(cfg, spec, params[spec.name], gm, heldout))
            model_rows.append(mrow)
        all_rows.append(reference)
        all_rows.extend(rows)
        if cfg.figures:
            figs = {
                "samples": lambda p: plot_samples(p, cfg, specs, samples, heldout),
                "metrics": lambda p: plot_metrics(p, cfg, rows, reference),
                "trajectories": lambda p: plot_trajectories(p, cfg, specs, heldout, samples),
                "vector_field": lambda p: plot_vector_field(p, cfg, specs, heldout, params, gm),
            }
            if gm is not None:
                figs["field_error"] = lambda p: plot_field_error(
                    p, cfg, [m for m in model_rows if m["dataset"] == dataset])
            for name, draw in figs.items():
                path = out / f"{dataset}_{name}.png"
                draw(path)
                figures.append(str(path))
        if gm is None:
            print(f"[{dataset}] not a Gaussian mixture: no exact marginal field, field error skipped",
                  file=sys.stderr)
    if eval_bar is not None:
        eval_bar.close()

    write_table(all_rows, out, "results")
    flat_models = [{k: v for k, v in m.items() if k != "field_mse_by_t"} for m in model_rows]
    write_table(flat_models, out, "models")
    save_json(out / "models_field_error_by_t.json", model_rows)
    save_json(out / "training.json", training)
    summary = _summary(all_rows, cfg)
    models_md = markdown_table([
        {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in m.items()
         if k in ("dataset", "run", "final_loss", "train_seconds", "field_mse_mean", "field_mse_std",
                  "field_rel_mean")}
        for m in flat_models
    ])
    print(f"\n## Results at {max(cfg.sample_steps)} steps (mean +- std over {cfg.seeds} seeds)\n")
    print(summary)
    print("\n## Trained models (field error: E||u_learned - u_exact||^2 over x ~ p_t, t in field_times)\n")
    print(models_md)
    print(f"\nfull table: {out / 'results.md'} (also .csv, .json); figures: {', '.join(figures)}")
    return {"rows": all_rows, "models": model_rows, "training": training, "figures": figures}


def main(argv=None) -> dict:
    """Parse ``argv`` (preset and ``--field value`` overrides), validate, then :func:`run`.

    Raises :class:`experiments.common.ConfigError` for an invalid configuration before
    anything is trained or written.
    """
    cfg, args = parse_config(AblationConfig, PRESETS, argv, description=AblationConfig.__doc__)
    out = run_dir(args.out, f"ablation-{args.preset}")
    return run(cfg, out, args.preset)


if __name__ == "__main__":
    cli(main, CheckpointError)
