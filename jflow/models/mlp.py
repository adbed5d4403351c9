r"""Residual MLP with FiLM conditioning for vector data (the 2-D toy problems).

Represents ``u_t^theta(x | y)`` for ``x`` of shape ``(B, d)``; flow time ``t = 0`` noise,
``t = 1`` data. Time (and label) enter *every* block through a feature-wise affine
modulation (FiLM, Perez et al. 2018):

.. math:: h \leftarrow h + W_2\, \mathrm{drop}\big(\phi\big((1 + \gamma(c)) \odot W_1 \phi(\mathrm{LN}(h)) + \beta(c)\big)\big),
          \qquad c = \mathrm{TimeEmb}(t) + \mathrm{ClassEmb}(y).
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from jflow.models.embeddings import ConditionEmbedding
from jflow.models.layers import (
    Activation,
    Dtype,
    check_dropout,
    check_positive_int,
    get_activation,
    output_dense_init,
    prepare_inputs,
)

__all__ = ["MLP", "FiLMBlock"]


class FiLMBlock(nn.Module):
    """Pre-norm residual block whose hidden layer is scaled and shifted by the conditioning vector."""

    width: int
    activation: Activation = "silu"
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h, c, *, train: bool = False):
        act = get_activation(self.activation)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        z = nn.LayerNorm(**kw, name="norm")(h)
        z = nn.Dense(self.width, **kw, name="dense_0")(act(z))
        scale, shift = jnp.split(nn.Dense(2 * self.width, **kw, name="film")(act(c)), 2, axis=-1)
        z = act(z * (1.0 + scale) + shift)
        z = nn.Dropout(self.dropout)(z, deterministic=not train)
        return h + nn.Dense(self.width, **kw, name="dense_1")(z)


class MLP(nn.Module):
    """Time- and class-conditioned residual MLP: ``(x (B, d), t, y) -> (B, d)``.

    Attributes:
      width: hidden width (also the width of the conditioning vector).
      depth: number of residual FiLM blocks (>= 1).
      activation: name in ``jflow.models.layers.ACTIVATIONS`` or a callable.
      num_classes: ``K`` for a class-conditional model (labels ``0..K-1``; ``K`` is the null
        label of classifier-free guidance; ``y=None`` means the null label), or ``None``.
        Labels outside ``0..K`` raise ``ValueError`` outside ``jit`` and give NaN outputs for
        those examples under ``jit`` (see :class:`~jflow.models.ClassEmbedding`).
      time_embedding: ``"sinusoidal"`` or ``"fourier"``; ``learnable_frequencies`` for the latter.
      time_features: number of time features before the embedding MLP.
      dropout: dropout rate inside each block, active only with ``train=True`` (rng ``"dropout"``).
      zero_init_output: zero the output layer, so a fresh model predicts exactly zero.
      dtype: compute dtype (e.g. ``jnp.bfloat16``); ``param_dtype`` stays float32. The output
        has ``x``'s dtype.
    """

    width: int = 128
    depth: int = 4
    activation: Activation = "silu"
    num_classes: Optional[int] = None
    time_embedding: str = "sinusoidal"
    learnable_frequencies: bool = False
    time_features: int = 64
    dropout: float = 0.0
    zero_init_output: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def null_label(self) -> Optional[int]:
        """Label index of classifier-free guidance's empty prompt (``num_classes``), or ``None``."""
        return self.num_classes

    @nn.compact
    def __call__(self, x, t, y=None, *, train: bool = False):
        """Evaluate ``u_t(x | y)``: ``x`` (B, d), ``t`` scalar or (B,) in [0, 1] (0 noise, 1 data), ``y`` (B,) or None."""
        check_positive_int(self.width, "width")
        check_positive_int(self.depth, "depth")
        check_dropout(self.dropout)
        x, t, y = prepare_inputs(
            x, t, y, num_classes=self.num_classes, event_ndim=1, model="MLP", event_desc="d"
        )
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        act = get_activation(self.activation)
        c = ConditionEmbedding(
            self.width,
            num_classes=self.num_classes,
            time_features=self.time_features,
            time_embedding=self.time_embedding,
            learnable_frequencies=self.learnable_frequencies,
            activation=self.activation,
            **kw,
            name="cond",
        )(t, y)
        h = nn.Dense(self.width, **kw, name="input")(x)
        for i in range(self.depth):
            h = FiLMBlock(self.width, self.activation, self.dropout, **kw, name=f"block_{i}")(h, c, train=train)
        h = act(nn.LayerNorm(**kw, name="norm_out")(h))
        out = nn.Dense(
            x.shape[-1], kernel_init=output_dense_init(self.zero_init_output), **kw, name="output"
        )(h)
        return out.astype(x.dtype)
