"""Class-conditional image generation with classifier-free guidance (CFG).

A class-conditional U-Net (:mod:`jflow.models`) is trained by flow matching on the CondOT
path with label dropout (classifier-free guidance training, Algorithm 5 of the 2025
slides), then sampled with the guided field of Algorithm 8,

    u^w_t(x | y) = (1 - w) u_t(x | null) + w u_t(x | y),

(``w = 0``: unconditional, ``w = 1``: plain conditional, ``w > 1``: guided) for every
guidance scale ``w`` of the config. Each ``w`` is scored with a small classifier trained
on the same data (its checkpoint is cached in the run directory): the Frechet distance
between the classifier's penultimate features of the generated images and of the training
images, and the guided-class accuracy (how often the classifier recognises the class the
samples were generated for).

Data: ``digits`` (scikit-learn's 8x8 digits, offline, the default), or ``mnist``,
``fashion_mnist``, ``cifar10`` through TFDS when prepared (a clear error from
:mod:`jflow.data` otherwise). Training runs on one device or data-parallel over all local
devices (``--devices``), and is resumable: a checkpoint is written every ``save_every``
steps and re-running the same command (possibly with a larger ``--steps``) continues from
the latest one.

Outputs in the run directory: ``config.json``, ``checkpoints/`` and ``classifier/``
(orbax), ``results.{json,csv,md}`` (one row per ``w``), ``summary.json``,
``samples_w<w>.png`` (rows = classes) and ``samples_class<c>.png`` (rows = ``w``), and
``loss.png``.

Run::

    python -m experiments.images                     # digits, a few minutes on a 2-core CPU
    python -m experiments.images --preset smoke      # seconds (tests)
    python -m experiments.images --preset mnist      # TFDS mnist, GPU scale
    python -m experiments.images --steps 4000        # continue the default run to 4000 steps
"""
from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import Timer, cli, parse_config, progress, require, run_dir, save_json, write_table
from jflow.data import DatasetNotPreparedError, ImageLoader, image_source
from jflow.integrators import uniform_grid
from jflow.losses import make_loss
from jflow.metrics import classifier_accuracy, frechet_distance
from jflow.models import Classifier, get_model
from jflow.sampling import classifier_free_guidance, sample_ode
from jflow.schedulers import LinearScheduler
from jflow.train import (
    CheckpointError,
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

DATASETS = {
    # name: (image shape, number of classes)
    "digits": ((8, 8, 1), 10),
    "mnist": ((28, 28, 1), 10),
    "fashion_mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
}
ODE_METHODS = ("euler", "midpoint", "heun", "rk4")


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """Class-conditional U-Net with classifier-free guidance; guidance-scale sweep."""

    # data
    dataset: str = "digits"
    data_dir: str = ""  # TFDS data directory ("" = $TFDS_DATA_DIR or ~/tensorflow_datasets)
    # U-Net (jflow.models.UNet); the default is sized for a 2-core CPU
    base_channels: int = 16
    channel_mults: Tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    attention_levels: Tuple[int, ...] = ()
    mid_attention: bool = True
    num_heads: int = 4
    norm_groups: int = 8
    dropout: float = 0.0
    # training (flow matching, CondOT path, label dropout)
    steps: int = 500
    batch_size: int = 32
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    clip_norm: float = 1.0
    label_dropout: float = 0.1
    ema_decay: float = 0.99  # 0 = no EMA (sample with the raw parameters)
    steps_per_call: int = 10  # updates fused in one jitted call (lax.scan)
    save_every: int = 100
    devices: int = 0  # data-parallel over this many local devices (0 = all)
    seed: int = 0
    # evaluation
    evaluate: bool = True
    guidance_scales: Tuple[float, ...] = (0.0, 1.0, 3.0, 5.0)
    samples_per_class: int = 20
    sample_steps: int = 10
    sample_method: str = "euler"
    sample_batch: int = 200
    grid_per_class: int = 10
    classifier_steps: int = 300
    classifier_batch: int = 128
    classifier_lr: float = 2e-3

    def validate(self):
        require(self.dataset in DATASETS, "dataset", f"unknown data set {self.dataset!r}; choose one of {sorted(DATASETS)}")
        shape, _ = DATASETS[self.dataset]
        require(self.base_channels >= 1, "base_channels", f"must be >= 1; got {self.base_channels}")
        require(len(self.channel_mults) >= 1 and all(m >= 1 for m in self.channel_mults), "channel_mults",
                f"must be a non-empty list of positive ints; got {self.channel_mults}")
        factor = 2 ** (len(self.channel_mults) - 1)
        require(shape[0] % factor == 0, "channel_mults",
                f"{len(self.channel_mults)} levels downsample by {factor}, which does not divide the "
                f"{shape[0]}x{shape[1]} images of {self.dataset!r}")
        require(all(0 <= lv < len(self.channel_mults) for lv in self.attention_levels), "attention_levels",
                f"levels must lie in [0, {len(self.channel_mults) - 1}]; got {self.attention_levels}")
        channels = {self.base_channels * m for m in self.channel_mults}
        require(self.norm_groups >= 1 and all(c % self.norm_groups == 0 for c in channels), "norm_groups",
                f"must divide every channel count {sorted(channels)}; got {self.norm_groups}")
        require(self.num_heads >= 1 and all(c % self.num_heads == 0 for c in channels), "num_heads",
                f"must divide every channel count {sorted(channels)}; got {self.num_heads}")
        require(0.0 <= self.dropout < 1.0, "dropout", f"must lie in [0, 1); got {self.dropout}")
        require(self.steps >= 0, "steps", f"must be >= 0; got {self.steps}")
        require(self.steps_per_call >= 1, "steps_per_call", f"must be >= 1; got {self.steps_per_call}")
        require(self.steps % self.steps_per_call == 0, "steps",
                f"must be a multiple of steps_per_call={self.steps_per_call}; got {self.steps}")
        require(self.save_every >= 1 and self.save_every % self.steps_per_call == 0, "save_every",
                f"must be a positive multiple of steps_per_call={self.steps_per_call}; got {self.save_every}")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1; got {self.batch_size}")
        require(self.learning_rate > 0, "learning_rate", f"must be > 0; got {self.learning_rate}")
        require(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0; got {self.warmup_steps}")
        require(self.clip_norm > 0, "clip_norm", f"must be > 0; got {self.clip_norm}")
        require(0.0 <= self.label_dropout < 1.0, "label_dropout",
                f"must lie in [0, 1) (the probability of training on the null label); got {self.label_dropout}")
        require(self.label_dropout > 0 or not self.evaluate or self.guidance_scales == (1.0,), "label_dropout",
                "must be > 0 for classifier-free guidance: with 0 the null-label field is never trained "
                "(or evaluate only --guidance_scales 1)")
        require(0.0 <= self.ema_decay < 1.0, "ema_decay", f"must lie in [0, 1) (0 = no EMA); got {self.ema_decay}")
        require(self.devices >= 0, "devices", f"must be >= 0 (0 = all local devices); got {self.devices}")
        require(self.seed >= 0, "seed", f"must be >= 0; got {self.seed}")
        require(len(self.guidance_scales) >= 1, "guidance_scales",
                "must name at least one guidance scale w, e.g. --guidance_scales 1,3,5")
        require(all(math.isfinite(w) and w >= 0 for w in self.guidance_scales), "guidance_scales",
                f"must be finite and >= 0 (w=0 unconditional, w=1 conditional); got {self.guidance_scales}")
        require(len(set(self.guidance_scales)) == len(self.guidance_scales), "guidance_scales",
                f"must not repeat a value; got {self.guidance_scales}")
        require(self.samples_per_class >= 2, "samples_per_class",
                f"must be >= 2 (the Frechet distance needs a covariance); got {self.samples_per_class}")
        require(self.sample_steps >= 1, "sample_steps", f"must be >= 1; got {self.sample_steps}")
        require(self.sample_method in ODE_METHODS, "sample_method",
                f"unknown ODE method {self.sample_method!r}; choose one of {list(ODE_METHODS)}")
        require(self.sample_batch >= 1, "sample_batch", f"must be >= 1; got {self.sample_batch}")
        require(1 <= self.grid_per_class <= self.samples_per_class, "grid_per_class",
                f"must lie in [1, samples_per_class={self.samples_per_class}]; got {self.grid_per_class}")
        require(self.classifier_steps >= 1, "classifier_steps", f"must be >= 1; got {self.classifier_steps}")
        require(self.classifier_batch >= 1, "classifier_batch", f"must be >= 1; got {self.classifier_batch}")
        require(self.classifier_lr > 0, "classifier_lr", f"must be > 0; got {self.classifier_lr}")

    @property
    def image_shape(self) -> Tuple[int, int, int]:
        return DATASETS[self.dataset][0]

    @property
    def num_classes(self) -> int:
        return DATASETS[self.dataset][1]


PRESETS = {
    "default": {},
    "smoke": dict(
        base_channels=8, channel_mults=(1,), attention_levels=(), mid_attention=False, norm_groups=4,
        num_heads=1, steps=4, batch_size=16, warmup_steps=0, steps_per_call=2, save_every=4,
        guidance_scales=(1.0, 3.0, 5.0), samples_per_class=2, sample_steps=2, sample_batch=64,
        grid_per_class=2, classifier_steps=2, classifier_batch=16,
    ),
    "mnist": dict(
        dataset="mnist", base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=2, attention_levels=(2,),
        dropout=0.1, steps=20000, batch_size=128, learning_rate=5e-4, warmup_steps=1000, ema_decay=0.999,
        steps_per_call=100, save_every=2000, samples_per_class=100, sample_steps=50, sample_method="heun",
        sample_batch=1000, classifier_steps=2000,
    ),
    "cifar10": dict(
        dataset="cifar10", base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2, attention_levels=(1,),
        norm_groups=32, dropout=0.1, steps=200000, batch_size=128, learning_rate=2e-4, warmup_steps=5000,
        ema_decay=0.9999, steps_per_call=100, save_every=5000, samples_per_class=500, sample_steps=100,
        sample_method="heun", sample_batch=1000, classifier_steps=5000,
    ),
}


# --------------------------------------------------------------------------- classifier


def _classifier_loss(model: Classifier):
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


# --------------------------------------------------------------------------- data


def _sources(config: ImageConfig):
    """Train and test sources of the data set (jflow.data raises a clear error if it is absent)."""
    data_dir = config.data_dir or None
    return image_source(config.dataset, "train", data_dir=data_dir), image_source(config.dataset, "test", data_dir=data_dir)


def _batch_fn(loader, steps_per_epoch: int):
    """``step -> batch``: a pure function of the step (so a resumed run sees the same batches)."""

    def batch_fn(step: int):
        return loader.batch_at(step // steps_per_epoch, step % steps_per_epoch)

    return batch_fn


def _all_images(source) -> Tuple[np.ndarray, np.ndarray]:
    """Every image and label of ``source``, in order, as one batch ``(x, y)``."""
    loader = ImageLoader(source, len(source), shuffle=False, drop_remainder=False, prefetch=0,
                         process_index=0, process_count=1)
    batch = loader.batch_at(0, 0)
    return batch["x"], batch["y"]


# --------------------------------------------------------------------------- pieces


_TRAIN_FIELDS = ("dataset", "base_channels", "channel_mults", "num_res_blocks", "attention_levels", "mid_attention",
                 "num_heads", "norm_groups", "dropout", "batch_size", "learning_rate", "warmup_steps", "clip_norm",
                 "label_dropout", "ema_decay", "seed")


def _train_config(config: ImageConfig) -> dict:
    """Fields that define the trained model: a checkpoint is only resumed under the same ones."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
            if k in _TRAIN_FIELDS}


def _program_key(config: ImageConfig) -> ImageConfig:
    """The config with every field that does not change the compiled programs reset to its default."""
    return ImageConfig(**{k: getattr(config, k) for k in _TRAIN_FIELDS + ("sample_steps", "sample_method",
                                                                         "classifier_lr")})


@functools.lru_cache(maxsize=4)
def _training_program(key: ImageConfig, num_devices: int):
    """``(model, optimizer, mesh, step_fn)`` of a config, cached: re-running in the same process
    (a resumed run, the labs) reuses the compiled step instead of compiling it again."""
    model = build_model(key)
    optimizer = make_optimizer(key.learning_rate, warmup_steps=key.warmup_steps, clip_norm=key.clip_norm)
    # Algorithm 5 (CFG training): CondOT path, velocity target z - eps, label -> null with prob p.
    loss = make_loss(
        lambda p, x, t, y: model.apply(p, x, t, y),
        LinearScheduler(),
        label_dropout=key.label_dropout,
        null_label=model.null_label,
    )
    if num_devices == 1:
        return model, optimizer, None, make_fused_train_step(loss)
    mesh = make_mesh(num_devices)
    return model, optimizer, mesh, make_sharded_train_step(loss, mesh, fused=True)


def build_model(config: ImageConfig):
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


def _num_devices(config: ImageConfig) -> int:
    """Devices of the data-parallel mesh; the batch size must divide by it."""
    available = jax.local_device_count()
    n = available if config.devices == 0 else config.devices
    require(n <= available, "devices", f"asks for {n} devices but only {available} are present")
    require(config.batch_size % n == 0, "batch_size",
            f"must be a multiple of the number of devices ({n}) for data-parallel training; got {config.batch_size}")
    return n


def train_flow(config: ImageConfig, out: Path, train_source, num_devices: int, *, log=print):
    """Train (or resume) the guided U-Net; returns ``(model, state, mesh, info)``."""
    model, optimizer, mesh, step_fn = _training_program(_program_key(config), num_devices)
    key = jax.random.PRNGKey(config.seed)
    init_key, train_key = jax.random.split(key)
    h, w, c = config.image_shape
    params = model.init(init_key, jnp.zeros((1, h, w, c)), jnp.zeros((1,)), jnp.zeros((1,), jnp.int32))
    state = create_train_state(params, optimizer, ema_decay=config.ema_decay or None)
    k = config.steps_per_call
    prepare = None
    if mesh is not None:
        state = put_replicated(state, mesh)
        prepare = lambda b: shard_batch(b, mesh, leading_axes=1)  # noqa: E731
    loader = ImageLoader(train_source, config.batch_size, seed=config.seed, prefetch=0)
    batch_fn = _batch_fn(loader, loader.batches_per_epoch)

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
        bar.update(k)
        bar.set_postfix(loss=f"{metrics['loss']:.4f}")

    with Timer() as timer:
        try:
            state, _ = fit(
                step_fn, state, batch_fn, train_key, num_steps=config.steps, steps_per_call=k,
                checkpointer=checkpointer, save_every=config.save_every, config=_train_config(config),
                log_every=k, log_fn=log_fn, prepare_batch=prepare,
            )
        finally:
            bar.close()
            checkpointer.close()
    info = {"start_step": start, "end_step": int(jax.device_get(state.step)), "train_seconds": timer.seconds,
            "history": history}
    return model, state, mesh, info


@functools.lru_cache(maxsize=4)
def _classifier_program(num_classes: int, learning_rate: float):
    """``(model, optimizer, step_fn, apply_fn)`` of the evaluation classifier, cached like :func:`_training_program`."""
    model = Classifier(num_classes)
    apply = jax.jit(lambda p, x: model.apply(p, x, return_features=True))
    return model, make_optimizer(learning_rate), make_train_step(_classifier_loss(model)), apply


def train_classifier(config: ImageConfig, out: Path, train_source):
    """Train (or load from the checkpoint in ``out/classifier``) the evaluation classifier.

    Returns ``(params, apply)`` with ``apply(params, x) -> (logits, features)``.
    """
    model, optimizer, step_fn, apply = _classifier_program(config.num_classes, config.classifier_lr)
    key = jax.random.PRNGKey(config.seed + 1)
    init_key, train_key = jax.random.split(key)
    params = model.init(init_key, jnp.zeros((1,) + config.image_shape))
    state = create_train_state(params, optimizer)
    loader = ImageLoader(train_source, config.classifier_batch, seed=config.seed + 1, prefetch=0)
    checkpointer = Checkpointer(out / "classifier", max_to_keep=1)
    done = checkpointer.latest_step() or 0
    require(done <= config.classifier_steps, "classifier_steps",
            f"the classifier in {out / 'classifier'} is already at step {done}; pass --classifier_steps >= {done}")
    try:
        state, _ = fit(
            step_fn, state, _batch_fn(loader, loader.batches_per_epoch),
            train_key, num_steps=config.classifier_steps, checkpointer=checkpointer,
            config={"dataset": config.dataset, "classifier_batch": config.classifier_batch,
                    "classifier_lr": config.classifier_lr, "seed": config.seed},
        )
    finally:
        checkpointer.close()
    return state.params, apply


@functools.lru_cache(maxsize=4)
def make_sampler(config: ImageConfig):
    """Jitted ``sample(params, x0, y, w) -> images``: Algorithm 8 by ``jflow.sampling`` (one compile for all w).

    Pass :func:`_program_key` of the run's config (cached like :func:`_training_program`).
    """
    model = build_model(config)

    def u(x, t, y, params):
        return model.apply(params, x, t, y)

    guided = classifier_free_guidance(u, model.null_label)
    ts = uniform_grid(config.sample_steps)
    # the grid is an argument (not a baked-in constant); only its length is static
    run = jax.jit(lambda params, x0, y, w, grid: sample_ode(guided, x0, grid, method=config.sample_method,
                                                              args=(y, w, params)))

    def sample(params, x0, y, w):
        return run(params, x0, y, w, ts)

    return sample


def generate(sample, params, labels: np.ndarray, w: float, config: ImageConfig, mesh) -> np.ndarray:
    """Images for ``labels`` at guidance scale ``w``, in chunks of ``sample_batch`` (split over the mesh).

    The initial noise of example ``i`` is drawn from ``fold_in(key, i)`` and does not depend on
    ``w``, so the rows of different guidance scales start from the same ``X_0``. Every chunk
    has the same shape (the last one is padded), so the sampler compiles once.
    """
    n_dev = 1 if mesh is None else mesh.size
    chunk = -(-min(config.sample_batch, len(labels)) // n_dev) * n_dev
    key = jax.random.PRNGKey(config.seed + 2)
    out = []
    for start in range(0, len(labels), chunk):
        idx = np.arange(start, start + chunk)
        y = labels[np.minimum(idx, len(labels) - 1)].astype(np.int32)
        x0 = np.asarray(_initial_noise(key, jnp.asarray(idx), config.image_shape))
        if mesh is not None:
            x0, y = shard_batch(x0, mesh), shard_batch(y, mesh)
        images = sample(params, x0, y, jnp.float32(w))
        out.append(np.asarray(jax.device_get(images))[: len(labels) - start])
    return np.clip(np.concatenate(out), -1.0, 1.0)


@functools.partial(jax.jit, static_argnums=2)
def _initial_noise(key, idx, shape):
    """``X_0`` of example ``i``: a standard normal image from ``fold_in(key, i)``."""
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), shape))(idx)


def _classify_all(apply, params, x: np.ndarray, chunk: int = 256) -> Tuple[np.ndarray, np.ndarray]:
    """``(logits, features)`` of images ``x`` by ``apply(params, x)``, in fixed-size padded chunks (one compile)."""
    logits, feats = [], []
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk]
        padded = np.concatenate([part, np.zeros((chunk - len(part),) + part.shape[1:], part.dtype)])
        lo, fe = apply(params, padded)
        logits.append(np.asarray(lo)[: len(part)])
        feats.append(np.asarray(fe)[: len(part)])
    return np.concatenate(logits), np.concatenate(feats)


# --------------------------------------------------------------------------- figures


def _pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use: drawing is the last step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _to_rgb(images: np.ndarray) -> np.ndarray:
    x = (images + 1.0) / 2.0
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def _save_grid(path: Path, rows: Sequence[np.ndarray], row_labels: Sequence[str], title: str) -> None:
    """A figure with one row of images per entry of ``rows`` (each ``(n, H, W, C)`` in [-1, 1])."""
    plt = _pyplot()
    n = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    pad = 1
    canvas = np.ones((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3))
    for i, row in enumerate(rows):
        for j, img in enumerate(_to_rgb(row)):
            canvas[pad + i * (h + pad): pad + i * (h + pad) + h, pad + j * (w + pad): pad + j * (w + pad) + w] = img
    fig, ax = plt.subplots(figsize=(max(3.0, 0.45 * n + 1.0), max(2.0, 0.45 * len(rows) + 0.8)))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_yticks([pad + i * (h + pad) + h / 2 for i in range(len(rows))], list(row_labels))
    ax.set_xticks([])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _save_loss(path: Path, history) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    if history:
        steps, losses = zip(*history)
        ax.plot(steps, losses, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("flow matching loss")
    ax.set_yscale("log")
    ax.set_title("CFG training loss (this invocation)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _w_name(w: float) -> str:
    return f"{w:g}".replace(".", "p").replace("-", "m")


# --------------------------------------------------------------------------- main


def run(config: ImageConfig, out: Path, *, log=print) -> dict:
    """Train, evaluate and write every output of one run into ``out``; returns the summary dict."""
    n_dev = _num_devices(config)
    save_json(out / "config.json", dataclasses.asdict(config))
    train_source, test_source = _sources(config)
    log(f"data {config.dataset}: {len(train_source)} train / {len(test_source)} test images of shape "
        f"{config.image_shape}; {n_dev} device(s)")

    model, state, mesh, info = train_flow(config, out, train_source, n_dev, log=log)
    _save_loss(out / "loss.png", info["history"])
    summary = {"dataset": config.dataset, "devices": n_dev, "start_step": info["start_step"],
               "end_step": info["end_step"], "train_seconds": round(info["train_seconds"], 2)}
    if info["history"]:
        summary["final_loss"] = info["history"][-1][1]
    if not config.evaluate:
        save_json(out / "summary.json", summary)
        return summary

    train_x, _ = _all_images(train_source)
    test_x, test_y = _all_images(test_source)
    with Timer() as t_cls:
        cls_params, apply = train_classifier(config, out, train_source)

    def classify(x):
        return _classify_all(apply, cls_params, np.asarray(x))[0]

    _, train_feats = _classify_all(apply, cls_params, train_x)
    _, test_feats = _classify_all(apply, cls_params, test_x)
    test_acc = float(classifier_accuracy(classify, test_x, test_y))
    summary.update(classifier_test_accuracy=test_acc, fd_test_vs_train=frechet_distance(test_feats, train_feats),
                   classifier_seconds=round(t_cls.seconds, 2))

    params = state.ema_params if state.ema_params is not None else state.params
    sample = make_sampler(_program_key(config))
    k, spc = config.num_classes, config.samples_per_class
    labels = np.repeat(np.arange(k), spc).astype(np.int32)
    rows, per_w = [], {}
    for w in progress(config.guidance_scales, desc="sample w"):
        with Timer() as t_s:
            images = generate(sample, params, labels, w, config, mesh)
        _, feats = _classify_all(apply, cls_params, images)
        accuracy = float(classifier_accuracy(classify, images, labels))
        rows.append({
            "w": float(w),
            "frechet_distance": frechet_distance(feats, train_feats),
            "guided_class_accuracy": accuracy,
            "num_samples": int(len(labels)),
            "sample_seconds": round(t_s.seconds, 2),
        })
        per_w[w] = images.reshape((k, spc) + images.shape[1:])[:, : config.grid_per_class]
        _save_grid(out / f"samples_w{_w_name(w)}.png", list(per_w[w]), [str(c) for c in range(k)],
                   f"{config.dataset}: w = {w:g}, rows = class, step {info['end_step']}")
    for c in range(k):
        _save_grid(out / f"samples_class{c}.png", [per_w[w][c] for w in config.guidance_scales],
                   [f"w={w:g}" for w in config.guidance_scales], f"{config.dataset}: class {c}, rows = guidance scale w")
    table = write_table(rows, out)
    summary["results"] = rows
    save_json(out / "summary.json", summary)
    log(f"\nclassifier: test accuracy {test_acc:.3f}; Frechet distance of the held-out test images to the "
        f"train images {summary['fd_test_vs_train']:.4g} (the floor for the FD column); "
        f"{spc} samples per class, {config.sample_steps} {config.sample_method} steps, "
        f"guided field (1 - w) u(x|null) + w u(x|y)\n")
    log(table)
    log(f"\nwrote {out}/results.{{json,csv,md}}, summary.json, loss.png, samples_w*.png, samples_class*.png")
    return summary


def main(argv: Optional[Sequence[str]] = None) -> dict:
    config, args = parse_config(ImageConfig, PRESETS, argv, description=__doc__.split("\n\n")[0])
    out = run_dir(args.out, f"images-{args.preset}")
    return run(config, out)


if __name__ == "__main__":
    cli(main, DatasetNotPreparedError, CheckpointError)
