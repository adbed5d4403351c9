"""jflow against the PyTorch flow matching libraries: ``flow_matching`` (Meta) and ``torchcfm``.

Usage (from the repository root, in an environment with the ``bench`` extra)::

    python benchmarks/bench_peers.py                  # full run, writes benchmarks/results/peers.md
    python benchmarks/bench_peers.py --quick          # small sizes, few repeats (a smoke run)
    python benchmarks/bench_peers.py --parts train sample --repeats 9 --out /tmp/peers.md
    python benchmarks/bench_peers.py --xla-flags "--xla_cpu_use_thunk_runtime=false"

Everything runs in one process on the same machine, float32, and the measurements of jflow
and of the peers are *interleaved* (repeat ``r`` times every runner once, alternating the
order), so a change of machine load hits all runners alike. Each cell is the median over
repeats of a throughput; the spread is the interquartile range (IQR). A ratio ``jflow /
peer`` is the median over repeats of the per-repeat ratio of the paired measurements.

Parts (``--parts``):

``train``
    Flow matching training steps per second (CondOT path, velocity target, Adam 1e-3, loss
    ``mean_i ||u(x_t, t) - (z - eps)||^2``) on 2-D data. The model is the labs' MLP: ``t``
    concatenated to ``x``, ``depth`` hidden layers of ``width`` with SiLU, a linear output;
    defined identically in flax (:class:`LabMLP`) and torch (:class:`TorchLabMLP`); the same
    weights give the same outputs (checked). jflow runs ``jflow.losses.make_loss`` +
    ``jflow.train.make_train_step`` (one update per call) and ``make_fused_train_step`` (k
    updates per call, ``lax.scan``). flow_matching: ``AffineProbPath(CondOTScheduler())``;
    torchcfm: ``ConditionalFlowMatcher(sigma=0)``; both in a plain PyTorch loop
    (``zero_grad``, ``backward``, ``torch.optim.Adam.step``). Sizes 4 x 64 (the labs') at
    batch 256 and 1000, and 4 x 512 at batch 4096.
``film``
    The same, with jflow's own model ``jflow.models.MLP`` (residual FiLM blocks, sinusoidal
    time embedding) against a torch twin written here (:class:`TorchFiLMMLP`, same layers,
    weights copied and outputs checked).
``sample``
    Sampling throughput (points per second) of 100 Euler steps and 100 midpoint steps (200
    evaluations) on the 4 x 64 lab MLP with random weights: ``jflow.integrators.odeint``
    jitted, against flow_matching's ``ODESolver.sample(step_size=0.01)`` and torchdiffeq's
    ``odeint`` on a 101-point grid (torchcfm's examples sample with torchdyn or torchdiffeq;
    torchdyn does not import next to a CPU build of torch, see the README). The number of
    field evaluations is counted and the final points are compared.
``unet``
    One training step of a U-Net on 28 x 28 x 1 images: ``jflow.models.UNet`` with the
    ``unet_mnist`` configuration (dropout 0) against :class:`TorchUNet`, a PyTorch port
    with the same blocks, channels and parameter count (weights copied, outputs checked),
    trained with flow_matching's path.

Also reported: jflow's first-call time (trace + compile) apart from steady state, the FLOPs
of one step from XLA's cost analysis, and the utilisation FLOPs/s over the float32 matmul
peak of this machine measured in the same run (a jitted ``jnp.dot``).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes and 3 repeats: a smoke run")
    p.add_argument("--out", default=None, help="Markdown file for the table (default benchmarks/results/peers.md)")
    p.add_argument("--parts", nargs="+", default=["train", "film", "sample", "unet"],
                   choices=["train", "film", "sample", "unet"])
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per runner (default 7, quick 3)")
    p.add_argument("--seconds", type=float, default=None,
                   help="target duration of one timed repeat of one runner (default 0.6, quick 0.3)")
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="torch intra-op thread counts to try; each peer runner uses the fastest on its own "
                        "work (default: 1 and the number of CPU cores)")
    p.add_argument("--sample-points", type=int, nargs="+", default=None,
                   help="numbers of points of the sampling part (default 1000 100000, quick 1000 10000)")
    p.add_argument("--xla-flags", default="", help="appended to XLA_FLAGS before JAX starts")
    p.add_argument("--malloc", choices=["system", "retain"], default="system",
                   help="'retain': rerun this process with glibc told to keep freed memory "
                        f"({' '.join(f'{k}={v}' for k, v in RETAIN_MALLOC.items())}), so that XLA's "
                        "per-call temporary buffers are not page-faulted in again on every call; "
                        "jflow and the peers run under the same setting")
    return p.parse_args(argv)


# glibc serves blocks above 32 MB (and every block of a thread's arena that does not fit its
# 64 MB heap) with a fresh mmap and unmaps them on free; these settings keep such memory in
# one heap instead. Read by glibc at process start only, hence the re-exec.
RETAIN_MALLOC = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


if __name__ == "__main__":
    _ARGS = _parse_args()
    if _ARGS.malloc == "retain" and any(os.environ.get(k) != v for k, v in RETAIN_MALLOC.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **RETAIN_MALLOC})
    if _ARGS.xla_flags:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _ARGS.xla_flags).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchdiffeq  # noqa: E402
from flow_matching.path import AffineProbPath  # noqa: E402
from flow_matching.path.scheduler import CondOTScheduler  # noqa: E402
from flow_matching.solver import ODESolver  # noqa: E402
from flow_matching.utils import ModelWrapper  # noqa: E402
from torchcfm.conditional_flow_matching import ConditionalFlowMatcher  # noqa: E402

import jflow.train as jt  # noqa: E402
from lab_mlp import LabMLP  # noqa: E402
from jflow.integrators import odeint, uniform_grid  # noqa: E402
from jflow.losses import make_loss  # noqa: E402
from jflow.models import MLP, UNet, count_params, get_config  # noqa: E402
from jflow.schedulers import LinearScheduler  # noqa: E402

LR = 1e-3
DIM = 2


# ======================================================================================
# Models: flax and torch twins
# ======================================================================================


class TorchLabMLP(torch.nn.Module):
    """Torch twin of :class:`LabMLP` (same layers, same order of the inputs)."""

    def __init__(self, width: int, depth: int = 4, dim: int = DIM):
        super().__init__()
        sizes = [dim + 1] + [width] * depth
        self.hidden = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = torch.nn.Linear(width, dim)

    def forward(self, x, t):
        t = t.reshape(-1, 1).to(x.dtype).expand(x.shape[0], 1)
        h = torch.cat([x, t], dim=-1)
        for layer in self.hidden:
            h = F.silu(layer(h))
        return self.out(h)


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


def copy_params(flax_params, module):
    tree = jax.tree.map(np.asarray, flax_params)
    _flax_to_torch(_map_cond(_map_attention(dict(tree["params"]))), module)


# ======================================================================================
# Timing
# ======================================================================================


class Runner:
    """A named callable doing ``units`` units of work (steps, points) per call."""

    def __init__(self, name, lib, fn, units, unit):
        self.name, self.lib, self.fn, self.units, self.unit = name, lib, fn, units, unit
        self.rates = []
        self.threads = None  # torch intra-op threads of a peer runner (choose_threads)


def _calibrate(fn, seconds):
    """Number of inner repetitions so that one timed call of ``fn`` lasts about ``seconds``."""
    t0 = time.perf_counter()
    fn(1)
    dt = max(time.perf_counter() - t0, 1e-6)
    return max(1, int(round(seconds / dt)))


def measure(runners, repeats):
    """Interleave: each repeat times every runner once, alternating the order."""
    for r in range(repeats):
        order = runners if r % 2 == 0 else runners[::-1]
        for run in order:
            if run.threads is not None:
                torch.set_num_threads(run.threads)
            t0 = time.perf_counter()
            run.fn()
            run.rates.append(run.units / (time.perf_counter() - t0))


def _quartiles(xs):
    q = np.percentile(np.asarray(xs), [25, 50, 75])
    return float(q[0]), float(q[1]), float(q[2])


def minor_faults(fn) -> float:
    """Minor page faults of this process while ``fn()`` runs: first touches of freshly mapped
    memory, e.g. XLA's temporary buffers when the allocator maps them anew for every call."""
    try:
        import resource
    except ImportError:  # not on Windows
        fn()
        return float("nan")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)


def load_now():
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


# ======================================================================================
# Float32 matmul peak and XLA cost analysis
# ======================================================================================


def matmul_peak(repeats, n=2048):
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    ta, tb = torch.randn(n, n), torch.randn(n, n)
    torch.mm(ta, tb)
    rates_j, rates_t = [], []
    for _ in range(max(repeats, 5)):
        t0 = time.perf_counter()
        dot(a, b).block_until_ready()
        rates_j.append(2 * n**3 / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        torch.mm(ta, tb)
        rates_t.append(2 * n**3 / (time.perf_counter() - t0))
    return max(rates_j), float(np.median(rates_j)), max(rates_t), float(np.median(rates_t))


def xla_flops(jitted, *args):
    """FLOPs of one call from XLA's cost analysis of the compiled program (plus compile time)."""
    t0 = time.perf_counter()
    lowered = jitted.lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", float("nan"))), t1 - t0, t2 - t1


def choose_threads(runners, candidates) -> str:
    """Give every peer runner the fastest of ``candidates`` torch intra-op thread counts on
    its own work (one timed call each, best of two). On a loaded machine OpenMP's spinning
    barriers can make more threads far slower; on a quiet one they help large matrices only."""
    parts = []
    for run in runners:
        if run.lib == "jflow":
            continue
        rates = {}
        for threads in candidates:
            torch.set_num_threads(threads)
            best = 0.0
            for _ in range(2):
                t0 = time.perf_counter()
                run.fn()
                best = max(best, run.units / (time.perf_counter() - t0))
            rates[threads] = best
        run.threads = max(rates, key=rates.get)
        parts.append(f"{run.name} {run.threads} (" + ", ".join(
            f"{k}: {_fmt(v)} {run.unit}" for k, v in rates.items()) + ")")
    return "torch threads: " + "; ".join(parts)


# ======================================================================================
# Training benchmarks (MLPs)
# ======================================================================================


def _toy_batches(rng, n, batch):
    """``n`` batches of a 2-D Gaussian mixture (8 modes on a circle), float32."""
    angles = rng.integers(0, 8, size=(n, batch)) * (np.pi / 4)
    centers = np.stack([np.cos(angles), np.sin(angles)], axis=-1) * 2.0
    return (centers + 0.3 * rng.standard_normal((n, batch, DIM))).astype(np.float32)


def _torch_fm_step(model, opt, path, x1):
    x0 = torch.randn_like(x1)
    t = torch.rand(x1.shape[0])
    ps = path.sample(t=t, x_0=x0, x_1=x1)
    loss = (model(ps.x_t, ps.t) - ps.dx_t).pow(2).sum(dim=-1).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def _torch_cfm_step(model, opt, matcher, x1):
    x0 = torch.randn_like(x1)
    t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1)
    loss = (model(xt, t) - ut).pow(2).sum(dim=-1).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def _check_same_outputs(flax_apply, params, torch_model, x, t, y=None, what="model"):
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


def train_case(cfg, family, opts, notes):
    """Runners for one (model, width, batch) training configuration."""
    width, batch, k = cfg["width"], cfg["batch"], cfg["fused"]
    rng = np.random.default_rng(0)
    if family == "lab":
        fmodel = LabMLP(width=width, depth=4)
        tmodels = [TorchLabMLP(width, 4) for _ in range(2)]
    else:
        fmodel = MLP(width=width, depth=4, time_features=64)
        tmodels = [TorchFiLMMLP(width, 4, 64) for _ in range(2)]
    x_init = jnp.zeros((2, DIM), jnp.float32)
    params = fmodel.init(jax.random.PRNGKey(0), x_init, jnp.zeros((2,), jnp.float32))
    for tm in tmodels:
        copy_params(params, tm)
    xt = rng.standard_normal((16, DIM)).astype(np.float32)
    tt = rng.uniform(size=16).astype(np.float32)
    err = _check_same_outputs(jax.jit(fmodel.apply), params, tmodels[0], xt, tt, what=f"{family} MLP")
    n_params = count_params(params)
    n_torch = sum(p.numel() for p in tmodels[0].parameters())
    assert n_params == n_torch, (n_params, n_torch)

    loss = make_loss(fmodel.apply, LinearScheduler(), time_bins=0)
    tx = optax.adam(LR)
    host_params = jax.device_get(params)
    key = jax.random.PRNGKey(1)
    pool = 64  # distinct batches, reused cyclically
    data = _toy_batches(rng, pool, batch)

    step = jt.make_train_step(loss)
    fused = jt.make_fused_train_step(loss)
    singles = [jnp.asarray(data[i]) for i in range(pool)]
    stacks = [jnp.asarray(data[(i * k) % pool:(i * k) % pool + k]) for i in range(pool // k)]
    state0 = jt.create_train_state(jax.tree.map(jnp.asarray, host_params), tx)

    # first calls (trace + compile + one run) before anything else compiles these programs;
    # then FLOPs from the cost analysis of the compiled single step
    flops, t_lower, t_compile = xla_flops(step, state0, {"x": singles[0]}, key)
    box = {"s": state0}
    t0 = time.perf_counter()
    box["s"], _ = fused(box["s"], {"x": stacks[0]}, key)
    jax.block_until_ready(box["s"])
    first_fused = time.perf_counter() - t0

    def jflow_single(n):
        s = box["s"]
        for i in range(n):
            s, _ = step(s, {"x": singles[i % pool]}, key)
        jax.block_until_ready(s)
        box["s"] = s

    def jflow_fused(n_calls):
        s = box["s"]
        for i in range(n_calls):
            s, _ = fused(s, {"x": stacks[i % len(stacks)]}, key)
        jax.block_until_ready(s)
        box["s"] = s

    tdata = [torch.from_numpy(data[i]) for i in range(pool)]
    fm_model, cfm_model = tmodels
    fm_opt = torch.optim.Adam(fm_model.parameters(), lr=LR)
    cfm_opt = torch.optim.Adam(cfm_model.parameters(), lr=LR)
    path = AffineProbPath(scheduler=CondOTScheduler())
    matcher = ConditionalFlowMatcher(sigma=0.0)

    def fm_loop(n):
        for i in range(n):
            _torch_fm_step(fm_model, fm_opt, path, tdata[i % pool])

    def cfm_loop(n):
        for i in range(n):
            _torch_cfm_step(cfm_model, cfm_opt, matcher, tdata[i % pool])

    for f in (jflow_single, fm_loop, cfm_loop):
        f(3)  # warm-up
    faults = minor_faults(lambda: jflow_single(4)) / 4
    half = opts.seconds / 2  # calibrate on half a repeat, then time two such halves
    n_single = 2 * _calibrate(jflow_single, half)
    n_fused = 2 * _calibrate(jflow_fused, half)
    n_fm = 2 * _calibrate(fm_loop, half)
    n_cfm = 2 * _calibrate(cfm_loop, half)
    runners = [
        Runner("jflow step", "jflow", lambda: jflow_single(n_single), n_single, "steps/s"),
        Runner(f"jflow fused k={k}", "jflow", lambda: jflow_fused(n_fused), n_fused * k, "steps/s"),
        Runner("flow_matching", "flow_matching", lambda: fm_loop(n_fm), n_fm, "steps/s"),
        Runner("torchcfm", "torchcfm", lambda: cfm_loop(n_cfm), n_cfm, "steps/s"),
    ]
    label = f"{'lab MLP' if family == 'lab' else 'jflow FiLM MLP'} 4x{width}, batch {batch}"
    notes.append(
        f"{label}: {n_params:,} parameters (torch twin {n_torch:,}); twins agree to {err:.1e}; "
        f"XLA FLOPs/step {flops / 1e6:.2f} M; jflow step: trace+lower {t_lower:.2f} s, compile "
        f"{t_compile:.2f} s; fused k={k} step: first call (trace+compile+run) {first_fused:.2f} s; "
        f"jflow step: {faults:,.0f} minor page faults per call ({faults * 4096 / 2**20:,.1f} MiB first touched)"
    )
    return dict(label=label, runners=runners, flops=flops)


# ======================================================================================
# Sampling
# ======================================================================================


class _CountingField(ModelWrapper):
    """flow_matching velocity wrapper around the torch lab MLP that counts evaluations."""

    def __init__(self, model):
        super().__init__(model)
        self.nfe = 0

    def forward(self, x, t, **extras):
        self.nfe += 1
        return self.model(x, t)


def sample_case(n_points, width, methods, opts, notes):
    fmodel = LabMLP(width=width, depth=4)
    params = fmodel.init(jax.random.PRNGKey(0), jnp.zeros((2, DIM)), jnp.zeros((2,)))
    tmodel = TorchLabMLP(width, 4)
    copy_params(params, tmodel)
    tmodel.eval()
    for p in tmodel.parameters():
        p.requires_grad_(False)
    x0 = np.random.default_rng(1).standard_normal((n_points, DIM)).astype(np.float32)
    jx0, tx0 = jnp.asarray(x0), torch.from_numpy(x0)
    ts = uniform_grid(100, dtype=jnp.float32)

    def field(x, t, p):
        return fmodel.apply(p, x, t)

    out = []
    for method in methods:
        jsolve = jax.jit(lambda p, x, m=method: odeint(field, x, ts, method=m, args=(p,)))
        t0 = time.perf_counter()
        ref = np.asarray(jsolve(params, jx0))
        first = time.perf_counter() - t0
        fm_field = _CountingField(tmodel)
        solver = ODESolver(velocity_model=fm_field)
        tgrid = torch.tensor([0.0, 1.0])

        def fm_solve(m=method):
            return solver.sample(x_init=tx0, step_size=0.01, method=m, time_grid=tgrid)

        counter = {"nfe": 0}

        def cfm_field(t, x):  # torchcfm's torch_wrapper convention: (t, x)
            counter["nfe"] += 1
            return tmodel(x, t)

        tspan = torch.linspace(0.0, 1.0, 101)

        def cfm_solve(m=method):
            with torch.no_grad():
                return torchdiffeq.odeint(cfm_field, tx0, tspan, method=m)[-1]

        fm_field.nfe = 0
        got_fm = fm_solve().numpy()
        nfe_fm = fm_field.nfe
        got_cfm = cfm_solve().numpy()
        nfe_cfm = counter["nfe"]
        scale = np.max(np.abs(ref))
        err_fm = float(np.max(np.abs(got_fm - ref)) / scale)
        err_cfm = float(np.max(np.abs(got_cfm - ref)) / scale)
        nfe_j = 100 * (1 if method == "euler" else 2)
        flops_eval = xla_flops(jax.jit(fmodel.apply), params, jx0, jnp.float32(0.5))[0]
        notes.append(
            f"sampling {method}, {n_points:,} points: NFE jflow {nfe_j}, flow_matching {nfe_fm}, "
            f"torchdiffeq {nfe_cfm}; max |x_1 - x_1(jflow)| / max|x_1(jflow)|: flow_matching "
            f"{err_fm:.1e}, torchdiffeq {err_cfm:.1e}; jflow first call {first:.2f} s; "
            f"XLA FLOPs per field evaluation {flops_eval / 1e6:.1f} M"
        )

        def rep(fn, n):
            for _ in range(n):
                fn()

        def jrun(n, f=jsolve):
            for _ in range(n):
                jax.block_until_ready(f(params, jx0))

        n_j = _calibrate(jrun, opts.seconds)
        n_f = _calibrate(lambda n, f=fm_solve: rep(f, n), opts.seconds)
        n_c = _calibrate(lambda n, f=cfm_solve: rep(f, n), opts.seconds)
        runners = [
            Runner(f"jflow odeint {method}", "jflow", lambda n=n_j, f=jrun: f(n), n_j * n_points, "points/s"),
            Runner(f"flow_matching ODESolver {method}", "flow_matching",
                   lambda n=n_f, f=fm_solve: rep(f, n), n_f * n_points, "points/s"),
            Runner(f"torchdiffeq odeint {method}", "torchcfm",
                   lambda n=n_c, f=cfm_solve: rep(f, n), n_c * n_points, "points/s"),
        ]
        out.append(dict(label=f"sample lab MLP 4x{width}, {method} 100 steps, {n_points:,} points",
                        runners=runners, flops=flops_eval * nfe_j / n_points, note=notes[-1]))
    return out


# ======================================================================================
# U-Net
# ======================================================================================


def unet_case(batch, opts, notes):
    cfg = get_config("unet_mnist")
    kw = dict(cfg.kwargs, dropout=0.0)
    fmodel = UNet(**kw)
    h, w, c = cfg.input_shape
    params = jax.jit(fmodel.init)(jax.random.PRNGKey(0), jnp.zeros((1, h, w, c)), jnp.zeros((1,)),
                                  jnp.zeros((1,), jnp.int32))
    # flax zero-initialises the last convs of every residual branch; give them random values so
    # that the output check exercises every layer
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
    leaves = [jnp.where(v == 0, 0.05 * jax.random.normal(k, v.shape), v) for v, k in zip(leaves, keys)]
    params = jax.tree.unflatten(tree, leaves)
    tmodel = TorchUNet(c, kw["base_channels"], kw["channel_mults"], kw["num_res_blocks"],
                       kw["attention_levels"], kw["num_heads"], kw["norm_groups"], kw["num_classes"])
    copy_params(params, tmodel)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((2, h, w, c)).astype(np.float32)
    ts = rng.uniform(size=2).astype(np.float32)
    ys = np.array([3, 10], np.int32)

    def torch_nchw(x, t, y):
        return tmodel(x.permute(0, 3, 1, 2), t, y)

    err = _check_same_outputs(jax.jit(fmodel.apply), params, torch_nchw, xs, ts, ys, what="U-Net")
    n_params = count_params(params)
    n_torch = sum(p.numel() for p in tmodel.parameters())

    loss = make_loss(fmodel.apply, LinearScheduler(), time_bins=0)
    step = jt.make_train_step(loss)
    key = jax.random.PRNGKey(1)
    pool = 8
    data = rng.standard_normal((pool, batch, h, w, c)).astype(np.float32)
    labels = rng.integers(0, 10, size=(pool, batch)).astype(np.int32)
    batches = [{"x": jnp.asarray(data[i]), "y": jnp.asarray(labels[i])} for i in range(pool)]
    state = jt.create_train_state(params, optax.adam(LR))
    box = {"s": state}
    t0 = time.perf_counter()
    box["s"], _ = step(box["s"], batches[0], key)
    jax.block_until_ready(box["s"])
    first = time.perf_counter() - t0
    flops = xla_flops(step, box["s"], batches[0], key)[0]

    def jrun(n):
        s = box["s"]
        for i in range(n):
            s, _ = step(s, batches[i % pool], key)
        jax.block_until_ready(s)
        box["s"] = s

    tdata = [torch.from_numpy(data[i].transpose(0, 3, 1, 2).copy()) for i in range(pool)]
    tlabels = [torch.from_numpy(labels[i]).long() for i in range(pool)]
    opt = torch.optim.Adam(tmodel.parameters(), lr=LR)
    path = AffineProbPath(scheduler=CondOTScheduler())

    def trun(n):
        for i in range(n):
            x1 = tdata[i % pool]
            x0 = torch.randn_like(x1)
            t = torch.rand(x1.shape[0])
            ps = path.sample(t=t, x_0=x0, x_1=x1)
            loss_t = (tmodel(ps.x_t, ps.t, tlabels[i % pool]) - ps.dx_t).pow(2).sum(dim=(1, 2, 3)).mean()
            opt.zero_grad(set_to_none=True)
            loss_t.backward()
            opt.step()

    trun(1)
    n_j = _calibrate(jrun, opts.seconds)
    n_t = _calibrate(trun, opts.seconds)
    notes.append(
        f"U-Net (unet_mnist, dropout 0, 10 classes), batch {batch}: jflow {n_params:,} parameters, "
        f"torch port {n_torch:,}; outputs agree to {err:.1e}; XLA FLOPs/step {flops / 1e9:.2f} G; "
        f"jflow first call (trace + compile + one step) {first:.2f} s"
    )
    runners = [
        Runner("jflow step", "jflow", lambda: jrun(n_j), n_j, "steps/s"),
        Runner("PyTorch + flow_matching path", "flow_matching", lambda: trun(n_t), n_t, "steps/s"),
    ]
    return dict(label=f"U-Net 28x28x1, batch {batch}", runners=runners, flops=flops)


# ======================================================================================
# Report
# ======================================================================================


def _fmt(x):
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def table(cases, peak):
    lines = [
        "| case | runner | median | IQR | / flow_matching | / torchcfm | GFLOP/s | % of peak |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    summary = []
    for case in cases:
        peers = {r.lib: r for r in case["runners"] if r.lib != "jflow"}
        for r in case["runners"]:
            q1, med, q3 = _quartiles(r.rates)
            ratios = []
            for lib in ("flow_matching", "torchcfm"):
                if r.lib == "jflow" and lib in peers:
                    per = [a / b for a, b in zip(r.rates, peers[lib].rates)]
                    p1, pm, p3 = _quartiles(per)
                    ratios.append(f"{pm:.2f}x [{p1:.2f}-{p3:.2f}]")
                    summary.append((case["label"], r.name, lib, pm))
                else:
                    ratios.append("")
            if case["flops"] and r.unit in ("steps/s", "points/s"):
                gflops = med * case["flops"] / 1e9
                util = f"{100 * gflops * 1e9 / peak:.0f}%"
                gf = f"{gflops:.1f}"
            else:
                gf = util = ""
            lines.append(
                f"| {case['label']} | {r.name} | {_fmt(med)} {r.unit} | {_fmt(q1)}-{_fmt(q3)} | "
                f"{ratios[0]} | {ratios[1]} | {gf} | {util} |"
            )
    return "\n".join(lines), summary


def targets(summary, cases):
    """Issue 8's targets, from the best jflow runner of each case (fused steps count)."""
    best = {}
    for label, name, lib, ratio in summary:
        best[(label, lib)] = max(ratio, best.get((label, lib), 0.0))
    rows = []
    for (label, lib), ratio in sorted(best.items()):
        if label.startswith("lab MLP 4x64") or label.startswith("jflow FiLM MLP 4x64"):
            goal = 1.5
        elif "4x512" in label and not label.startswith("sample"):
            goal = 1.2
        elif label.startswith("sample"):
            goal = 1.5
        else:
            goal = None
        status = "" if goal is None else ("met" if ratio >= goal else "NOT met")
        rows.append(f"| {label} | {lib} | {ratio:.2f}x | {'' if goal is None else f'>= {goal}x'} | {status} |")
    return "| case | peer | best jflow / peer | target | |\n|---|---|---:|---:|---|\n" + "\n".join(rows)


def main(args):
    opts = args
    opts.repeats = opts.repeats or (3 if opts.quick else 7)
    opts.seconds = opts.seconds or (0.3 if opts.quick else 0.6)
    candidates = opts.threads or sorted({1, os.cpu_count()})
    torch.manual_seed(0)
    out = opts.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "peers.md")
    load_start = load_now()
    started = time.time()
    print(f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {os.cpu_count()} cores, load {load_start}", flush=True)

    torch.set_num_threads(max(candidates))  # while the runners are built and calibrated
    peak_j, peak_j_med, peak_t, peak_t_med = matmul_peak(opts.repeats)
    print(f"float32 matmul 2048^3: jnp.dot best {peak_j / 1e9:.1f} GFLOP/s (median {peak_j_med / 1e9:.1f}), "
          f"torch.mm best {peak_t / 1e9:.1f} (median {peak_t_med / 1e9:.1f})", flush=True)
    peak = max(peak_j, peak_t)

    notes, cases = [], []
    if opts.quick:
        train_cfgs = [dict(width=64, batch=256, fused=16), dict(width=512, batch=1024, fused=4)]
        film_cfgs = [dict(width=64, batch=256, fused=16)]
        sample_sizes, unet_batch = [1000, 10_000], 8
    else:
        train_cfgs = [dict(width=64, batch=256, fused=32), dict(width=64, batch=1000, fused=32),
                      dict(width=512, batch=4096, fused=8)]
        film_cfgs = [dict(width=64, batch=1000, fused=32), dict(width=512, batch=1024, fused=8)]
        sample_sizes, unet_batch = [1000, 100_000], 16
    sample_sizes = opts.sample_points or sample_sizes
    def run_case(case, note_index, repeats):
        notes[note_index] += "; " + choose_threads(case["runners"], candidates)
        print(notes[note_index], flush=True)
        measure(case["runners"], repeats)
        cases.append(case)
        print(table([case], peak)[0], flush=True)

    for part in opts.parts:
        if part in ("train", "film"):
            for cfg in train_cfgs if part == "train" else film_cfgs:
                case = train_case(cfg, "lab" if part == "train" else "film", opts, notes)
                run_case(case, len(notes) - 1, opts.repeats)
        elif part == "sample":
            for n in sample_sizes:
                for case in sample_case(n, 64, ["euler", "midpoint"], opts, notes):
                    run_case(case, notes.index(case["note"]), opts.repeats if n <= 10_000 else max(3, opts.repeats // 2))
        elif part == "unet":
            case = unet_case(unet_batch, opts, notes)
            run_case(case, len(notes) - 1, opts.repeats)

    # the load of a shared machine drifts: measure the peak again and use the higher one
    end_j, _, end_t, _ = matmul_peak(opts.repeats)
    peak_j, peak_t = max(peak_j, end_j), max(peak_t, end_t)
    peak = max(peak_j, peak_t)
    body, summary = table(cases, peak)
    load_end = load_now()
    cmd = "python benchmarks/bench_peers.py " + " ".join(sys.argv[1:])
    text = "\n".join([
        f"# jflow vs flow_matching / torchcfm ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `{cmd.strip()}`  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.platform()}; jax {jax.__version__}, torch {torch.__version__} with "
        f"the fastest of torch.set_num_threads({candidates}) per peer runner (in the notes); "
        f"XLA_FLAGS='{os.environ.get('XLA_FLAGS', '')}'; malloc: {opts.malloc}"
        + (f" ({' '.join(f'{k}={v}' for k, v in RETAIN_MALLOC.items())})" if opts.malloc == "retain" else "")
        + "  ",
        f"Load average (1/5/15 min): start {load_start[0]:.1f}/{load_start[1]:.1f}/{load_start[2]:.1f}, "
        f"end {load_end[0]:.1f}/{load_end[1]:.1f}/{load_end[2]:.1f}; run took {time.time() - started:.0f} s  ",
        f"Float32 matmul peak measured here (2048^3): jnp.dot {peak_j / 1e9:.1f} GFLOP/s, torch.mm "
        f"{peak_t / 1e9:.1f} GFLOP/s (best of {max(opts.repeats, 5)} at the start and as many at the end); utilisation below is against "
        f"{peak / 1e9:.1f} GFLOP/s, with the FLOPs of XLA's cost analysis of jflow's step (same math for the peers).",
        "",
        f"Medians over {opts.repeats} interleaved repeats (sampling at 100k points: "
        f"{max(3, opts.repeats // 2)}); IQR = interquartile range; ratios = median "
        "of the per-repeat ratios jflow / peer [IQR]. The torchcfm column of the sampling rows is "
        "torchdiffeq's odeint on a 101-point grid (torchcfm's examples).",
        "",
        body,
        "",
        "Targets of issue 8 (best jflow runner of each case, fused steps included):",
        "",
        targets(summary, cases),
        "",
        "Notes:",
        "",
        *[f"- {n}" for n in notes],
        "",
    ])
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    print("\n" + text)
    print(f"written to {out}")


if __name__ == "__main__":
    main(_ARGS)
