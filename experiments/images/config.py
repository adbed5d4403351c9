"""The image experiment's config: data sets, the U-Net and training settings, presets, random streams."""
from __future__ import annotations

import dataclasses
import math
from typing import Tuple

import jax

from experiments.common import require, require_positive_ints, seed_offset

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

    # same shape as the other experiments' configs, with this experiment's defaults: each field is one
    # --flag of experiments.common.parse_config; a shared base class would hide them from the reader
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
        require_positive_ints(self, "base_channels", "steps_per_call", "save_every", "batch_size", "sample_steps",
                              "sample_batch", "classifier_steps", "classifier_batch")
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
        require(self.steps % self.steps_per_call == 0, "steps",
                f"must be a multiple of steps_per_call={self.steps_per_call}; got {self.steps}")
        require(self.save_every % self.steps_per_call == 0, "save_every",
                f"must be a multiple of steps_per_call={self.steps_per_call}; got {self.save_every}")
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
        require(self.sample_method in ODE_METHODS, "sample_method",
                f"unknown ODE method {self.sample_method!r}; choose one of {list(ODE_METHODS)}")
        require(1 <= self.grid_per_class <= self.samples_per_class, "grid_per_class",
                f"must lie in [1, samples_per_class={self.samples_per_class}]; got {self.grid_per_class}")
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


#: fields that define the trained model: a checkpoint is only resumed under the same ones
TRAIN_FIELDS = ("dataset", "base_channels", "channel_mults", "num_res_blocks", "attention_levels", "mid_attention",
                "num_heads", "norm_groups", "dropout", "batch_size", "learning_rate", "warmup_steps", "clip_norm",
                "label_dropout", "ema_decay", "seed")


def train_config(config: ImageConfig) -> dict:
    """The :data:`TRAIN_FIELDS` of ``config`` (stored with the U-Net's checkpoints)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
            if k in TRAIN_FIELDS}


def _split_part(offset: int, part: int):
    """Derivation ``jax.random.split(PRNGKey(seed + offset))[part]``."""
    return lambda seed, _: jax.random.split(jax.random.PRNGKey(seed + offset))[part]


#: Every random stream of a run, derived from ``seed`` as in the published results. The data
#: order of the two loaders is seeded by ``seed`` (U-Net) and ``seed + 1`` (classifier).
STREAMS = {
    "unet_init": _split_part(0, 0),
    "unet_train": _split_part(0, 1),  # label dropout, times and noise of the U-Net's training
    "classifier_init": _split_part(1, 0),
    "classifier_train": _split_part(1, 1),
    "sample_noise": seed_offset(2),  # X_0 of example i: fold_in(this key, i), the same for every w
}
