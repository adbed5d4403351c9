"""PyTorch twins of the flax models the peer benchmark times, and the copy of flax weights into them.

Each twin has the layers of its flax model in the same order and under mirrored names, so
:func:`copy_params` maps a flax parameter tree onto it leaf by leaf and
:func:`check_same_outputs` proves that the same weights give the same outputs.
Imports torch: only the peer runners import this module.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

DIM = 2


class TorchPlainMLP(torch.nn.Module):
    """Twin of ``jflow.models.PlainMLP`` (the labs' MLP; same layers, same order of the inputs)."""

    def __init__(self, width: int, depth: int = 4, dim: int = DIM):
        super().__init__()
        sizes = [dim + 1] + [width] * depth
        self.hidden = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.output = torch.nn.Linear(width, dim)

    def forward(self, x, t):
        t = t.reshape(-1, 1).to(x.dtype).expand(x.shape[0], 1)
        h = torch.cat([x, t], dim=-1)
        for layer in self.hidden:
            h = F.silu(layer(h))
        return self.output(h)


def _sinusoidal(t, dim, scale=1000.0, max_period=10_000.0):
    half = dim // 2
    freqs = torch.exp(-np.log(max_period) * torch.arange(half, dtype=t.dtype) / half)
    args = scale * t[:, None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TorchCondEmbedding(torch.nn.Module):
    """Twin of ``jflow.models.ConditionEmbedding``: sinusoidal features -> Dense -> SiLU -> Dense (+ labels)."""

    def __init__(self, dim, features, num_classes=None):
        super().__init__()
        self.features = features
        self.dense_0 = torch.nn.Linear(features, dim)
        self.dense_1 = torch.nn.Linear(dim, dim)
        self.table = torch.nn.Embedding(num_classes + 1, dim) if num_classes else None

    def forward(self, t, y=None):
        c = self.dense_1(F.silu(self.dense_0(_sinusoidal(t, self.features))))
        if self.table is not None:
            c = c + self.table(y)
        return c


class TorchFiLMBlock(torch.nn.Module):
    """Twin of ``jflow.models.mlp.FiLMBlock``."""

    def __init__(self, width):
        super().__init__()
        self.norm = torch.nn.LayerNorm(width, eps=1e-6)
        self.dense_0 = torch.nn.Linear(width, width)
        self.film = torch.nn.Linear(width, 2 * width)
        self.dense_1 = torch.nn.Linear(width, width)

    def forward(self, h, c):
        z = self.dense_0(F.silu(self.norm(h)))
        scale, shift = self.film(F.silu(c)).chunk(2, dim=-1)
        return h + self.dense_1(F.silu(z * (1.0 + scale) + shift))


class TorchFiLMMLP(torch.nn.Module):
    """Twin of ``jflow.models.MLP(width, depth, time_features)`` (unconditional, no dropout)."""

    def __init__(self, width, depth=4, time_features=64, dim=DIM):
        super().__init__()
        self.cond = TorchCondEmbedding(width, time_features)
        self.input = torch.nn.Linear(dim, width)
        self.blocks = torch.nn.ModuleList(TorchFiLMBlock(width) for _ in range(depth))
        self.norm_out = torch.nn.LayerNorm(width, eps=1e-6)
        self.output = torch.nn.Linear(width, dim)

    def forward(self, x, t):
        t = t.reshape(-1).to(x.dtype).expand(x.shape[0])
        c = self.cond(t)
        h = self.input(x)
        for block in self.blocks:
            h = block(h, c)
        return self.output(F.silu(self.norm_out(h)))


def _child(mod: torch.nn.Module, name: str) -> torch.nn.Module:
    """The torch submodule that mirrors the flax submodule ``name``."""
    if isinstance(getattr(mod, "m", None), torch.nn.ModuleDict) and name in mod.m:
        return mod.m[name]
    for prefix, attr in (("hidden_", "hidden"), ("block_", "blocks")):
        if name.startswith(prefix) and hasattr(mod, attr):
            return getattr(mod, attr)[int(name[len(prefix):])]
    return getattr(mod, name)


def _copy_leaf(mod: torch.nn.Module, name: str, arr: np.ndarray) -> None:
    if name == "kernel" and isinstance(mod, torch.nn.Conv2d):  # HWIO -> OIHW
        value = arr.transpose(3, 2, 0, 1)
    elif name == "kernel" and isinstance(mod, torch.nn.Linear):
        # Dense (in, out); DenseGeneral qkv (C, 3, heads, hd); DenseGeneral out (heads, hd, C)
        value = (arr.reshape(-1, arr.shape[-1]) if arr.ndim == 3 else arr.reshape(arr.shape[0], -1)).T
    elif name in ("scale", "embedding"):
        value = arr
    elif name == "bias":
        value = arr.reshape(-1)
    else:
        raise ValueError(f"cannot map flax leaf {name!r} {arr.shape} onto {type(mod).__name__}")
    target = mod.bias if name == "bias" else mod.weight
    if tuple(target.shape) != value.shape:
        raise ValueError(f"shape mismatch for {type(mod).__name__}.{name}: {tuple(target.shape)} vs {value.shape}")
    with torch.no_grad():
        target.copy_(torch.from_numpy(np.array(value, np.float32)))


def _flax_to_torch(tree, mod: torch.nn.Module) -> None:
    """Copy a (re-mapped) flax parameter tree into the torch twin ``mod``; names mirror each other."""
    for name, sub in tree.items():
        if isinstance(sub, dict):
            _flax_to_torch(sub, _child(mod, name))
        else:
            _copy_leaf(mod, name, np.asarray(sub))


def _map_attention(tree):
    """flax AttentionBlock = {norm, attn: {qkv, out}} -> TorchAttention = {norm, qkv, out}."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and "attn" in v and "norm" in v:
            out[k] = {"norm": v["norm"], "qkv": v["attn"]["qkv"], "out": v["attn"]["out"]}
        elif isinstance(v, dict):
            out[k] = _map_attention(v)
        else:
            out[k] = v
    return out


def _map_cond(tree):
    """flax ConditionEmbedding = {time: {dense_0, dense_1}, label: {table}} -> TorchCondEmbedding."""
    out = {}
    for k, v in tree.items():
        if k == "cond" and isinstance(v, dict) and "time" in v:
            flat = dict(v["time"])
            if "label" in v:
                flat["table"] = v["label"]["table"]
            out[k] = flat
        elif isinstance(v, dict):
            out[k] = _map_cond(v)
        else:
            out[k] = v
    return out


def copy_params(flax_params, module: torch.nn.Module) -> None:
    """Load the flax parameters ``{"params": ...}`` into the torch twin ``module``."""
    tree = jax.tree.map(np.asarray, flax_params)
    _flax_to_torch(_map_cond(_map_attention(dict(tree["params"]))), module)


def check_same_outputs(flax_apply, params, torch_model, x, t, y=None, what="model") -> float:
    """Relative max difference of the twins' outputs on ``(x, t, y)``; ``AssertionError`` above 1e-3."""
    ref = np.asarray(flax_apply(params, jnp.asarray(x), jnp.asarray(t), None if y is None else jnp.asarray(y)))
    with torch.no_grad():
        tx = torch.from_numpy(np.asarray(x))
        tt = torch.from_numpy(np.asarray(t))
        out = torch_model(tx, tt) if y is None else torch_model(tx, tt, torch.from_numpy(np.asarray(y)).long())
    out = out.numpy()
    if out.shape != ref.shape:  # torch U-Net is NCHW
        out = out.transpose(0, 2, 3, 1)
    err = float(np.max(np.abs(out - ref)) / (np.max(np.abs(ref)) + 1e-12))
    if not err < 1e-3:
        raise AssertionError(f"{what}: the flax and torch twins disagree (relative error {err:.2e})")
    return err

