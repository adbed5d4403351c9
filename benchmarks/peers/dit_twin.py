"""PyTorch port of ``jflow.models.DiT`` (adaLN-Zero transformer on patches), for the peer benchmark's DiT case.

Same layers as the flax model under mirrored names (``cond``, ``patch_embed``, ``block_i``
with ``adaln``, ``attn.qkv``, ``attn.out``, ``mlp_0``, ``mlp_1``, then ``final_adaln`` and
``final_linear``), so :func:`benchmarks.peers.twins.copy_params` loads the flax weights. The
images are NCHW (torch's layout); patches are flattened in the flax model's ``(p, p, C)``
order, so the patch embedding is a ``Linear`` over flattened patches (the same product as
the DiT paper's stride-``p`` convolution, with the flax weight layout). The fixed position
embedding is the flax model's own numpy table (a constant, no parameters).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.peers.twins import TorchCondEmbedding
from jflow.models.dit import sincos_position_embedding


def _modulate(h, shift, scale):
    return h * (1.0 + scale[:, None, :]) + shift[:, None, :]


def _norm(h):
    """LayerNorm without scale or bias (the flax model's ``use_scale=False, use_bias=False``)."""
    return F.layer_norm(h, h.shape[-1:], eps=1e-6)


class TorchDiTAttention(torch.nn.Module):
    """Twin of ``jflow.models.layers.MultiHeadSelfAttention`` (``scaled_dot_product_attention``)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.out = torch.nn.Linear(dim, dim)

    def forward(self, h):
        b, n, dim = h.shape
        qkv = self.qkv(h).view(b, n, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, N, hd)
        return self.out(o.transpose(1, 2).reshape(b, n, dim))


class TorchDiTBlock(torch.nn.Module):
    """Twin of ``jflow.models.dit.DiTBlock`` (adaLN-Zero; SiLU on the conditioning, tanh GELU in the MLP)."""

    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        self.adaln = torch.nn.Linear(dim, 6 * dim)
        self.attn = TorchDiTAttention(dim, heads)
        self.mlp_0 = torch.nn.Linear(dim, int(dim * mlp_ratio))
        self.mlp_1 = torch.nn.Linear(int(dim * mlp_ratio), dim)

    def forward(self, h, c):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaln(F.silu(c)).chunk(6, dim=-1)
        h = h + gate1[:, None, :] * self.attn(_modulate(_norm(h), shift1, scale1))
        z = self.mlp_1(F.gelu(self.mlp_0(_modulate(_norm(h), shift2, scale2)), approximate="tanh"))
        return h + gate2[:, None, :] * z


class TorchDiT(torch.nn.Module):
    """PyTorch port of ``jflow.models.DiT`` (unscanned blocks, no dropout); ``(x (B, C, H, W), t, y)``."""

    def __init__(self, in_ch, height, width, patch_size, hidden_size, depth, num_heads,
                 mlp_ratio=4.0, num_classes=None, time_features=256):
        super().__init__()
        p = self.patch_size = patch_size
        self.cond = TorchCondEmbedding(hidden_size, time_features, num_classes)
        self.patch_embed = torch.nn.Linear(p * p * in_ch, hidden_size)
        pos = sincos_position_embedding(height // p, width // p, hidden_size)
        self.register_buffer("pos", torch.from_numpy(pos)[None], persistent=False)
        self.blocks = torch.nn.ModuleList(TorchDiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.final_adaln = torch.nn.Linear(hidden_size, 2 * hidden_size)
        self.final_linear = torch.nn.Linear(hidden_size, p * p * in_ch)

    def forward(self, x, t, y=None):
        b, ch, height, width = x.shape
        p, gh, gw = self.patch_size, height // self.patch_size, width // self.patch_size
        c = self.cond(t.reshape(-1).expand(b), y)
        # NCHW -> (B, gh * gw, p * p * C), each patch flattened in (row, column, channel) order
        tokens = x.reshape(b, ch, gh, p, gw, p).permute(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, p * p * ch)
        h = self.patch_embed(tokens) + self.pos
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_adaln(F.silu(c)).chunk(2, dim=-1)
        out = self.final_linear(_modulate(_norm(h), shift, scale))
        return out.reshape(b, gh, gw, p, p, ch).permute(0, 5, 1, 3, 2, 4).reshape(b, ch, height, width)
