"""Training of the ablation: every seed of one method on one path at once, resumable.

:func:`training_program` builds the compiled pieces of one run family once per run;
:func:`train` runs them through :func:`jflow.train.fit` with checkpoints.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.ablation.config import METHODS, AblationConfig, RunSpec
from experiments.common import Streams, Timer
from jflow import schedulers
from jflow.data import get_toy
from jflow.losses import make_loss
from jflow.train import Checkpointer, create_train_state, current_step, fit, make_optimizer, make_vmapped_train_step


class TrainingProgram(NamedTuple):
    """The compiled pieces of one run family's training (all ``seeds`` runs at once).

    ``init(key)``: one run's initial parameters (the same program for every method).
    ``make_state(stacked_params)``: the vmapped :class:`~jflow.train.TrainState` of the runs
    (``step`` of shape ``(seeds,)``). ``step(states, batches, keys)``:
    :func:`jflow.train.make_vmapped_train_step` with ``fused=True``, ``steps_per_call``
    updates of all runs (``lax.scan`` over the updates, ``jax.vmap`` over the runs).
    :func:`jflow.train.fit` and its :class:`~jflow.train.Checkpointer` take the vmapped state
    as one run at its common step.
    """

    init: Callable
    make_state: Callable
    step: Callable


def init_program(model, dim: int) -> Callable:
    """Jitted ``key -> params`` of one run of ``model`` on ``dim``-dimensional data."""
    return jax.jit(lambda k: model.init(k, jnp.zeros((1, dim), jnp.float32), jnp.zeros((1,), jnp.float32)))


def training_program(cfg: AblationConfig, model, init: Callable, dataset: str, spec: RunSpec) -> TrainingProgram:
    """The :class:`TrainingProgram` of ``spec`` on ``dataset``: ``make_loss`` with the method's options."""
    method = METHODS[spec.method]
    dist = get_toy(dataset)
    base_loss = make_loss(model.apply, schedulers.get(spec.scheduler), parameterization=method.parameterization,
                          time_bins=0, **method.loss_options(cfg))

    def loss_fn(params, batch, key):
        # Fresh data every step from the run's key: every method sees the same data, times
        # and noise for a given seed (the key split is the same for every method).
        key_data, key_loss = jax.random.split(key)
        return base_loss(params, {"x": dist.sample(key_data, cfg.batch_size)}, key_loss)

    tx = make_optimizer(cfg.learning_rate, name="adam", warmup_steps=cfg.warmup_steps, total_steps=cfg.train_steps)
    ema = cfg.ema_decay if cfg.ema_decay > 0 else None
    make_state = jax.jit(jax.vmap(lambda p: create_train_state(p, tx, ema_decay=ema)))
    # the batch (the step number) is shared by the runs and unused: the loss draws its data
    return TrainingProgram(init, make_state, make_vmapped_train_step(lambda _: loss_fn, fused=True))


def initial_params(cfg: AblationConfig, init: Callable, streams: Streams):
    """Initial parameters of the ``seeds`` runs, stacked (leading axis ``seeds``); equal for every method."""
    keys = streams.keys("init", cfg.seeds)
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *[init(keys[r]) for r in range(cfg.seeds)])


def train(cfg: AblationConfig, dataset: str, spec: RunSpec, program: TrainingProgram, streams: Streams,
          ckpt_dir: Path, bar) -> Tuple[dict, dict]:
    """Train ``cfg.seeds`` runs of ``spec`` together (vmapped, ``steps_per_call`` fused updates per call).

    Checkpoints every ``save_every`` steps into ``ckpt_dir`` and resumes from the latest
    checkpoint there (its stored training signature must match). Returns the stacked final
    parameters (EMA if enabled) and a dict of training facts.
    """
    states = program.make_state(initial_params(cfg, program.init, streams))
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
                program.step, states, lambda s: np.int32(s), streams.keys("train", cfg.seeds),
                num_steps=cfg.train_steps, steps_per_call=k, checkpointer=ckpt, save_every=cfg.save_every,
                config=cfg.training_signature(dataset, spec.method, spec.scheduler), log_every=k, log_fn=log_fn,
            )
            jax.block_until_ready(states.params)
    # restored arrays are placed like the fresh state (uncommitted): the samplers do not recompile
    final = states.ema_params if states.ema_params is not None else states.params
    info = {
        "dataset": dataset, "run": spec.name, "resumed_from_step": int(resumed_from),
        "final_step": current_step(states), "steps_trained_now": cfg.train_steps - int(resumed_from),
        "train_seconds": timer.seconds, "final_loss": final_loss(losses), "loss_curve": losses,
    }
    return final, info


def final_loss(curve) -> float | None:
    """Mean loss over the last tenth of a loss curve ``[(step, loss), ...]`` (``None`` if empty)."""
    tail = [v for _, v in curve[-max(1, len(curve) // 10):]]
    return float(np.mean(tail)) if tail else None


def with_earlier_curve(info: dict, earlier: dict | None) -> dict:
    """``info`` of a resumed training with the loss curve up to its checkpoint taken from the
    earlier, interrupted run's record ``earlier`` (and the final loss recomputed)."""
    if earlier is None or info["resumed_from_step"] == 0:
        return info
    curve = [pt for pt in earlier.get("loss_curve", []) if pt[0] <= info["resumed_from_step"]] + info["loss_curve"]
    return {**info, "loss_curve": curve, "final_loss": final_loss(curve)}
