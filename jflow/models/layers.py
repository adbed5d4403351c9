"""Building blocks shared by the models: activations, input checks, multi-head self-attention.

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


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    r"""Scaled dot-product attention :math:`\mathrm{softmax}(q k^\top / \sqrt d)\, v` over tokens.

    Shapes ``(B, N, heads, d)`` in and out, no mask. Delegates to
    :func:`jax.nn.dot_product_attention`, which picks the best implementation for the
    backend: XLA's (logits and softmax in float32 for half-precision inputs) on CPU and
    TPU, and cuDNN's fused flash attention on NVIDIA GPUs when the dtype (bf16/fp16) and
    head size allow it. ``tests/test_models.py`` checks it against the explicit formula.
    """
    return jax.nn.dot_product_attention(q, k, v)


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
