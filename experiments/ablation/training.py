"""Training of one run family: all seeds of a ``method@path:weighting`` trained together (vmap, fused steps)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.ablation.config import AblationConfig, RunSpec, streams
from experiments.common import Timer
from jflow import schedulers
from jflow.data import get_toy
from jflow.losses import make_loss
from jflow.models import MLP
from jflow.train import (
    Checkpointer,
    create_train_state,
    current_step,
    fit,
    make_optimizer,
    make_vmapped_train_step,
)


def build_model(cfg: AblationConfig) -> MLP:
    return MLP(width=cfg.width, depth=cfg.depth)


class Trainer(NamedTuple):
    """Compiled pieces of one run family: ``make_state(stacked_params)`` and the fused vmapped step."""

    make_state: Callable
    step: Callable


def build_trainer(cfg: AblationConfig, dataset: str, spec: RunSpec) -> Trainer:
    """The loss of ``spec`` (its parameterisation, path, weighting and time range) on fresh data per step.

    Each step draws its batch from the run's key, so for a given seed every method sees the
    same data, times and noise (the key split is the same for every method).
    """
    model = build_model(cfg)
    dist = get_toy(dataset)
    base_loss = make_loss(
        model.apply, schedulers.get(spec.scheduler), parameterization=spec.parameterization,
        t_max=cfg.train_t_max(spec), weighting=None if spec.weighting == "none" else spec.weighting,
    )

    def loss_fn(params, batch, key):
        key_data, key_loss = jax.random.split(key)
        return base_loss(params, {"x": dist.sample(key_data, cfg.batch_size)}, key_loss)

    tx = make_optimizer(cfg.learning_rate, name="adam", warmup_steps=cfg.warmup_steps, total_steps=cfg.train_steps)
    ema = cfg.ema_decay if cfg.ema_decay > 0 else None
    make_state = jax.jit(jax.vmap(lambda p: create_train_state(p, tx, ema_decay=ema)))
    # the batch (the step number) is shared by the runs and unused: the loss draws its data
    return Trainer(make_state, make_vmapped_train_step(lambda _: loss_fn, fused=True))


def initial_params(cfg: AblationConfig, init: Callable):
    """Initial parameters of the ``seeds`` runs, stacked; the same for every method (stream ``init``)."""
    keys = streams(cfg).keys("init", cfg.seeds)
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *[init(keys[r]) for r in range(cfg.seeds)])


def make_init(cfg: AblationConfig, dim: int) -> Callable:
    """Jitted ``key -> params`` of one seed (compiled once per run, shared by every method)."""
    model = build_model(cfg)
    return jax.jit(lambda k: model.init(k, jnp.zeros((1, dim), jnp.float32), jnp.zeros((1,), jnp.float32)))


def train(cfg: AblationConfig, dataset: str, spec: RunSpec, init: Callable, ckpt_dir: Path, bar) -> Tuple[dict, dict]:
    """Train ``cfg.seeds`` runs of ``spec`` with :func:`jflow.train.fit` (checkpoints, exact resume).

    Returns the stacked final parameters (EMA if enabled) and a dict of training facts.
    """
    trainer = build_trainer(cfg, dataset, spec)
    states = trainer.make_state(initial_params(cfg, init))
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
                trainer.step, states, lambda s: np.int32(s), streams(cfg).keys("train", cfg.seeds),
                num_steps=cfg.train_steps, steps_per_call=k, checkpointer=ckpt, save_every=cfg.save_every,
                config=cfg.training_signature(dataset, spec), log_every=k, log_fn=log_fn,
            )
            jax.block_until_ready(states.params)
    final = states.ema_params if states.ema_params is not None else states.params
    tail = [v for _, v in losses[-max(1, len(losses) // 10):]]
    info = {
        "dataset": dataset, "run": spec.name, "resumed_from_step": int(resumed_from),
        "final_step": current_step(states), "steps_trained_now": cfg.train_steps - int(resumed_from),
        "train_seconds": timer.seconds, "final_loss": float(np.mean(tail)) if tail else None,
        "loss_curve": losses,
    }
    return final, info
