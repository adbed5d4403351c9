"""A small CNN image classifier: the feature extractor of jflow's image metrics.

Protocol (``experiments/images/``): train it with cross-entropy on the training split
of the same data set and image size as the generative model; its penultimate activations
(``features`` wide) are the features of :func:`jflow.metrics.frechet_distance`, and its
predictions give :func:`jflow.metrics.classifier_accuracy` of class-guided samples.
"""
from __future__ import annotations

from typing import Tuple

import flax.linen as nn
import jax.numpy as jnp


class Classifier(nn.Module):
    """Conv stages ``[conv3x3 -> gelu -> conv3x3 -> gelu -> avgpool 2x2]`` per entry of
    ``channels``, then a ``features``-wide dense layer (the features) and the logits.

    ``apply(params, x)`` with ``x`` of shape ``(B, H, W, C)`` returns logits ``(B, num_classes)``;
    with ``return_features=True`` it returns ``(logits, features)``. No batch statistics, so
    it is a pure function of its parameters.
    """

    num_classes: int
    channels: Tuple[int, ...] = (32, 64)
    features: int = 128

    @nn.compact
    def __call__(self, x, *, return_features: bool = False):
        if x.ndim != 4:
            raise ValueError(f"Classifier expects images of shape (B, H, W, C); got shape {x.shape}")
        h = jnp.asarray(x, jnp.float32)
        for ch in self.channels:
            h = nn.gelu(nn.Conv(ch, (3, 3))(h))
            h = nn.gelu(nn.Conv(ch, (3, 3))(h))
            h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        feats = nn.gelu(nn.Dense(self.features)(h.reshape(h.shape[0], -1)))
        logits = nn.Dense(self.num_classes)(feats)
        return (logits, feats) if return_features else logits
