r"""Diffusion Transformer (DiT, Peebles & Xie 2023) with adaLN-Zero conditioning on time and class.

The lectures' idea: "divide an image into patches and attend between the patches". For
``x`` of shape ``(B, H, W, C)`` and patch size ``p``:

1. patchify into ``N = (H/p)(W/p)`` tokens of ``p^2 C`` values, embed linearly, add fixed
   2-D sine-cosine position embeddings (computed for any grid, so any ``H, W`` divisible by ``p``);
2. ``depth`` transformer blocks with adaLN-Zero: from ``c = TimeEmb(t) + ClassEmb(y)``,
   a zero-initialised linear map gives ``(shift_1, scale_1, gate_1, shift_2, scale_2, gate_2)`` and

   .. math:: h \leftarrow h + g_1 \odot \mathrm{MHSA}(\mathrm{LN}(h)(1 + s_1) + b_1),\qquad
             h \leftarrow h + g_2 \odot \mathrm{MLP}(\mathrm{LN}(h)(1 + s_2) + b_2),

   so every block starts as the identity;
3. final adaptive LayerNorm (zero-initialised modulation) and a linear map to ``p^2 C``;
4. unpatchify back to ``(B, H, W, C)``.

``zero_init_output`` zeroes the final linear map (as in the DiT paper), so a fresh model predicts 0.

Large models: ``scan_blocks=True`` runs the ``depth`` blocks as one ``nn.scan`` over stacked
parameters (compile time stops growing with ``depth``; parameters live under
``params["blocks"]`` with a leading axis of size ``depth``, and :func:`stack_block_params`
converts an unscanned tree), and ``remat`` rematerialises each block's activations in the
backward pass under a ``jax.checkpoint_policies`` policy (activation memory traded for a
second forward pass). Neither changes the function the model computes; the measured effect
on memory and compile time is in ``benchmarks/README.md``.
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import check_positive_int
from jflow.models.embeddings import ConditionedModel
from jflow.models.layers import (
    Activation,
    Dtype,
    MultiHeadSelfAttention,
    check_dropout,
    get_activation,
    output_dense_init,
    prepare_inputs,
)

__all__ = [
    "DiT",
    "DiTBlock",
    "REMAT_POLICIES",
    "patchify",
    "unpatchify",
    "sincos_position_embedding",
    "stack_block_params",
]

REMAT_POLICIES = (
    "nothing_saveable",
    "dots_saveable",
    "dots_with_no_batch_dims_saveable",
    "everything_saveable",
)
"""Names of ``jax.checkpoint_policies`` accepted by ``DiT(remat=...)``: what each block keeps for the
backward pass (``nothing_saveable``: only its inputs, least memory; ``dots_saveable``: matrix
products; ``everything_saveable``: all, as without remat)."""


def patchify(x: jax.Array, patch_size: int) -> jax.Array:
    """``(B, H, W, C) -> (B, (H/p)(W/p), p*p*C)``, patches in row-major order."""
    b, h, w, c = x.shape
    p = patch_size
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tokens: jax.Array, patch_size: int, height: int, width: int) -> jax.Array:
    """Inverse of :func:`patchify`: ``(B, N, p*p*C) -> (B, H, W, C)``."""
    b, _, d = tokens.shape
    p = patch_size
    c = d // (p * p)
    x = tokens.reshape(b, height // p, width // p, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, height, width, c)


def sincos_position_embedding(grid_h: int, grid_w: int, dim: int) -> np.ndarray:
    r"""Fixed 2-D sine-cosine position embedding, shape ``(grid_h * grid_w, dim)`` (``dim % 4 == 0``).

    Half of the features encode the row index, half the column index, each as
    ``[sin(pos \omega_k), cos(pos \omega_k)]`` with ``\omega_k = 10000^{-k/(dim/4)}``.
    """
    if dim % 4:
        raise ValueError(f"the position embedding needs hidden_size divisible by 4; got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10_000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")

    def enc(pos):
        args = pos.reshape(-1)[:, None] * omega[None, :]
        return np.concatenate([np.sin(args), np.cos(args)], axis=1)

    return np.concatenate([enc(rows), enc(cols)], axis=1).astype(np.float32)


def _modulate(h, shift, scale):
    return h * (1.0 + scale[:, None, :]) + shift[:, None, :]


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning; ``(B, N, D), (B, D) -> (B, N, D)``."""

    # same shape as TimeEmbedding's attributes and DiT's: flax modules declare their attributes
    # field by field; a shared base would hide them from the reader
    hidden_size: int
    num_heads: int
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    activation: Activation = "silu"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h, c, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        act = get_activation(self.activation)
        mod = nn.Dense(6 * self.hidden_size, kernel_init=nn.initializers.zeros, **kw, name="adaln")(act(c))
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod, 6, axis=-1)
        norm = dict(use_scale=False, use_bias=False, epsilon=1e-6, **kw)
        z = _modulate(nn.LayerNorm(**norm, name="norm_0")(h), shift1, scale1)
        z = MultiHeadSelfAttention(self.num_heads, dropout=self.dropout, **kw, name="attn")(z, train=train)
        h = h + gate1[:, None, :] * z
        z = _modulate(nn.LayerNorm(**norm, name="norm_1")(h), shift2, scale2)
        z = nn.Dense(int(self.hidden_size * self.mlp_ratio), **kw, name="mlp_0")(z)
        z = nn.Dropout(self.dropout)(nn.gelu(z, approximate=True), deterministic=not train)
        z = nn.Dense(self.hidden_size, **kw, name="mlp_1")(z)
        return h + gate2[:, None, :] * z


class _ScannedBlock(nn.Module):
    """One :class:`DiTBlock` in ``nn.scan``'s ``(carry, c) -> (carry, None)`` form."""

    block: Any
    train: bool

    @nn.compact
    def __call__(self, h, c):
        return self.block(name="block")(h, c, self.train), None


def _block_class(remat: Optional[str]):
    """:class:`DiTBlock`, wrapped in ``nn.remat`` with the named checkpoint policy when ``remat`` is set."""
    if remat is None:
        return DiTBlock
    if remat not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {remat!r}; choose one of {list(REMAT_POLICIES)} or None")
    return nn.remat(DiTBlock, policy=getattr(jax.checkpoint_policies, remat), static_argnums=(3,))


def stack_block_params(params, depth: int):
    """Parameters of a ``DiT(scan_blocks=False)`` as those of the same model with ``scan_blocks=True``.

    ``params["block_i"]`` for ``i < depth`` become one ``params["blocks"]["block"]`` tree
    whose leaves have a leading axis of size ``depth``; everything else is kept. The two
    models then compute the same function (tested).
    """
    inner = dict(params["params"])
    blocks = [inner.pop(f"block_{i}") for i in range(depth)]
    inner["blocks"] = {"block": jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *blocks)}
    return {**params, "params": inner}


class DiT(ConditionedModel, nn.Module):
    """Diffusion Transformer: ``(x (B, H, W, C), t, y) -> (B, H, W, C)``; ``H, W`` divisible by ``patch_size``.

    Attributes:
      patch_size: side of the square patches.
      hidden_size: token width (divisible by 4 and by ``num_heads``).
      depth: number of transformer blocks.
      num_heads: attention heads.
      mlp_ratio: hidden width of the block MLP relative to ``hidden_size``.
      num_classes: ``K`` for a class-conditional model (``K`` = null label; ``y=None`` means null
        label), or ``None`` for an unconditional one.
        Labels outside ``0..K`` raise ``ValueError`` outside ``jit`` and give NaN outputs for
        those examples under ``jit`` (see :class:`~jflow.models.ClassEmbedding`).
      dropout: attention and MLP dropout, only with ``train=True`` (rng ``"dropout"``).
      time_embedding, learnable_frequencies, time_features: see
        :class:`jflow.models.embeddings.TimeEmbedding`.
      zero_init_output: zero the final linear map so a fresh model predicts exactly zero.
      scan_blocks: run the blocks as one ``nn.scan`` (stacked parameters; see the module docstring).
      remat: ``None`` or a policy name in :data:`REMAT_POLICIES`: recompute each block's
        activations in the backward pass, keeping what the policy saves.
      dtype: compute dtype; ``param_dtype`` float32; output in ``x``'s dtype.
    """

    patch_size: int = 2
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    num_classes: Optional[int] = None
    dropout: float = 0.0
    activation: Activation = "silu"
    time_embedding: str = "sinusoidal"
    learnable_frequencies: bool = False
    time_features: int = 256
    zero_init_output: bool = False
    scan_blocks: bool = False
    remat: Optional[str] = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, t, y=None, *, train: bool = False):
        """Evaluate ``u_t(x | y)``: ``x`` (B, H, W, C), ``t`` scalar or (B,) in [0, 1] (0 noise, 1 data), ``y`` (B,) or None."""
        for value, name in [
            (self.patch_size, "patch_size"),
            (self.hidden_size, "hidden_size"),
            (self.depth, "depth"),
            (self.num_heads, "num_heads"),
        ]:
            check_positive_int(value, name)
        check_dropout(self.dropout)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}")
        x, t, y = prepare_inputs(
            x, t, y, num_classes=self.num_classes, event_ndim=3, model="DiT", event_desc="H, W, C"
        )
        _, height, width, channels = x.shape
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(
                f"DiT: image size {height}x{width} is not divisible by patch_size={p}; "
                "pad or crop the images, or change patch_size"
            )
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        act = get_activation(self.activation)
        pos = sincos_position_embedding(height // p, width // p, self.hidden_size)
        c = self.condition_embedding(self.hidden_size, time_features=self.time_features)(t, y)
        h = nn.Dense(self.hidden_size, **kw, name="patch_embed")(patchify(x, p).astype(self.dtype))
        h = h + jnp.asarray(pos, dtype=h.dtype)[None]
        h = self._blocks(h, c, train)
        mod = nn.Dense(2 * self.hidden_size, kernel_init=nn.initializers.zeros, **kw, name="final_adaln")(act(c))
        shift, scale = jnp.split(mod, 2, axis=-1)
        h = nn.LayerNorm(use_scale=False, use_bias=False, epsilon=1e-6, **kw, name="final_norm")(h)
        h = nn.Dense(
            p * p * channels, kernel_init=output_dense_init(self.zero_init_output), **kw, name="final_linear"
        )(_modulate(h, shift, scale))
        return unpatchify(h, p, height, width).astype(x.dtype)

    def _blocks(self, h, c, train: bool):
        """The ``depth`` transformer blocks, unrolled (``block_i``) or as one scan (``blocks``)."""
        # same shape as ConditionEmbedding's call of TimeEmbedding: each passes on its own attributes by keyword
        block = functools.partial(
            _block_class(self.remat),
            self.hidden_size,
            self.num_heads,
            mlp_ratio=self.mlp_ratio,
            dropout=self.dropout,
            activation=self.activation,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        if not self.scan_blocks:
            for i in range(self.depth):
                h = block(name=f"block_{i}")(h, c, train)
            return h
        stack = nn.scan(
            _ScannedBlock,
            variable_axes={"params": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=nn.broadcast,
            length=self.depth,
        )
        h, _ = stack(block, train, name="blocks")(h, c)
        return h
