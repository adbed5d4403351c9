r"""U-Net for images ``(B, H, W, C)``, conditioned on flow time and class in every residual block.

The lectures' convolutional architecture ("encoder: channels increase while width and height
decrease; decoder: the reverse; re-used for diffusion by adding time-dependent
convolutions"), in the DDPM / ADM form used by the flow matching papers on CIFAR-10:

- encoder level ``i`` (resolution ``H / 2^i``) has ``num_res_blocks`` residual blocks with
  ``base_channels * channel_mults[i]`` channels, then a stride-2 convolution (except the last);
- middle: residual block, self-attention, residual block;
- decoder: mirror image with ``num_res_blocks + 1`` blocks per level fed by skip connections
  (concatenation), nearest-neighbour upsampling + convolution;
- residual block (GroupNorm, scale/shift conditioning as in ADM's "scale-shift norm"):

  .. math:: z = \mathrm{Conv}(\phi(\mathrm{GN}(h))),\quad
            z = \mathrm{Conv}_0\big(\mathrm{drop}(\phi((1 + \gamma(c)) \odot \mathrm{GN}(z) + \beta(c)))\big),\quad
            h \leftarrow \mathrm{skip}(h) + z,

  with ``c = TimeEmb(t) + ClassEmb(y)``;
- self-attention (multi-head, over the ``H W`` positions) after each residual block of the
  levels in ``attention_levels``.

The last convolution of each residual branch and the output projection of each attention
block start at zero (ADM practice): a fresh U-Net is a stack of identity blocks.
``zero_init_output`` also zeroes the final convolution, so a fresh model predicts 0.
"""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jflow._checks import check_positive_int
from jflow.models.embeddings import ConditionedModel
# the same names as dit.py imports: both models build on the same layer helpers
from jflow.models.layers import (
    Activation,
    Dtype,
    GroupNorm,
    MultiHeadSelfAttention,
    check_dropout,
    get_activation,
    output_dense_init,
    prepare_inputs,
)

__all__ = ["UNet", "ResBlock", "AttentionBlock"]

_PAD = ((1, 1), (1, 1))


class ResBlock(nn.Module):
    """Residual block with GroupNorm and time/class scale-shift conditioning; ``(B, H, W, C_in) -> (B, H, W, out_channels)``."""

    # same shape as mlp.FiLMBlock's attributes and first lines: flax modules declare their attributes
    # field by field; a shared base would hide them from the reader
    out_channels: int
    norm_groups: int
    dropout: float = 0.0
    activation: Activation = "silu"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h, c, *, train: bool = False):
        act = get_activation(self.activation)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        z = act(GroupNorm(self.norm_groups, **kw, name="norm_0")(h))
        z = nn.Conv(self.out_channels, (3, 3), padding=_PAD, **kw, name="conv_0")(z)
        cond = nn.Dense(2 * self.out_channels, **kw, name="cond")(act(c))
        scale, shift = jnp.split(cond[:, None, None, :], 2, axis=-1)
        z = GroupNorm(self.norm_groups, **kw, name="norm_1")(z) * (1.0 + scale) + shift
        z = nn.Dropout(self.dropout)(act(z), deterministic=not train)
        z = nn.Conv(
            self.out_channels, (3, 3), padding=_PAD, kernel_init=nn.initializers.zeros, **kw, name="conv_1"
        )(z)
        if h.shape[-1] != self.out_channels:
            h = nn.Conv(self.out_channels, (1, 1), **kw, name="skip")(h)
        return h + z


class AttentionBlock(nn.Module):
    """``h + MHSA(GN(h))`` over the ``H * W`` positions of ``(B, H, W, C)``."""

    num_heads: int
    norm_groups: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h):
        b, height, width, ch = h.shape
        z = GroupNorm(self.norm_groups, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(h)
        z = MultiHeadSelfAttention(
            self.num_heads, zero_init_output=True, dtype=self.dtype, param_dtype=self.param_dtype, name="attn"
        )(z.reshape(b, height * width, ch))
        return h + z.reshape(b, height, width, ch)


class UNet(ConditionedModel, nn.Module):
    """Time- and class-conditioned U-Net: ``(x (B, H, W, C), t, y) -> (B, H, W, C)``.

    ``H`` and ``W`` must be divisible by ``downsampling_factor = 2 ** (len(channel_mults) - 1)``.

    Attributes:
      base_channels: channels of level 0; level ``i`` has ``base_channels * channel_mults[i]``.
      channel_mults: channel multiplier per resolution level.
      num_res_blocks: residual blocks per encoder level (the decoder has one more).
      attention_levels: levels (0 = full resolution) with self-attention after each block.
      mid_attention: self-attention in the middle block.
      num_heads: attention heads (must divide the channels of every attended level).
      norm_groups: GroupNorm groups (must divide every channel count).
      num_classes: ``K`` for a class-conditional model (``K`` = null label; ``y=None`` means null
        label), or ``None`` for an unconditional one.
        Labels outside ``0..K`` raise ``ValueError`` outside ``jit`` and give NaN outputs for
        those examples under ``jit`` (see :class:`~jflow.models.ClassEmbedding`).
      dropout: dropout rate in the residual blocks, only with ``train=True`` (rng ``"dropout"``).
      time_embedding, learnable_frequencies: see :class:`jflow.models.embeddings.TimeEmbedding`.
      zero_init_output: zero the final convolution so a fresh model predicts exactly zero.
      dtype: compute dtype; ``param_dtype`` float32; output in ``x``'s dtype.
    """

    # same shape as DiT's and MLP's attributes (ConditionedModel reads the conditioning ones): flax
    # modules declare their attributes field by field; a shared base would hide them from the reader
    base_channels: int = 64
    channel_mults: Sequence[int] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_levels: Sequence[int] = ()
    mid_attention: bool = True
    num_heads: int = 4
    norm_groups: int = 32
    num_classes: Optional[int] = None
    dropout: float = 0.0
    activation: Activation = "silu"
    time_embedding: str = "sinusoidal"
    learnable_frequencies: bool = False
    zero_init_output: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def downsampling_factor(self) -> int:
        """``2 ** (len(channel_mults) - 1)``: ``H`` and ``W`` must be multiples of it."""
        return 2 ** (len(self.channel_mults) - 1)

    def _check_config(self):
        check_positive_int(self.base_channels, "base_channels")
        check_positive_int(self.num_res_blocks, "num_res_blocks")
        check_positive_int(self.num_heads, "num_heads")
        check_positive_int(self.norm_groups, "norm_groups")
        check_dropout(self.dropout)
        if len(self.channel_mults) == 0:
            raise ValueError("channel_mults must name at least one level, e.g. (1, 2, 2)")
        for m in self.channel_mults:
            check_positive_int(m, "each channel multiplier")
        levels = range(len(self.channel_mults))
        bad = [lv for lv in self.attention_levels if lv not in levels]
        if bad:
            raise ValueError(
                f"attention_levels {tuple(self.attention_levels)} must be level indices in "
                f"[0, {len(self.channel_mults) - 1}] (level i has resolution H / 2**i)"
            )
        for ch in {self.base_channels * m for m in self.channel_mults}:
            if ch % self.norm_groups:
                raise ValueError(
                    f"norm_groups={self.norm_groups} must divide every channel count; {ch} is not divisible"
                )
        attended = [self.base_channels * self.channel_mults[lv] for lv in self.attention_levels]
        if self.mid_attention:
            attended.append(self.base_channels * self.channel_mults[-1])
        for ch in attended:
            if ch % self.num_heads:
                raise ValueError(f"num_heads={self.num_heads} must divide the attended channel count {ch}")

    @nn.compact
    def __call__(self, x, t, y=None, *, train: bool = False):
        """Evaluate ``u_t(x | y)``: ``x`` (B, H, W, C), ``t`` scalar or (B,) in [0, 1] (0 noise, 1 data), ``y`` (B,) or None."""
        self._check_config()
        x, t, y = prepare_inputs(
            x, t, y, num_classes=self.num_classes, event_ndim=3, model="UNet", event_desc="H, W, C"
        )
        factor = self.downsampling_factor
        height, width = x.shape[1:3]
        if height % factor or width % factor:
            raise ValueError(
                f"UNet: image size {height}x{width} is not divisible by the downsampling factor {factor} "
                f"(2 ** (len(channel_mults) - 1) with channel_mults={tuple(self.channel_mults)}); "
                "pad or crop the images, or use fewer levels"
            )
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        act = get_activation(self.activation)
        block_kw = dict(norm_groups=self.norm_groups, dropout=self.dropout, activation=self.activation, **kw)
        attn_kw = dict(num_heads=self.num_heads, norm_groups=self.norm_groups, **kw)
        c = self.condition_embedding(4 * self.base_channels, time_features=self.base_channels)(t, y)

        h = nn.Conv(self.base_channels, (3, 3), padding=_PAD, **kw, name="conv_in")(x)
        skips = [h]
        last = len(self.channel_mults) - 1
        for level, mult in enumerate(self.channel_mults):
            for i in range(self.num_res_blocks):
                h = ResBlock(self.base_channels * mult, **block_kw, name=f"down_{level}_res_{i}")(h, c, train=train)
                if level in self.attention_levels:
                    h = AttentionBlock(**attn_kw, name=f"down_{level}_attn_{i}")(h)
                skips.append(h)
            if level != last:
                h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2), padding=_PAD, **kw, name=f"down_{level}_sample")(h)
                skips.append(h)

        mid_channels = h.shape[-1]
        h = ResBlock(mid_channels, **block_kw, name="mid_res_0")(h, c, train=train)
        if self.mid_attention:
            h = AttentionBlock(**attn_kw, name="mid_attn")(h)
        h = ResBlock(mid_channels, **block_kw, name="mid_res_1")(h, c, train=train)

        for level in reversed(range(len(self.channel_mults))):
            out_channels = self.base_channels * self.channel_mults[level]
            for i in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = ResBlock(out_channels, **block_kw, name=f"up_{level}_res_{i}")(h, c, train=train)
                if level in self.attention_levels:
                    h = AttentionBlock(**attn_kw, name=f"up_{level}_attn_{i}")(h)
            if level != 0:
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
                h = nn.Conv(out_channels, (3, 3), padding=_PAD, **kw, name=f"up_{level}_sample")(h)

        h = act(GroupNorm(self.norm_groups, **kw, name="norm_out")(h))
        out = nn.Conv(
            x.shape[-1],
            (3, 3),
            padding=_PAD,
            kernel_init=output_dense_init(self.zero_init_output),
            **kw,
            name="conv_out",
        )(h)
        return out.astype(x.dtype)
