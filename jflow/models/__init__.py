"""Flax networks for ``u_t^theta(x | y)``: MLP (vectors), U-Net and DiT (images), and their embeddings.

Every model is a ``flax.linen`` module called as ``model.apply(params, x, t, y)`` (add
``train=True, rngs={"dropout": key}`` for dropout). ``x`` has the batch axis first, ``t`` is
flow time (``t = 0`` noise, ``t = 1`` data), a scalar or shape ``(B,)``; ``y`` holds integer
labels ``(B,)`` or is ``None``. The output has ``x``'s shape and dtype. A class-conditional
model with ``num_classes = K`` reserves label ``K`` as the null label of classifier-free
guidance (``model.null_label``); ``y=None`` means the null label for every example.
Labels outside ``0..K`` raise ``ValueError`` (concrete labels) or, under ``jit``, make that
example's output NaN, so a training loop's NaN guard stops instead of training on garbage.
Models know nothing of losses or paths; what the output means (velocity, score, noise,
data) is decided by the loss that trains it.
"""
from jflow.models.classifier import Classifier
from jflow.models.dit import DiT
from jflow.models.embeddings import (
    ClassEmbedding,
    ConditionEmbedding,
    GaussianFourierProjection,
    TimeEmbedding,
    sinusoidal_embedding,
)
from jflow.models.mlp import MLP, PlainMLP
from jflow.models.registry import CONFIGS, FAMILIES, ModelConfig, count_params, get_config, get_model
from jflow.models.unet import UNet

__all__ = [
    "MLP",
    "PlainMLP",
    "UNet",
    "DiT",
    "Classifier",
    "sinusoidal_embedding",
    "GaussianFourierProjection",
    "TimeEmbedding",
    "ClassEmbedding",
    "ConditionEmbedding",
    "ModelConfig",
    "CONFIGS",
    "FAMILIES",
    "get_config",
    "get_model",
    "count_params",
]
