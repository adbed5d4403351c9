"""Building blocks shared by the models: activations, input checks, group normalisation,
multi-head self-attention.

Every model in :mod:`jflow.models` represents a (possibly class-conditional) field
``u_t^theta(x | y)`` and is called as ``model.apply(params, x, t, y)``. The input contract
is checked once, by :func:`prepare_inputs`:

- ``x``: floating array, batch axis first;
- ``t``: flow time (``t = 0`` noise, ``t = 1`` data), a scalar or shape ``(B,)``; a scalar is
  broadcast to ``(B,)``. Outside ``jit`` values outside ``[0, 1]`` (or NaN) raise ``ValueError``;
- ``y``: integer labels of shape ``(B,)`` (or a scalar, broadcast), or ``None``. For a
  class-conditional model with ``num_classes = K`` the labels are ``0..K-1`` and ``K`` is the
  reserved *null label* (the empty prompt of classifier-free guidance, Algorithm 5 step 6);
  ``y=None`` means the null label for every example. An unconditional model
  (``num_classes=None``) accepts only ``y=None``. Labels outside ``0..K`` raise ``ValueError``
  when they are concrete (:func:`check_labels`); under ``jit``, where nothing can be raised,
  they make that example's output NaN (:class:`~jflow.models.ClassEmbedding`), so a training
  loop's NaN guard stops instead of training on a clamped label.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import as_float, check_time, is_concrete

Dtype = Any
Activation = Union[str, Callable[[jax.Array], jax.Array]]

ACTIVATIONS = {
    "silu": nn.silu,
    "swish": nn.silu,
    "gelu": nn.gelu,
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "elu": nn.elu,
    "softplus": nn.softplus,
}

__all__ = [
    "ACTIVATIONS",
    "get_activation",
    "check_label_dtype",
    "check_labels",
    "prepare_inputs",
    "GroupNorm",
    "MultiHeadSelfAttention",
]


def get_activation(activation: Activation) -> Callable[[jax.Array], jax.Array]:
    """Return the activation function named ``activation`` (see ``ACTIVATIONS``), or ``activation`` itself if callable."""
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)} or pass a callable"
        )
    return ACTIVATIONS[activation]


def check_dropout(rate, name: str = "dropout") -> None:
    """Raise ``ValueError`` unless ``0 <= rate < 1``."""
    if not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"{name} must lie in [0, 1); got {rate!r}")


def check_label_dtype(y, model: str) -> None:
    """Raise ``ValueError`` unless ``y`` has an integer dtype (bool and float labels are rejected)."""
    dtype = jnp.result_type(y)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(
            f"{model}: y must hold integer labels (class indices); got dtype {dtype}. "
            "Cast them, e.g. y.astype(jnp.int32)."
        )


def check_labels(y, num_classes: int, model: str):
    """Raise ``ValueError`` if concrete labels ``y`` lie outside ``0..num_classes``; return ``y``.

    ``0..num_classes - 1`` are the classes and ``num_classes`` is the null label of
    classifier-free guidance. A traced ``y`` (under ``jit``) is not checked here: the class
    embedding turns its out-of-range labels into NaN outputs instead.
    """
    if not is_concrete(y):
        return y
    values = np.asarray(y)
    if values.size:
        bad = (values < 0) | (values > num_classes)
        if bad.any():
            first = int(np.flatnonzero(bad.ravel())[0])
            raise ValueError(
                f"{model}: labels must be classes 0..{num_classes - 1} or {num_classes}, the null label "
                f"of classifier-free guidance (num_classes={num_classes}); got values in "
                f"[{values.min()}, {values.max()}], e.g. {values.ravel()[first]} at flat index {first}. "
                f"Map the labels into 0..{num_classes - 1} (1-based labels: y - 1), or build the model "
                "with num_classes equal to the number of classes in the data."
            )
    return y


def prepare_inputs(
    x, t, y, *, num_classes: Optional[int], event_ndim: int, model: str, event_desc: str
) -> Tuple[jax.Array, jax.Array, Optional[jax.Array]]:
    """Validate ``(x, t, y)`` and return ``(x, t of shape (B,), y of shape (B,) or None)``.

    ``event_ndim`` is the number of axes after the batch axis (1 for vectors, 3 for
    ``(H, W, C)`` images); ``event_desc`` names them in error messages. ``t`` is returned in
    at least float32 (time features are computed in full precision even in bfloat16 models).
    For a class-conditional model, ``y=None`` becomes the null label ``num_classes``.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{model}: x must be a floating array; got dtype {x.dtype}")
    if x.ndim != 1 + event_ndim:
        raise ValueError(
            f"{model}: x must have shape (B, {event_desc}) with the batch axis first; "
            f"got x.shape={tuple(x.shape)}"
        )
    batch = x.shape[0]

    t = as_float(t)
    if t.ndim == 0:
        t = jnp.broadcast_to(t, (batch,))
    elif t.shape != (batch,):
        raise ValueError(
            f"{model}: t must be a scalar or have shape (B,) = ({batch},); got t.shape={tuple(t.shape)}"
        )
    check_time(t)
    # astype also drops a Python scalar's weak type, so t=0.3 and t=jnp.full((B,), 0.3)
    # trace to the same program
    t = t.astype(jnp.promote_types(t.dtype, jnp.float32))

    if num_classes is None:
        if y is not None:
            raise ValueError(
                f"{model}: this model is unconditional (num_classes=None), so y must be None; "
                "build it with num_classes=K to condition on labels"
            )
        return x, t, None
    if y is None:
        return x, t, jnp.full((batch,), num_classes, dtype=jnp.int32)
    y = jnp.asarray(y)
    check_label_dtype(y, model)
    if y.ndim == 0:
        y = jnp.broadcast_to(y, (batch,)).astype(y.dtype)  # astype drops a Python int's weak type
    elif y.shape != (batch,):
        raise ValueError(
            f"{model}: y must be None, a scalar or have shape (B,) = ({batch},); got y.shape={tuple(y.shape)}"
        )
    check_labels(y, num_classes, model)
    return x, t, y


class GroupNorm(nn.Module):
    r"""Group normalisation over the channels (last axis) of ``(B, ..., C)``, as :class:`flax.linen.GroupNorm`.

    The ``C`` channels are split into ``num_groups`` groups of ``C / G`` consecutive channels;
    each example's group is normalised over its spatial positions and channels, then scaled
    and shifted per channel:

    .. math:: y = \frac{x - \mu_{b,g}}{\sqrt{\sigma^2_{b,g} + \epsilon}}\, \gamma_c + \beta_c,
              \qquad \sigma^2_{b,g} = \mathbb{E}[x^2] - \mu_{b,g}^2 .

    Same parameters (``scale`` = 1, ``bias`` = 0, shape ``(C,)``), epsilon and variance formula
    as flax's module (whose ``use_fast_variance`` default is this formula), so parameters and
    checkpoints move between the two; ``tests/test_models_large.py`` checks outputs and gradients
    against it. Computed differently, for speed: the sums of ``x`` and ``x^2`` are first
    taken per channel over the spatial axes (channels stay the contiguous axis), then
    summed within each group, and the result is applied as one per-channel multiply-add,
    ``y = a_{b,c} x + d_{b,c}``. On XLA:CPU the layer (with the SiLU after it) is about 5x
    faster forward and 2.4x faster forward + gradient than flax's reduction over a
    ``(B, H, W, G, C/G)`` view (``python -m benchmarks.layers``); the whole U-Net step gains
    little, as its convolutions dominate. Statistics in float32 for half-precision inputs;
    output in ``dtype``.
    """

    num_groups: int
    epsilon: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        if x.ndim < 2 or channels % self.num_groups:
            raise ValueError(
                f"GroupNorm: num_groups={self.num_groups} must divide the channel count of an input "
                f"(B, ..., C); got shape {tuple(x.shape)}"
            )
        scale = self.param("scale", nn.initializers.ones, (channels,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (channels,), self.param_dtype)
        stats_dtype = jnp.promote_types(x.dtype, jnp.float32)
        xs = x.astype(stats_dtype)
        spatial = tuple(range(1, x.ndim - 1))
        group_size = channels // self.num_groups
        count = group_size * int(np.prod(x.shape[1:-1]))

        def group_mean(v):  # (B, C) per-channel sums -> (B, C) mean of each channel's group
            sums = v.reshape(v.shape[0], self.num_groups, group_size).sum(-1) / count
            return jnp.repeat(sums, group_size, axis=-1)

        mean = group_mean(jnp.sum(xs, axis=spatial))
        var = jnp.maximum(group_mean(jnp.sum(jnp.square(xs), axis=spatial)) - jnp.square(mean), 0.0)
        mul = jax.lax.rsqrt(var + self.epsilon) * scale.astype(stats_dtype)  # (B, C)
        add = bias.astype(stats_dtype) - mean * mul
        expand = (slice(None),) + (None,) * len(spatial) + (slice(None),)
        return (xs * mul[expand] + add[expand]).astype(self.dtype)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    r"""Scaled dot-product attention :math:`\mathrm{softmax}(q k^\top / \sqrt d)\, v` over tokens.

    Shapes ``(B, N, heads, d)`` in and out, no mask. On accelerators it delegates to
    :func:`jax.nn.dot_product_attention`, which picks the best implementation for the
    backend: cuDNN's fused flash attention on NVIDIA GPUs when the dtype (bf16/fp16) and
    head size allow it, XLA's otherwise (logits and softmax in float32 for half-precision
    inputs). On CPU it computes the same formula with the heads moved in front of the
    tokens first, ``(B * heads, N, d)``: XLA:CPU then runs plain batched matrix products and
    reduces the softmax over the contiguous axis, 1.3x (forward + gradient) to 1.5x (forward)
    faster than :func:`jax.nn.dot_product_attention`'s ``(B, N, heads, d)`` einsums
    (``python -m benchmarks.layers``). ``tests/test_models_large.py`` checks both paths against
    the explicit formula.
    """
    if jax.default_backend() != "cpu":
        return jax.nn.dot_product_attention(q, k, v)
    return _heads_first_attention(q, k, v)


def _heads_first_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """:func:`dot_product_attention` with the heads moved before the tokens (XLA:CPU's fast layout)."""
    b, n, heads, d = q.shape
    dtype = jnp.promote_types(q.dtype, jnp.float32)  # logits and softmax in float32 at least

    def heads_first(a):
        return jnp.transpose(a, (0, 2, 1, 3)).reshape(b * heads, n, d)

    # scale q, not the logits: the gradient of a scaled (B * heads, N, N) tensor costs XLA:CPU
    # an extra pass over it (the attention's gradient ran 1.8x slower that way)
    q = heads_first(q).astype(dtype) * (d ** -0.5)
    logits = jnp.einsum("znd,zmd->znm", q, heads_first(k).astype(dtype))
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("znm,zmd->znd", weights, heads_first(v))
    return jnp.transpose(out.reshape(b, heads, n, d), (0, 2, 1, 3))


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention over tokens ``(B, N, D)`` -> ``(B, N, D)`` (no mask).

    ``zero_init_output`` zero-initialises the output projection so that a residual
    branch ``h + attn(h)`` starts as the identity.
    """

    num_heads: int
    zero_init_output: bool = False
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, *, train: bool = False) -> jax.Array:
        width = h.shape[-1]
        if width % self.num_heads:
            raise ValueError(
                f"attention width {width} is not divisible by num_heads={self.num_heads}; "
                "change num_heads or the channel count"
            )
        head_dim = width // self.num_heads
        qkv = nn.DenseGeneral(
            (3, self.num_heads, head_dim), dtype=self.dtype, param_dtype=self.param_dtype, name="qkv"
        )(h)
        out = dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
        out = nn.Dropout(self.dropout)(out, deterministic=not train)
        kernel_init = nn.initializers.zeros if self.zero_init_output else nn.initializers.lecun_normal()
        return nn.DenseGeneral(
            width,
            axis=(-2, -1),
            kernel_init=kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="out",
        )(out)


def output_dense_init(zero: bool):
    """Kernel initialiser of an output layer: zeros when ``zero`` (a fresh model predicts 0), else LeCun normal."""
    return nn.initializers.zeros if zero else nn.initializers.lecun_normal()
