"""Training of the image experiment: the guided U-Net (flow matching with label dropout) and the
evaluation classifier, both resumable from their checkpoints."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from experiments.common import Streams, Timer, progress, require
from experiments.images.config import ImageConfig, train_config
from experiments.images.data import batch_fn
from jflow.data import ImageLoader
from jflow.losses import make_loss
from jflow.models import Classifier, get_model
from jflow.schedulers import LinearScheduler
from jflow.train import (
    Checkpointer,
    create_train_state,
    fit,
    make_fused_train_step,
    make_mesh,
    make_optimizer,
    make_sharded_train_step,
    make_train_step,
    put_replicated,
    shard_batch,
)


class FlowProgram(NamedTuple):
    """The guided U-Net's training: model, optimizer, the device mesh (``None`` on one device) and
    the fused (or sharded and fused) train step."""

    model: object
    optimizer: object
    mesh: Optional[object]
    step: Callable


class ClassifierProgram(NamedTuple):
    """The evaluation classifier: model, optimizer, train step, and jitted ``apply(params, x) -> (logits, features)``."""

    model: Classifier
    optimizer: object
    step: Callable
    apply: Callable


def build_model(config: ImageConfig):
    """The class-conditional U-Net of ``config``."""
    return get_model(
        "unet",
        base_channels=config.base_channels,
        channel_mults=tuple(config.channel_mults),
        num_res_blocks=config.num_res_blocks,
        attention_levels=tuple(config.attention_levels),
        mid_attention=config.mid_attention,
        num_heads=config.num_heads,
        norm_groups=config.norm_groups,
        dropout=config.dropout,
        num_classes=config.num_classes,
    )


def flow_program(config: ImageConfig, model, num_devices: int) -> FlowProgram:
    """Algorithm 5 of the 2025 slides (CFG training): CondOT path, velocity target ``z - eps``,
    label replaced by the null label with probability ``label_dropout``."""
    optimizer = make_optimizer(config.learning_rate, warmup_steps=config.warmup_steps, clip_norm=config.clip_norm)
    loss = make_loss(
        lambda p, x, t, y: model.apply(p, x, t, y),
        LinearScheduler(),
        label_dropout=config.label_dropout,
        null_label=model.null_label,
    )
    if num_devices == 1:
        return FlowProgram(model, optimizer, None, make_fused_train_step(loss))
    mesh = make_mesh(num_devices)
    return FlowProgram(model, optimizer, mesh, make_sharded_train_step(loss, mesh, fused=True))


def classifier_loss(model: Classifier):
    """Cross-entropy of the classifier's logits; NaN for a label outside ``0..K-1``."""

    def loss(params, batch, key):
        del key
        logits = model.apply(params, batch["x"])
        y = batch["y"]
        labels = jax.nn.one_hot(y, model.num_classes)
        value = -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(logits), axis=-1))
        # one_hot maps a label outside 0..K-1 to a zero row, which would drop it silently:
        # make the loss NaN instead, so the train step's NaN guard stops and names the step
        value = jnp.where(jnp.all((y >= 0) & (y < model.num_classes)), value, jnp.nan)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["y"])
        return value, {"accuracy": accuracy}

    return loss


def classifier_program(config: ImageConfig) -> ClassifierProgram:
    model = Classifier(config.num_classes)
    apply = jax.jit(lambda p, x: model.apply(p, x, return_features=True))
    return ClassifierProgram(model, make_optimizer(config.classifier_lr), make_train_step(classifier_loss(model)),
                             apply)


def train_flow(config: ImageConfig, program: FlowProgram, out: Path, train_source, streams: Streams, *, log=print):
    """Train (or resume) the guided U-Net; returns ``(state, info)``."""
    h, w, c = config.image_shape
    params = program.model.init(streams.key("unet_init"), jnp.zeros((1, h, w, c)), jnp.zeros((1,)),
                                jnp.zeros((1,), jnp.int32))
    state = create_train_state(params, program.optimizer, ema_decay=config.ema_decay or None)
    prepare = None
    if program.mesh is not None:
        state = put_replicated(state, program.mesh)
        prepare = lambda b: shard_batch(b, program.mesh, leading_axes=1)  # noqa: E731
    loader = ImageLoader(train_source, config.batch_size, seed=config.seed, prefetch=0)
    checkpointer = Checkpointer(out / "checkpoints", max_to_keep=2)
    start = checkpointer.latest_step() or 0
    require(start <= config.steps, "steps",
            f"the run in {out} is already at step {start}; pass --steps >= {start} or a new --out")
    if start:
        log(f"resuming from the checkpoint at step {start} in {out / 'checkpoints'}")
    bar = progress(total=config.steps, desc="train U-Net")
    bar.update(start)
    history = []

    def log_fn(step, metrics):
        history.append((step, metrics["loss"]))
        bar.update(config.steps_per_call)
        bar.set_postfix(loss=f"{metrics['loss']:.4f}")

    with Timer() as timer:
        try:
            state, _ = fit(
                program.step, state, batch_fn(loader), streams.key("unet_train"), num_steps=config.steps,
                steps_per_call=config.steps_per_call, checkpointer=checkpointer, save_every=config.save_every,
                config=train_config(config), log_every=config.steps_per_call, log_fn=log_fn, prepare_batch=prepare,
            )
        finally:
            bar.close()
            checkpointer.close()
    info = {"start_step": start, "end_step": int(jax.device_get(state.step)), "train_seconds": timer.seconds,
            "history": history}
    return state, info


def train_classifier(config: ImageConfig, program: ClassifierProgram, out: Path, train_source, streams: Streams):
    """Train (or load from the checkpoint in ``out/classifier``) the evaluation classifier; returns its params."""
    params = program.model.init(streams.key("classifier_init"), jnp.zeros((1,) + config.image_shape))
    state = create_train_state(params, program.optimizer)
    loader = ImageLoader(train_source, config.classifier_batch, seed=config.seed + 1, prefetch=0)
    checkpointer = Checkpointer(out / "classifier", max_to_keep=1)
    done = checkpointer.latest_step() or 0
    require(done <= config.classifier_steps, "classifier_steps",
            f"the classifier in {out / 'classifier'} is already at step {done}; pass --classifier_steps >= {done}")
    try:
        state, _ = fit(
            program.step, state, batch_fn(loader), streams.key("classifier_train"),
            num_steps=config.classifier_steps, checkpointer=checkpointer,
            config={"dataset": config.dataset, "classifier_batch": config.classifier_batch,
                    "classifier_lr": config.classifier_lr, "seed": config.seed},
        )
    finally:
        checkpointer.close()
    return state.params
