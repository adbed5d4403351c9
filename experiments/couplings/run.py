r"""Configuration, training and the driver of the Tong et al. (2023) 2-D reproduction.

Every (pair, method) trains ``seeds`` networks together: ``jax.vmap`` over the seeds of
``steps_per_call`` fused updates (:func:`jflow.train.make_vmapped_train_step`, ``fused=True``)
driven by :func:`jflow.train.fit`. Seed ``r`` of every method starts from the same
torch-style initial weights (``model.init_params([seed, r])``) and sees the same numpy
batches (``data.training_batch``); its loss randomness (times, path noise, SB pairs) comes
from ``fold_in(PRNGKey(seed), r)``. Adam with a constant learning rate, as in torchcfm's
2-D examples.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import Timer, parse_config, progress, require, require_positive_ints, run_dir
from jflow.train import create_train_state, fit, make_optimizer, make_vmapped_train_step

from experiments.couplings import data, model, report
from experiments.couplings.evaluate import evaluate
from experiments.couplings.methods import GAUSSIAN_SOURCE_ONLY, METHODS, make_method_loss

__all__ = ["CouplingsConfig", "PRESETS", "run_specs", "train", "run", "main"]


@dataclasses.dataclass(frozen=True)
class CouplingsConfig:
    """Tong et al. (2023) 2-D reproduction: I-CFM vs OT-CFM vs SB-CFM vs FM (python -m experiments.couplings)."""

    # same shape as the other experiments' configs, with this experiment's defaults: each field is one
    # --flag of experiments.common.parse_config; a shared base class would hide them from the reader
    pairs: Tuple[str, ...] = tuple(data.PAIRS)
    methods: Tuple[str, ...] = tuple(METHODS)
    seeds: int = 3
    seed: int = 0
    width: int = 64
    depth: int = 3
    train_steps: int = 1000
    batch_size: int = 256
    learning_rate: float = 1e-3
    steps_per_call: int = 100
    sigma: float = 0.1  # constant path width of I-CFM / OT-CFM, sigma_min of FM (torchcfm's 2-D default)
    sb_sigma: float = 1.0  # SB-CFM's Brownian bridge (Tong et al.'s runner config sbcfm.yaml)
    n_eval: int = 500
    ref_steps: int = 100
    euler_steps: Tuple[int, ...] = (1, 2, 4, 8, 16, 20, 32, 64, 128)
    w2_steps: Tuple[int, ...] = (2, 4, 8, 20)
    euler_tol: float = 0.05
    adaptive_tol: float = 1e-5  # rtol = atol of the dopri5 NFE column (Lipman et al. Table 1's setting)
    adaptive_max_steps: int = 4096
    figures: bool = True

    def validate(self) -> None:
        """Raise :class:`experiments.common.ConfigError` naming the first invalid field."""
        for field, allowed in (("pairs", list(data.PAIRS)), ("methods", list(METHODS))):
            values = getattr(self, field)
            require(len(values) > 0, field, f"give at least one of {allowed}")
            for v in values:
                require(v in allowed, field, f"unknown entry {v!r}; choose from {allowed}")
            require(len(set(values)) == len(values), field, "duplicate entries")
        require_positive_ints(self, "seeds", "width", "depth", "train_steps", "batch_size", "steps_per_call",
                              "ref_steps", "adaptive_max_steps")
        require(self.seed >= 0, "seed", f"must be >= 0; got {self.seed}")
        require(self.train_steps % self.steps_per_call == 0, "train_steps",
                f"must be a multiple of steps_per_call={self.steps_per_call}; got {self.train_steps}")
        require(self.n_eval >= 2, "n_eval", f"must be >= 2 (W2 between samples); got {self.n_eval}")
        require(math.isfinite(self.learning_rate) and self.learning_rate > 0, "learning_rate",
                f"must be > 0; got {self.learning_rate}")
        require(0.0 < self.sigma < 1.0, "sigma", f"must lie in (0, 1) (FM's beta_1 = sigma_min); got {self.sigma}")
        require(math.isfinite(self.sb_sigma) and self.sb_sigma > 0, "sb_sigma", f"must be > 0; got {self.sb_sigma}")
        require(len(self.euler_steps) > 0 and all(n >= 1 for n in self.euler_steps), "euler_steps",
                f"give positive step counts; got {self.euler_steps}")
        require(set(self.w2_steps) <= set(self.euler_steps), "w2_steps",
                f"must be a subset of euler_steps={self.euler_steps}; got {self.w2_steps}")
        require(self.euler_tol > 0, "euler_tol", f"must be > 0 (RMS end-point error, data units); got {self.euler_tol}")
        require(0.0 < self.adaptive_tol < 0.1, "adaptive_tol",
                f"must lie in (0, 0.1) (rtol = atol of the dopri5 solve); got {self.adaptive_tol}")


PRESETS = {
    "default": {},
    "smoke": dict(seeds=2, width=16, train_steps=20, batch_size=64, steps_per_call=10, n_eval=64,
                  ref_steps=8, euler_steps=(1, 2, 4), w2_steps=(2, 4), euler_tol=0.5, figures=False),
    "full": dict(seeds=5, train_steps=20000, steps_per_call=500, n_eval=1000),
}


def run_specs(cfg: CouplingsConfig) -> List[Tuple[str, str]]:
    """``(pair, method)`` of every trained family; methods that need a N(0, I) source skip other pairs."""
    return [(pair, method) for pair in cfg.pairs for method in cfg.methods
            if not (method in GAUSSIAN_SOURCE_ONLY and data.PAIRS[pair][0] != "normal")]


def initial_params(cfg: CouplingsConfig):
    """Stacked initial parameters of the ``seeds`` runs (leading axis ``seeds``), equal for every method."""
    return model.stack_params([model.init_params([cfg.seed, r], 2, cfg.width, cfg.depth) for r in range(cfg.seeds)])


@functools.lru_cache(maxsize=None)
def _training_fns(method: str, sigma: float, sb_sigma: float, learning_rate: float):
    """``(make_state, step)``: vmapped TrainState factory and the fused vmapped step (one compile per method)."""
    loss = make_method_loss(method, sigma=sigma, sb_sigma=sb_sigma)
    tx = make_optimizer(learning_rate, name="adam")
    make_state = jax.jit(jax.vmap(lambda p: create_train_state(p, tx)))
    return make_state, make_vmapped_train_step(lambda _: loss, batch_axis=0, fused=True)


def train(cfg: CouplingsConfig, pair: str, method: str, bar) -> Tuple[dict, dict]:
    """Train the ``seeds`` runs of ``method`` on ``pair``; return stacked parameters and training facts."""
    make_state, step = _training_fns(method, cfg.sigma, cfg.sb_sigma, cfg.learning_rate)
    states = make_state(jax.tree.map(jnp.asarray, initial_params(cfg)))
    keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(cfg.seed), r) for r in range(cfg.seeds)])
    losses: List[float] = []

    def log_fn(n, metrics):
        losses.append(metrics["loss"])
        bar.update(cfg.steps_per_call)
        bar.set_postfix_str(f"{pair} {method} loss={metrics['loss']:.4g}")

    with Timer() as timer:
        states, _ = fit(step, states, lambda s: data.training_batch(pair, cfg.seed, cfg.seeds, s, cfg.batch_size),
                        keys, num_steps=cfg.train_steps, steps_per_call=cfg.steps_per_call,
                        log_every=cfg.steps_per_call, log_fn=log_fn)
        jax.block_until_ready(states.params)
    tail = losses[-max(1, len(losses) // 10):]
    return states.params, {"train_seconds": timer.seconds, "final_loss": float(np.mean(tail))}


Trainer = Callable[[CouplingsConfig, str, str, object], Tuple[dict, dict]]


def run(cfg: CouplingsConfig, out: Path, preset: str = "custom", *, trainer: Trainer = train,
        label: str = "jflow") -> dict:
    """Train (with ``trainer``) and evaluate every (pair, method); write results and figure into ``out``."""
    wall, cpu = time.perf_counter(), time.process_time()
    specs = run_specs(cfg)
    records, facts, sets, trajectories = [], {}, {}, {}
    bar = progress(total=len(specs) * cfg.train_steps, desc=f"train ({label})")
    for pair in cfg.pairs:
        sets[pair] = data.eval_sets(pair, cfg.seed, cfg.n_eval)
        for p, method in specs:
            if p != pair:
                continue
            params, info = trainer(cfg, pair, method, bar)
            rows, facts[pair] = evaluate(params, sets[pair], ref_steps=cfg.ref_steps, euler_steps=cfg.euler_steps,
                                         w2_steps=cfg.w2_steps, euler_tol=cfg.euler_tol,
                                         adaptive_tol=cfg.adaptive_tol, adaptive_max_steps=cfg.adaptive_max_steps)
            trajectories[pair, method] = facts[pair].pop("trajectory")
            records.append({"pair": pair, "method": method, "per_seed": rows, **info})
    bar.close()
    meta = {"label": label, "preset": preset, "config": dataclasses.asdict(cfg),
            "devices": [str(d) for d in jax.devices()],
            "wall_seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu}
    markdown = report.write_results(out, records, facts, cfg, meta)
    figures = [report.plot_trajectories(out / "trajectories.png", cfg, trajectories, sets)] if cfg.figures else []
    print(markdown)
    print(f"\nresults: {out / 'results.md'} (and results.json); figures: {', '.join(map(str, figures)) or 'none'}")
    return {"records": records, "facts": facts, "meta": meta, "figures": figures}


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Parse ``--preset`` and ``--field value`` overrides, validate, then :func:`run`."""
    cfg, args = parse_config(CouplingsConfig, PRESETS, argv, description=CouplingsConfig.__doc__)
    return run(cfg, run_dir(args.out, f"couplings-{args.preset}"), args.preset)
