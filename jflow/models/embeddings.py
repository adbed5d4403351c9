r"""Time and class embeddings: how ``t`` and ``y`` enter a network ``u_t^theta(x | y)``.

Flow time: ``t = 0`` is noise, ``t = 1`` is data. The lectures condition the network on
the one-dimensional time ``t`` ("simple conditioning on a 1-d variable") and on a prompt
``y``; for classifier-free guidance the prompt may be the empty label ``\varnothing``
(Algorithm 5: "with probability p drop label: y <- \varnothing"). Here a class-conditional
model with ``num_classes = K`` reserves label index ``K`` (the last row of the class table,
``K + 1`` rows in all) for ``\varnothing``: the *null label*.

- :func:`sinusoidal_embedding`: fixed transformer / DDPM features of ``t``.
- :class:`GaussianFourierProjection`: random Fourier features ``[sin 2 pi W t, cos 2 pi W t]``,
  ``W ~ N(0, scale^2)``, fixed or learnable.
- :class:`TimeEmbedding`: features followed by a two-layer MLP.
- :class:`ClassEmbedding`: a ``(K + 1, dim)`` table; row ``K`` is the null label; labels
  outside ``0..K`` raise ``ValueError`` (concrete) or embed as NaN (under ``jit``).
- :class:`ConditionEmbedding`: ``TimeEmbedding(t) + ClassEmbedding(y)``, the conditioning
  vector that every block of every model receives.
- :class:`ConditionedModel`: what the models conditioned this way (MLP, UNet, DiT) share:
  ``null_label`` and their ``cond`` submodule, built from their attributes.
"""
from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jflow._checks import as_float, check_choice, check_positive_int
from jflow.models.layers import (
    Activation,
    Dtype,
    check_label_dtype,
    check_labels,
    get_activation,
)

TIME_EMBEDDINGS = ("sinusoidal", "fourier")

__all__ = [
    "TIME_EMBEDDINGS",
    "sinusoidal_embedding",
    "GaussianFourierProjection",
    "TimeEmbedding",
    "ClassEmbedding",
    "ConditionEmbedding",
    "ConditionedModel",
]


def sinusoidal_embedding(t, dim: int, *, max_period: float = 10_000.0, scale: float = 1000.0):
    r"""Sinusoidal features of time (Vaswani et al. positions, as used by DDPM / DiT).

    .. math:: \mathrm{emb}(t) = [\cos(s t \omega_0), \dots, \cos(s t \omega_{h-1}),
              \sin(s t \omega_0), \dots, \sin(s t \omega_{h-1})],
              \qquad \omega_k = P^{-k/h},\ h = \mathrm{dim}/2,

    with ``P = max_period`` and ``s = scale`` (``scale = 1000`` maps flow time ``t in [0, 1]``
    onto the integer-step range these frequencies were designed for).

    Args:
      t: flow time (``t = 0`` noise, ``t = 1`` data), any shape.
      dim: even number of features.
    Returns:
      array of shape ``t.shape + (dim,)`` in ``t``'s float dtype.
    """
    if not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(f"sinusoidal_embedding: dim must be an even integer >= 2; got {dim!r}")
    t = as_float(t)
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=t.dtype) / half)
    args = scale * t[..., None] * freqs
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class GaussianFourierProjection(nn.Module):
    r"""Random Fourier features of time (Tancik et al. 2020; score SDE's time embedding).

    .. math:: \mathrm{emb}(t) = [\sin(2\pi W t), \cos(2\pi W t)], \qquad W \in \mathbb R^{\mathrm{dim}/2},\
              W_k \sim \mathcal N(0, \mathrm{scale}^2).

    With ``learnable=False`` the frequencies are a constant drawn from ``PRNGKey(seed)``
    (no parameter, so optimisers and weight decay leave them alone); with ``learnable=True``
    they are a parameter ``"frequencies"`` initialised from the same law.
    Input ``t`` of any shape; output ``t.shape + (dim,)``.
    """

    dim: int
    scale: float = 16.0
    learnable: bool = False
    seed: int = 0

    @nn.compact
    def __call__(self, t):
        if not isinstance(self.dim, int) or self.dim < 2 or self.dim % 2:
            raise ValueError(f"GaussianFourierProjection: dim must be an even integer >= 2; got {self.dim!r}")
        t = as_float(t)
        t = t.astype(jnp.promote_types(t.dtype, jnp.float32))
        shape = (self.dim // 2,)
        if self.learnable:
            w = self.param("frequencies", nn.initializers.normal(self.scale), shape, jnp.float32)
        else:
            w = self.scale * jax.random.normal(jax.random.PRNGKey(self.seed), shape, jnp.float32)
        args = 2.0 * jnp.pi * t[..., None] * w.astype(t.dtype)
        return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class TimeEmbedding(nn.Module):
    """Time features followed by ``Dense(dim) -> activation -> Dense(dim)``; ``(B,) -> (B, dim)``.

    Attributes:
      dim: output width.
      features: number of sinusoidal / Fourier features (even); defaults to ``dim``.
      kind: ``"sinusoidal"`` (fixed, :func:`sinusoidal_embedding`) or ``"fourier"``
        (:class:`GaussianFourierProjection`).
      learnable_frequencies: learn the Fourier frequencies (only with ``kind="fourier"``).
      fourier_scale: standard deviation of the Fourier frequencies.
      time_scale: the ``scale`` of :func:`sinusoidal_embedding`.
    """

    dim: int
    features: Optional[int] = None
    kind: str = "sinusoidal"
    learnable_frequencies: bool = False
    fourier_scale: float = 16.0
    time_scale: float = 1000.0
    activation: Activation = "silu"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, t):
        check_choice(self.kind, TIME_EMBEDDINGS, "time embedding kind")
        check_positive_int(self.dim, "time embedding dim")
        features = self.dim if self.features is None else self.features
        if self.kind == "sinusoidal":
            if self.learnable_frequencies:
                raise ValueError(
                    "learnable_frequencies=True needs the Fourier time embedding; set time_embedding='fourier'"
                )
            emb = sinusoidal_embedding(t, features, scale=self.time_scale)
        else:
            emb = GaussianFourierProjection(
                features, scale=self.fourier_scale, learnable=self.learnable_frequencies, name="fourier"
            )(t)
        act = get_activation(self.activation)
        emb = nn.Dense(self.dim, dtype=self.dtype, param_dtype=self.param_dtype, name="dense_0")(emb)
        return nn.Dense(self.dim, dtype=self.dtype, param_dtype=self.param_dtype, name="dense_1")(act(emb))


class ClassEmbedding(nn.Module):
    """Label table with ``num_classes + 1`` rows; row ``num_classes`` is the null label (CFG's empty prompt).

    ``y`` of integer dtype and any shape -> ``y.shape + (dim,)`` (in ``dtype``); row ``y`` of
    the table ``params["table"]["embedding"]``.

    Out-of-range labels are never clamped or wrapped onto another row (a negative index
    would otherwise select the null label): concrete labels outside ``0..num_classes`` raise
    ``ValueError``, and under ``jit``, where raising is impossible, each out-of-range label
    embeds as a row of NaN, so the model's output for that example is NaN and the NaN guard
    of jflow's train steps (:class:`jflow.train.NonFiniteError`) stops training.
    """

    num_classes: int
    dim: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def null_label(self) -> int:
        """Index of the null label: ``num_classes``."""
        return self.num_classes

    @nn.compact
    def __call__(self, y):
        check_positive_int(self.num_classes, "num_classes")
        y = jnp.asarray(y)
        check_label_dtype(y, "ClassEmbedding")
        check_labels(y, self.num_classes, "ClassEmbedding")
        rows = self.num_classes + 1
        table = nn.Embed(
            rows,
            self.dim,
            embedding_init=nn.initializers.normal(1.0),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="table",
        ).embedding
        # labels that do not fit y's dtype are all below num_classes (e.g. int8 with K > 127)
        valid = (y >= 0) & (y <= min(self.num_classes, int(jnp.iinfo(y.dtype).max)))
        index = jnp.where(valid, y.astype(jnp.int32), rows)  # `rows` is out of bounds: filled with NaN
        return jnp.take(jnp.asarray(table, self.dtype), index, axis=0, mode="fill", fill_value=jnp.nan)


class ConditionEmbedding(nn.Module):
    """Conditioning vector ``c = TimeEmbedding(t) + ClassEmbedding(y)`` (class term only when ``num_classes``).

    ``t`` of shape ``(B,)``, ``y`` of shape ``(B,)`` or ``None`` -> ``(B, dim)``.
    """

    dim: int
    num_classes: Optional[int] = None
    time_features: Optional[int] = None
    time_embedding: str = "sinusoidal"
    learnable_frequencies: bool = False
    activation: Activation = "silu"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, t, y=None):
        c = TimeEmbedding(
            self.dim,
            features=self.time_features,
            kind=self.time_embedding,
            learnable_frequencies=self.learnable_frequencies,
            activation=self.activation,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="time",
        )(t)
        if self.num_classes is not None:
            if y is None:
                raise ValueError("ConditionEmbedding: a class-conditional embedding needs labels y")
            c = c + ClassEmbedding(
                self.num_classes, self.dim, dtype=self.dtype, param_dtype=self.param_dtype, name="label"
            )(y)
        return c


class ConditionedModel:
    """Mixin of the models conditioned by a :class:`ConditionEmbedding` (MLP, UNet, DiT).

    The model declares the attributes ``num_classes``, ``time_embedding``,
    ``learnable_frequencies``, ``activation``, ``dtype`` and ``param_dtype``; the mixin reads
    them for ``null_label`` and for the model's ``cond`` submodule. Not a flax module itself,
    so its method is not wrapped: call :meth:`condition_embedding` from a compact method.
    """

    @property
    def null_label(self) -> Optional[int]:
        """Label index of classifier-free guidance's empty prompt (``num_classes``), or ``None``."""
        return self.num_classes

    def condition_embedding(self, dim: int, time_features: Optional[int]) -> ConditionEmbedding:
        """The model's submodule ``cond``: ``c = TimeEmbedding(t) + ClassEmbedding(y)`` of width ``dim``."""
        # same shape as ConditionEmbedding's call of TimeEmbedding: each passes on its own attributes by keyword
        return ConditionEmbedding(
            dim,
            num_classes=self.num_classes,
            time_features=time_features,
            time_embedding=self.time_embedding,
            learnable_frequencies=self.learnable_frequencies,
            activation=self.activation,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="cond",
        )
