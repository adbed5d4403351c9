"""PyTorch port of ``jflow.models.UNet`` (NCHW), for the peer benchmark's U-Net case.

Same blocks, channels, skip connections and attention levels as the flax model, under
mirrored names, so :func:`benchmarks.peers.twins.copy_params` loads the flax weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.peers.twins import TorchCondEmbedding


class TorchResBlock(torch.nn.Module):
    """Twin of ``jflow.models.unet.ResBlock`` (NCHW)."""

    def __init__(self, cin, cout, groups, cond_dim):
        super().__init__()
        self.norm_0 = torch.nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv_0 = torch.nn.Conv2d(cin, cout, 3, padding=1)
        self.cond = torch.nn.Linear(cond_dim, 2 * cout)
        self.norm_1 = torch.nn.GroupNorm(groups, cout, eps=1e-6)
        self.conv_1 = torch.nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = torch.nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, h, c):
        z = self.conv_0(F.silu(self.norm_0(h)))
        scale, shift = self.cond(F.silu(c))[:, :, None, None].chunk(2, dim=1)
        z = self.conv_1(F.silu(self.norm_1(z) * (1.0 + scale) + shift))
        return (h if self.skip is None else self.skip(h)) + z


class TorchAttention(torch.nn.Module):
    """Twin of ``jflow.models.unet.AttentionBlock``: ``h + MHSA(GN(h))`` (``scaled_dot_product_attention``)."""

    def __init__(self, ch, heads, groups):
        super().__init__()
        self.heads = heads
        self.norm = torch.nn.GroupNorm(groups, ch, eps=1e-6)
        self.qkv = torch.nn.Linear(ch, 3 * ch)
        self.out = torch.nn.Linear(ch, ch)

    def forward(self, h):
        b, ch, height, width = h.shape
        z = self.norm(h).flatten(2).transpose(1, 2)  # (B, N, C)
        qkv = self.qkv(z).view(b, height * width, 3, self.heads, ch // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, N, hd)
        o = self.out(o.transpose(1, 2).reshape(b, height * width, ch))
        return h + o.transpose(1, 2).reshape(b, ch, height, width)


class TorchUNet(torch.nn.Module):
    """PyTorch port of ``jflow.models.UNet`` (same blocks, channels, skips; NCHW layout)."""

    def __init__(self, in_ch, base, mults, num_res_blocks, attention_levels, heads, groups, num_classes):
        super().__init__()
        cond_dim = 4 * base
        self.cond = TorchCondEmbedding(cond_dim, base, num_classes)
        self.conv_in = torch.nn.Conv2d(in_ch, base, 3, padding=1)
        self.m = torch.nn.ModuleDict()
        self.attention_levels = set(attention_levels)
        self.mults, self.num_res_blocks = tuple(mults), num_res_blocks
        ch, skip_ch = base, [base]
        last = len(mults) - 1
        for level, mult in enumerate(mults):
            for i in range(num_res_blocks):
                self.m[f"down_{level}_res_{i}"] = TorchResBlock(ch, base * mult, groups, cond_dim)
                ch = base * mult
                if level in self.attention_levels:
                    self.m[f"down_{level}_attn_{i}"] = TorchAttention(ch, heads, groups)
                skip_ch.append(ch)
            if level != last:
                self.m[f"down_{level}_sample"] = torch.nn.Conv2d(ch, ch, 3, stride=2, padding=1)
                skip_ch.append(ch)
        self.m["mid_res_0"] = TorchResBlock(ch, ch, groups, cond_dim)
        self.m["mid_attn"] = TorchAttention(ch, heads, groups)
        self.m["mid_res_1"] = TorchResBlock(ch, ch, groups, cond_dim)
        for level in reversed(range(len(mults))):
            out = base * mults[level]
            for i in range(num_res_blocks + 1):
                self.m[f"up_{level}_res_{i}"] = TorchResBlock(ch + skip_ch.pop(), out, groups, cond_dim)
                ch = out
                if level in self.attention_levels:
                    self.m[f"up_{level}_attn_{i}"] = TorchAttention(ch, heads, groups)
            if level != 0:
                self.m[f"up_{level}_sample"] = torch.nn.Conv2d(ch, ch, 3, padding=1)
        self.norm_out = torch.nn.GroupNorm(groups, ch, eps=1e-6)
        self.conv_out = torch.nn.Conv2d(ch, in_ch, 3, padding=1)

    def forward(self, x, t, y):
        m = self.m
        c = self.cond(t.reshape(-1).expand(x.shape[0]), y)
        h = self.conv_in(x)
        skips = [h]
        last = len(self.mults) - 1
        for level in range(len(self.mults)):
            for i in range(self.num_res_blocks):
                h = m[f"down_{level}_res_{i}"](h, c)
                if level in self.attention_levels:
                    h = m[f"down_{level}_attn_{i}"](h)
                skips.append(h)
            if level != last:
                h = m[f"down_{level}_sample"](h)
                skips.append(h)
        h = m["mid_res_1"](m["mid_attn"](m["mid_res_0"](h, c)), c)
        for level in reversed(range(len(self.mults))):
            for i in range(self.num_res_blocks + 1):
                h = m[f"up_{level}_res_{i}"](torch.cat([h, skips.pop()], dim=1), c)
                if level in self.attention_levels:
                    h = m[f"up_{level}_attn_{i}"](h)
            if level != 0:
                h = m[f"up_{level}_sample"](F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))

