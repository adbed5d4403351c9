"""Named model configurations, a factory by name, and a parameter counter.

A named configuration is data: the model family, the constructor arguments, and the
per-example input shape it was sized for. ``get_model(name, **overrides)`` builds the flax
module; the family names ``"mlp"``, ``"unet"`` and ``"dit"`` give the class with its defaults.

================  ======  ==============  ==========================================
name              family  input shape     what for
================  ======  ==============  ==========================================
``mlp_2d``        MLP     (2,)            2-D toy distributions
``unet_digits``   UNet    (8, 8, 1)       scikit-learn 8x8 digits, tiny
``unet_mnist``    UNet    (28, 28, 1)     MNIST / Fashion-MNIST, about 1M parameters
``unet_cifar10``  UNet    (32, 32, 3)     CIFAR-10, DDPM / flow matching paper scale
``dit_tiny``      DiT     (28, 28, 1)     MNIST-scale transformer
``dit_s2``        DiT     (32, 32, 3)     DiT-S/2 (hidden 384, 12 blocks, 6 heads)
``dit_b2``        DiT     (32, 32, 3)     DiT-B/2 (hidden 768, 12 blocks, 12 heads)
================  ======  ==============  ==========================================

The image configurations are class-conditional with 10 classes (label 10 is the null label;
``y=None`` means null label); pass ``num_classes=None`` for an unconditional model.
"""
from __future__ import annotations

import dataclasses
import math
from types import MappingProxyType
from typing import Any, Mapping, Tuple

import flax.linen as nn
import jax

from jflow.models.dit import DiT
from jflow.models.mlp import MLP
from jflow.models.unet import UNet

__all__ = ["ModelConfig", "CONFIGS", "FAMILIES", "get_config", "get_model", "count_params"]

FAMILIES = MappingProxyType({"mlp": MLP, "unet": UNet, "dit": DiT})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A named configuration: ``family`` (key of ``FAMILIES``), constructor ``kwargs``, per-example ``input_shape``."""

    family: str
    kwargs: Mapping[str, Any]
    input_shape: Tuple[int, ...]
    description: str


def _config(family, input_shape, description, **kwargs):
    return ModelConfig(family, MappingProxyType(kwargs), tuple(input_shape), description)


# the entries share a shape: each configuration is written out in full, as the table above lists it
CONFIGS: Mapping[str, ModelConfig] = MappingProxyType(
    {
        "mlp_2d": _config("mlp", (2,), "residual FiLM MLP for 2-D toys", width=128, depth=4),
        "unet_digits": _config(
            "unet",
            (8, 8, 1),
            "tiny U-Net for 8x8 digits",
            base_channels=16,
            channel_mults=(1, 2),
            num_res_blocks=1,
            attention_levels=(1,),
            num_heads=4,
            norm_groups=8,
            num_classes=10,
        ),
        "unet_mnist": _config(
            "unet",
            (28, 28, 1),
            "MNIST-scale U-Net (~1M parameters)",
            base_channels=32,
            channel_mults=(1, 2, 2),
            num_res_blocks=1,
            attention_levels=(2,),
            num_heads=4,
            norm_groups=8,
            num_classes=10,
            dropout=0.1,
        ),
        "unet_cifar10": _config(
            "unet",
            (32, 32, 3),
            "CIFAR-10 U-Net of DDPM / flow matching papers (ch 128, mults 1-2-2-2, attention at 16x16)",
            base_channels=128,
            channel_mults=(1, 2, 2, 2),
            num_res_blocks=2,
            attention_levels=(1,),
            num_heads=4,
            norm_groups=32,
            num_classes=10,
            dropout=0.1,
        ),
        "dit_tiny": _config(
            "dit",
            (28, 28, 1),
            "MNIST-scale DiT (patch 2, hidden 128, 4 blocks)",
            patch_size=2,
            hidden_size=128,
            depth=4,
            num_heads=4,
            num_classes=10,
        ),
        "dit_s2": _config(
            "dit",
            (32, 32, 3),
            "DiT-S/2 (hidden 384, 12 blocks, 6 heads)",
            patch_size=2,
            hidden_size=384,
            depth=12,
            num_heads=6,
            num_classes=10,
        ),
        "dit_b2": _config(
            "dit",
            (32, 32, 3),
            "DiT-B/2 (hidden 768, 12 blocks, 12 heads)",
            patch_size=2,
            hidden_size=768,
            depth=12,
            num_heads=12,
            num_classes=10,
        ),
    }
)


def get_config(name: str) -> ModelConfig:
    """The :class:`ModelConfig` named ``name`` (a key of ``CONFIGS``)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown model configuration {name!r}; choose one of {sorted(CONFIGS)}")
    return CONFIGS[name]


def get_model(name: str, **overrides) -> nn.Module:
    """Build a model by name: a configuration in ``CONFIGS`` or a family in ``FAMILIES`` (class defaults).

    ``overrides`` replace constructor arguments, e.g.
    ``get_model("unet_cifar10", num_classes=None, dtype=jnp.bfloat16)``.
    """
    if name in CONFIGS:
        cfg = CONFIGS[name]
        cls, kwargs = FAMILIES[cfg.family], {**cfg.kwargs, **overrides}
    elif name in FAMILIES:
        cls, kwargs = FAMILIES[name], dict(overrides)
    else:
        raise ValueError(
            f"unknown model {name!r}; choose a configuration {sorted(CONFIGS)} or a family {sorted(FAMILIES)}"
        )
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ValueError(f"{cls.__name__} has no option(s) {unknown}; valid options are {sorted(fields)}")
    return cls(**kwargs)


def count_params(params) -> int:
    """Total number of scalars in a pytree of parameters (``params`` or the whole variables dict).

    Works on arrays and on ``jax.ShapeDtypeStruct`` leaves (e.g. from ``jax.eval_shape(model.init, ...)``).
    """
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))
