"""The ablation's choices (methods, paths, samplers), its config, presets and random streams.

Adding a method is one entry of :data:`METHODS` (its parameterisation, path and loss
options); adding a sampler is one entry of :data:`experiments.ablation.samplers.SAMPLERS`.
Everything else (validation, training, evaluation, tables, figures) reads these registries.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, List, NamedTuple, Optional, Tuple

import jax

from experiments.ablation.samplers import SAMPLERS
from experiments.common import require, require_positive_ints, run_fold, seed_offset
from jflow.data import TOYS
from jflow.losses import SCORE_T_MAX
from jflow.models import MLP


class Method(NamedTuple):
    """One trained method of the ablation.

    ``parameterization``: what the network predicts (:func:`jflow.losses.make_loss`).
    ``path``: the scheduler the method always uses, or ``None`` for one run per entry of the
    config's ``schedulers``. ``loss_options(cfg)``: the method's extra keyword arguments of
    ``make_loss`` (time range, weighting).
    """

    parameterization: str
    path: Optional[str]
    loss_options: Callable[["AblationConfig"], dict]


def _no_loss_options(cfg: "AblationConfig") -> dict:
    return {}


def _score_loss_options(cfg: "AblationConfig") -> dict:
    """Algorithm 5 trains on ``t <= score_t_max``: its target ``-eps / beta_t`` is infinite at ``t = 1``."""
    return {"t_max": cfg.score_t_max}


#: method name -> how it is trained (flow matching always on the CondOT path).
METHODS = {
    "flow_matching": Method("velocity", "linear", _no_loss_options),
    "score_matching": Method("score", None, _score_loss_options),
    "noise_prediction": Method("noise", None, _no_loss_options),
}
#: Gaussian paths available to the methods without a fixed path.
SCHEDULERS = ("linear", "cosine", "vp")
METRICS = ("energy", "mmd", "sw2", "nll")

#: Every random stream of a run, derived from ``seed`` as in the published results (a change
#: here changes the tables). Run ``r`` of every method gets the same init, training and SDE
#: keys, so all methods see the same data, times and noise per seed.
STREAMS = {
    "init": run_fold(0),  # network initialisation of run r
    "train": run_fold(1),  # data, times and noise of run r's training
    "sde": run_fold(2),  # Brownian increments of run r's SDE sampling
    "x0": seed_offset(1),  # initial noise of the samplers (every run, method and sampler)
    "metrics": seed_offset(3),  # projections of the sliced Wasserstein distance
    "reference": seed_offset(5),  # the second data sample of the reference row
    "heldout": seed_offset(1_000_003),  # held-out data (independent of training)
    "field_noise": lambda seed, i: jax.random.PRNGKey(10_000 + i),  # eps of x_t at field time i
}


@dataclasses.dataclass(frozen=True)
class AblationConfig:
    """CondOT flow matching vs score matching ablation on 2-D toy data (experiments/ablation/)."""

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
    score_t_max: float = SCORE_T_MAX
    samplers: Tuple[str, ...] = tuple(SAMPLERS)
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
        _require_names(self.datasets, "datasets", sorted(TOYS), "toy distribution")
        _require_names(self.methods, "methods", list(METHODS), "method")
        _require_names(self.schedulers, "schedulers", list(SCHEDULERS), "scheduler")
        _require_names(self.samplers, "samplers", list(SAMPLERS), "sampler")
        require_positive_ints(self, "seeds", "width", "depth", "train_steps", "batch_size", "steps_per_call",
                              "save_every", "n_samples", "n_eval", "nll_samples", "field_samples",
                              "sliced_projections")
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
        self._validate_sampling()

    def _validate_sampling(self) -> None:
        if any(SAMPLERS[name].stochastic for name in self.samplers):
            require(len(self.sigmas) > 0, "sigmas", "a stochastic sampler needs at least one diffusion level sigma")
        for s in self.sigmas:
            require(math.isfinite(s) and s > 0, "sigmas", f"each sigma must be > 0 (sigma = 0 is the Euler ODE); got {s}")
        require(len(self.sample_steps) > 0, "sample_steps", "give at least one number of sampling steps")
        for n in self.sample_steps:
            require(1 <= n <= 1024, "sample_steps", f"each number of steps must be an integer in [1, 1024]; got {n}")
        require(0.0 < self.t_eps < 0.1, "t_eps", f"must lie in (0, 0.1) (grid [t_eps, 1 - t_eps]); got {self.t_eps}")
        require(len(self.field_times) > 0, "field_times", "give at least one time")
        for t in self.field_times:
            require(0.0 < t < 1.0, "field_times", f"each time must lie in (0, 1) (flow time); got {t}")

    def sampler_settings(self) -> List[Tuple[str, float]]:
        """``(sampler, sigma)`` pairs: ``(name, 0.0)`` for a deterministic sampler, one per sigma otherwise."""
        out = []
        for s in self.samplers:
            out.extend([(s, float(sig)) for sig in self.sigmas] if SAMPLERS[s].stochastic else [(s, 0.0)])
        return out

    def training_signature(self, dataset: str, method: str, scheduler: str) -> dict:
        """Everything that determines one training run (stored with its checkpoints)."""
        return {
            "dataset": dataset, "method": method, "scheduler": scheduler,
            "parameterization": METHODS[method].parameterization, "seeds": self.seeds, "seed": self.seed,
            "width": self.width, "depth": self.depth, "train_steps": self.train_steps,
            "batch_size": self.batch_size, "learning_rate": self.learning_rate,
            "warmup_steps": self.warmup_steps, "ema_decay": self.ema_decay,
            "steps_per_call": self.steps_per_call,
            "score_t_max": METHODS[method].loss_options(self).get("t_max"),
        }


def _require_names(names, field: str, choices, what: str) -> None:
    require(len(names) > 0, field, f"give at least one {what}")
    for name in names:
        require(name in choices, field, f"unknown {what} {name!r}; choose from {choices}")
    require(len(set(names)) == len(names), field, "duplicate entries")


PRESETS = {
    "default": {},
    # every code path once, as little compiling as that allows: a method on its own path and one on
    # the config's paths, one deterministic and one stochastic sampler, a padded and an unpadded grid
    "smoke": dict(
        methods=("flow_matching", "score_matching"), samplers=("euler", "euler_maruyama"),
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


class RunSpec(NamedTuple):
    """One trained model family: a method on a path (all seeds of it are trained together)."""

    method: str
    scheduler: str

    @property
    def parameterization(self) -> str:
        return METHODS[self.method].parameterization

    @property
    def name(self) -> str:
        return f"{self.method}@{self.scheduler}"


def run_specs(cfg: AblationConfig) -> List[RunSpec]:
    """A method with a fixed path once; every other method on each Gaussian path of ``schedulers``."""
    specs = []
    for name in cfg.methods:
        path = METHODS[name].path
        specs.extend([RunSpec(name, path)] if path is not None else [RunSpec(name, s) for s in cfg.schedulers])
    return specs


def build_model(cfg: AblationConfig) -> MLP:
    """The network every method trains (same architecture, so the same initial parameters per seed)."""
    return MLP(width=cfg.width, depth=cfg.depth)
