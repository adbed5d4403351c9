"""The ablation's configuration: runs (method x path x loss weighting), samplers, presets, validation."""
from __future__ import annotations

import dataclasses
import math
from typing import Tuple

import jax

from experiments.common import Streams, require, require_positive_ints, run_fold, seed_offset
from jflow.data import TOYS
from jflow.losses import LOSS_WEIGHTINGS, SCORE_T_MAX

#: method name -> what the network predicts (the loss's parameterisation).
METHODS = {
    "flow_matching": "velocity",
    "score_matching": "score",
    "noise_prediction": "noise",
    "data_prediction": "data",
}
#: Gaussian paths a run may train on (``jflow.schedulers.get`` names).
SCHEDULERS = ("linear", "cosine", "vp")
#: sampler -> parameterisations it is run for. ``euler``/``heun``: the generic flow ODE on the
#: converted velocity over ``[t_eps, 1 - t_eps]`` (the naive way); the others are each
#: parameterisation's own samplers over ``[t_eps, 1]``.
SAMPLERS = {
    "euler": ("velocity", "score", "noise", "data"),
    "heun": ("velocity", "score", "noise", "data"),
    "ddim": ("score", "noise", "data"),
    "dpm_solver_pp": ("score", "noise", "data"),
    "pc": ("score",),
}
GENERIC_SAMPLERS = ("euler", "heun")
# (``euler`` is not in the default set: on the CondOT path DDIM *is* Euler on the converted
# velocity, step for step, so the default keeps Heun as the generic ODE sampler.)
#: the default runs: Lipman et al.'s comparison (FM on CondOT and on the diffusion path, DDPM,
#: score matching), each loss with its proper weighting, plus Algorithm 5 as written (naive).
DEFAULT_RUNS = (
    "flow_matching@linear",
    "flow_matching@vp",
    "score_matching@linear",
    "score_matching@linear:noise",
    "score_matching@vp:noise",
    "noise_prediction@linear",
    "noise_prediction@vp",
)


#: Every random quantity of the ablation has a name; the derivations are those the published
#: results were made with (run ``r`` of every method gets the same init, data and noise).
STREAMS = {
    "init": run_fold(0),
    "train": run_fold(1),
    "sampler": run_fold(2),
    "x0": seed_offset(1),
    "metric": seed_offset(3),
    "reference": seed_offset(5),
    "heldout": seed_offset(1_000_003),
    "field": lambda seed, i: jax.random.PRNGKey(10_000 + i),
}


def streams(cfg) -> Streams:
    """The named random streams of a configuration's seed."""
    return Streams(cfg.seed, STREAMS)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One trained model family (all seeds trained together): ``method@path[:weighting]``."""

    method: str
    scheduler: str
    weighting: str = "none"

    @classmethod
    def parse(cls, text: str) -> "RunSpec":
        head, _, weighting = text.partition(":")
        method, _, scheduler = head.partition("@")
        return cls(method, scheduler, weighting or "none")

    @property
    def parameterization(self) -> str:
        return METHODS[self.method]

    @property
    def name(self) -> str:
        return f"{self.method}@{self.scheduler}" + (f":{self.weighting}" if self.weighting != "none" else "")

    def problem(self):
        """What is wrong with this spec (a message), or ``None``."""
        if self.method not in METHODS:
            return f"unknown method {self.method!r} in run {self.name!r}; choose from {list(METHODS)}"
        if self.scheduler not in SCHEDULERS:
            return f"unknown path {self.scheduler!r} in run {self.name!r}; choose from {list(SCHEDULERS)}"
        if self.weighting not in LOSS_WEIGHTINGS:
            return f"unknown loss weighting {self.weighting!r} in run {self.name!r}; choose from {list(LOSS_WEIGHTINGS)}"
        return None


@dataclasses.dataclass(frozen=True)
class AblationConfig:
    """CondOT flow matching vs score matching, each with its weighting and samplers (python -m experiments.ablation)."""

    # same shape as the other experiments' configs, with this experiment's defaults: each field is one
    # --flag of experiments.common.parse_config; a shared base class would hide them from the reader
    datasets: Tuple[str, ...] = ("symmetric_mixture", "eight_gaussians")
    runs: Tuple[str, ...] = DEFAULT_RUNS
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
    t_max: float = SCORE_T_MAX
    samplers: Tuple[str, ...] = ("heun", "ddim", "dpm_solver_pp", "pc")
    pc_snr: float = 0.05
    sample_steps: Tuple[int, ...] = (8, 64)
    t_eps: float = 1e-3
    adaptive_tol: float = 1e-5
    adaptive_samples: int = 256
    n_samples: int = 1000
    n_eval: int = 1000
    nll_samples: int = 300
    field_times: Tuple[float, ...] = (0.01, 0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99)
    field_samples: int = 500
    sliced_projections: int = 128
    figures: bool = True

    @property
    def specs(self) -> Tuple[RunSpec, ...]:
        return tuple(RunSpec.parse(r) for r in self.runs)

    def train_t_max(self, spec: RunSpec):
        """Upper end of training times: ``t_max`` where the target is infinite at ``t = 1``
        (the score's :math:`\\epsilon/\\beta_t`; every derivative of the VP path), else ``None`` (1)."""
        return self.t_max if spec.parameterization == "score" or spec.scheduler == "vp" else None

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field (before anything runs)."""
        require(len(self.datasets) > 0, "datasets", "give at least one toy distribution")
        for name in self.datasets:
            require(name in TOYS, "datasets", f"unknown toy distribution {name!r}; choose from {sorted(TOYS)}")
        require(len(self.runs) > 0, "runs", "give at least one run, e.g. flow_matching@linear")
        for spec in self.specs:
            problem = spec.problem()
            require(problem is None, "runs", problem or "")
        require(len(set(self.runs)) == len(self.runs), "runs", "duplicate entries")
        require_positive_ints(self, "seeds", "width", "depth", "train_steps", "batch_size", "steps_per_call",
                              "save_every", "n_samples", "adaptive_samples", "n_eval", "nll_samples", "field_samples",
                              "sliced_projections")
        require(self.seed >= 0, "seed", f"must be >= 0; got {self.seed}")
        for field in ("train_steps", "save_every"):
            require(getattr(self, field) % self.steps_per_call == 0, field,
                    f"must be a multiple of steps_per_call={self.steps_per_call}; got {getattr(self, field)}")
        require(0 <= self.warmup_steps < self.train_steps, "warmup_steps",
                f"must satisfy 0 <= warmup_steps < train_steps={self.train_steps}; got {self.warmup_steps}")
        require(math.isfinite(self.learning_rate) and self.learning_rate > 0, "learning_rate",
                f"must be > 0; got {self.learning_rate}")
        require(0.0 <= self.ema_decay < 1.0, "ema_decay", f"must lie in [0, 1) (0 = no EMA); got {self.ema_decay}")
        require(0.5 < self.t_max < 1.0, "t_max",
                f"must lie in (0.5, 1): the score target -eps/beta_t is infinite at t = 1; got {self.t_max}")
        require(len(self.samplers) > 0, "samplers", "give at least one sampler")
        for name in self.samplers:
            require(name in SAMPLERS, "samplers", f"unknown sampler {name!r}; choose from {list(SAMPLERS)}")
        require(self.pc_snr > 0, "pc_snr", f"must be > 0; got {self.pc_snr}")
        require(len(self.sample_steps) > 0, "sample_steps", "give at least one number of sampling steps")
        for n in self.sample_steps:
            require(1 <= n <= 1024, "sample_steps", f"each number of steps must be an integer in [1, 1024]; got {n}")
        require(0.0 < self.t_eps < 0.1, "t_eps", f"must lie in (0, 0.1) (grid [t_eps, 1 - t_eps]); got {self.t_eps}")
        require(0.0 < self.adaptive_tol < 0.1, "adaptive_tol", f"must lie in (0, 0.1); got {self.adaptive_tol}")
        require(len(self.field_times) > 0, "field_times", "give at least one time")
        for t in self.field_times:
            require(0.0 < t < 1.0, "field_times", f"each time must lie in (0, 1) (flow time); got {t}")

    def training_signature(self, dataset: str, spec: RunSpec) -> dict:
        """Everything that determines one training run (stored with its checkpoints)."""
        return {
            "dataset": dataset, "method": spec.method, "scheduler": spec.scheduler,
            "weighting": spec.weighting, "parameterization": spec.parameterization,
            "seeds": self.seeds, "seed": self.seed, "width": self.width, "depth": self.depth,
            "train_steps": self.train_steps, "batch_size": self.batch_size,
            "learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps,
            "ema_decay": self.ema_decay, "steps_per_call": self.steps_per_call,
            "t_max": self.train_t_max(spec),
        }

    def sampler_runs(self, spec: RunSpec) -> Tuple[str, ...]:
        """The configured samplers that apply to ``spec``'s parameterisation."""
        return tuple(s for s in self.samplers if spec.parameterization in SAMPLERS[s])


PRESETS = {
    "default": {},
    "naive": dict(
        datasets=("symmetric_mixture",),
        runs=("flow_matching@linear", "score_matching@linear", "noise_prediction@linear"),
        samplers=GENERIC_SAMPLERS, sample_steps=(4, 8, 16, 32, 64),
        field_times=(0.1, 0.3, 0.5, 0.7, 0.9),
    ),
    "smoke": dict(
        datasets=("symmetric_mixture",),
        runs=("flow_matching@linear", "score_matching@linear:noise", "noise_prediction@vp"),
        samplers=tuple(SAMPLERS), seeds=2, width=16, depth=1, train_steps=20, batch_size=64, warmup_steps=2,
        steps_per_call=5, save_every=10, sample_steps=(3,), n_samples=128, adaptive_tol=1e-3, adaptive_samples=32,
        n_eval=128, nll_samples=32, field_times=(0.05, 0.5), field_samples=64, sliced_projections=16,
    ),
    "full": dict(
        datasets=("symmetric_mixture", "eight_gaussians", "checkerboard", "moons"),
        runs=DEFAULT_RUNS + ("score_matching@vp", "noise_prediction@linear:min_snr", "data_prediction@linear"),
        seeds=5, width=256, depth=4, train_steps=20000, batch_size=1024, learning_rate=1e-3,
        warmup_steps=500, ema_decay=0.999, steps_per_call=500, save_every=5000,
        sample_steps=(4, 8, 16, 32, 64, 128), n_samples=5000, adaptive_samples=1000, n_eval=5000, nll_samples=2000,
        field_samples=2000, sliced_projections=256,
    ),
}
