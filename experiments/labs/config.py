"""The labs' config, presets, random streams and the paths (schedulers) they train on."""
from __future__ import annotations

import dataclasses
import math
from typing import Tuple

import jax

from experiments.common import require, require_positive_ints
from experiments.images import PRESETS as IMAGE_PRESETS
from jflow.schedulers import CosineScheduler, LinearScheduler

LABS = ("brownian", "ou", "langevin", "fm_gmm", "sm_gmm", "moons", "bridge", "cfg")
#: the paths the trained labs can use, by name
SCHEDULERS = {"linear": LinearScheduler, "cosine": CosineScheduler}


@dataclasses.dataclass(frozen=True)
class LabsConfig:
    """Figures of the lectures' labs (SDE simulation, flow and score matching, bridging, guidance)."""

    # same shape as the other experiments' configs, with this experiment's defaults: each field is one
    # --flag of experiments.common.parse_config; a shared base class would hide them from the reader
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
        names = self.labs()
        unknown = [n for n in names if n not in LABS]
        require(bool(names) and not unknown, "which",
                f"unknown lab(s) {unknown or [self.which]}; choose 'all' or a comma-separated list of {list(LABS)}")
        require_positive_ints(self, "n_paths", "n_particles", "sim_steps", "langevin_steps", "train_steps",
                              "batch_size", "width", "depth", "steps_per_call", "n_samples", "ode_steps")
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
        n_paths=3, n_particles=64, sim_steps=20, ou_thetas=(1.0,), langevin_steps=20, train_steps=4, batch_size=32,
        width=16, depth=1, steps_per_call=2, n_samples=64, ode_steps=4, cfg_preset="smoke",
    ),
}


#: Every random stream of a run: lab ``i`` of ``which`` (in that order) draws all its randomness
#: from ``fold_in(PRNGKey(seed), i)``, split inside the lab.
STREAMS = {"lab": lambda seed, i: jax.random.fold_in(jax.random.PRNGKey(seed), i)}
