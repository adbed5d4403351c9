"""Where the time of a jitted jflow step goes: XLA's operations, timed by the JAX profiler.

Usage (from the repository root)::

    python benchmarks/profile_step.py train --width 512 --batch 4096
    python benchmarks/profile_step.py train --width 64 --batch 1000 --fused 32
    python benchmarks/profile_step.py sample --width 64 --points 100000 --method euler
    python benchmarks/profile_step.py unet --batch 16
    python benchmarks/profile_step.py train --compare '[{}, {"xla_cpu_use_onednn": true}]'

``train`` profiles one flow matching update of the labs' MLP (``benchmarks/lab_mlp.py``;
``jflow.losses.make_loss`` + ``jflow.train.make_train_step``, Adam, float32), or ``--fused k``
updates in one ``lax.scan``; ``sample`` profiles ``jflow.integrators.odeint`` (100 steps)
of the same MLP with random weights; ``unet`` one flow matching update of
``jflow.models.UNet`` in its ``unet_mnist`` configuration (28x28x1, dropout 0).

The script records ``--calls`` calls with ``jax.profiler.trace`` (XLA CPU's per-operation
trace events switched on with ``--xla_cpu_enable_xprof_traceme=true``) and prints, per
operation of the optimized HLO module, its time per call, its share of the call, and for
matrix multiplies (``dot`` inside a fusion or alone) the FLOPs and the rate reached. The
rate of a matrix multiply is measured against a jitted 2048^3 ``jnp.dot`` timed in the
same process. Convolutions are counted like matrix multiplies.

Caveat: an operation that XLA hands to Eigen's thread pool (a plain ``dot`` thunk) returns
at once and runs while the next operations run, so its own event is short and its time
shows up inside the events it overlaps with; YNNPACK fusions (``ynn_fusion``) and XLA's
own loop fusions run in their event. The profile is a diagnosis, not a benchmark: tracing
adds overhead (compare its "call" time with the benchmarks' rates).

``--compare`` skips the profile: it compiles the same program once per set of XLA debug
options (``jit(...).lower(...).compile(compiler_options=...)``, so no restart is needed)
and times the variants interleaved in one process, which keeps the comparison fair when
the machine's load drifts.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["train", "sample", "unet"])
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch", type=int, default=None, help="train / unet: batch size (default 4096 / 16)")
    p.add_argument("--fused", type=int, default=1, help="train: updates per call (lax.scan)")
    p.add_argument("--points", type=int, default=100_000, help="sample: number of points")
    p.add_argument("--method", default="euler", help="sample: odeint method")
    p.add_argument("--calls", type=int, default=5, help="calls recorded by the profiler")
    p.add_argument("--top", type=int, default=20, help="operations listed")
    p.add_argument("--compare", default=None,
                   help="instead of profiling, time the program compiled with each set of XLA options in this "
                        "JSON list (interleaved), e.g. '[{}, {\"xla_cpu_experimental_ynn_fusion_type\": \"\"}]'")
    p.add_argument("--repeats", type=int, default=9, help="--compare: interleaved repeats")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------
# FLOPs of every matrix multiply of the optimized HLO, by the name of its top-level op
# ------------------------------------------------------------------------------------------

_DEF = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*\w+\[([\d,]*)\]")
_DOT = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*\w+\[([\d,]*)\]\S*\s+dot\(%([\w.\-]+),.*lhs_contracting_dims=\{([\d,]*)\}")
_CONV = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*\w+\[([\d,]*)\]\S*\s+convolution\(%([\w.\-]+), %([\w.\-]+)\).*dim_labels=\w+_(\w+)->")
_COMP = re.compile(r"^(?:ENTRY\s+)?%([\w.\-]+)\s")
_CALLS = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=.*\bcalls=%([\w.\-]+)")


def _dims(text):
    return [int(d) for d in text.split(",") if d]


def dot_flops(hlo_text: str) -> dict:
    """``{top-level op name: FLOPs}`` for every ``dot`` and ungrouped ``convolution`` (alone or
    inside a fusion): ``2 * prod(output shape) * prod(contracting dims of the left operand)``
    for a dot, ``2 * prod(output shape) * prod(kernel dims but its output features)`` for a
    convolution."""
    shapes, comp_of, dots, callers = {}, {}, [], collections.defaultdict(list)
    comp = None
    for line in hlo_text.splitlines():
        m = _COMP.match(line)
        if m and line.rstrip().endswith("{"):
            comp = m.group(1)
            continue
        m = _DEF.match(line)
        if m:
            shapes[m.group(1)] = _dims(m.group(2))
            comp_of[m.group(1)] = comp
        m = _DOT.match(line)
        if m:
            dots.append((m.group(1), _dims(m.group(2)), m.group(3), _dims(m.group(4)), comp))
        m = _CONV.match(line)
        if m and "group_count" not in line:  # grouped convolutions are not counted
            # each output element sums over the kernel's dims other than its output features
            name, out_shape, kernel, labels = m.group(1), _dims(m.group(2)), m.group(4), m.group(5)
            kernel_shape = shapes.get(kernel, [])
            contracted = [d for d, c in zip(kernel_shape, labels) if c != "o"]
            dots.append((name, out_shape, None, contracted, comp))
        m = _CALLS.match(line)
        if m:
            callers[m.group(2)].append(m.group(1))
    out = collections.Counter()
    for name, out_shape, lhs, contracting, comp in dots:
        k = 1
        if lhs is None:  # a convolution: `contracting` holds the summed kernel dims' sizes
            for size in contracting:
                k *= size
        else:
            lhs_shape = shapes.get(lhs, [])
            for d in contracting:
                k *= lhs_shape[d] if d < len(lhs_shape) else 1
        n = 1
        for d in out_shape:
            n *= d
        owner = name
        seen = set()
        while comp in callers and comp not in seen:  # climb to the op the executor runs
            seen.add(comp)
            owner = callers[comp][0]
            comp = comp_of.get(owner)
        out[owner] += 2.0 * n * k
    return dict(out)


# ------------------------------------------------------------------------------------------
# The programs profiled
# ------------------------------------------------------------------------------------------


def build(args):
    """``(jitted, call_args, advance, per_call, label)``: ``jitted(*call_args)`` is one call and
    ``advance(out, call_args)`` the arguments of the next (a train step's state is donated)."""
    import jax
    import jax.numpy as jnp
    import optax

    import jflow.train as jt
    from jflow.integrators import odeint, uniform_grid
    from jflow.losses import make_loss
    from jflow.schedulers import LinearScheduler
    from lab_mlp import LabMLP

    if args.what == "unet":
        from jflow.models import UNet, get_config

        cfg = get_config("unet_mnist")
        model = UNet(**dict(cfg.kwargs, dropout=0.0))
        batch_size = args.batch or 16
        x = jax.random.normal(jax.random.PRNGKey(1), (batch_size,) + tuple(cfg.input_shape))
        y = jax.random.randint(jax.random.PRNGKey(2), (batch_size,), 0, 10)
        params = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1], jnp.zeros((1,)), y[:1])
        step = jt.make_train_step(make_loss(model.apply, LinearScheduler(), time_bins=0))
        state = jt.create_train_state(params, optax.adam(1e-3))
        label = f"train step, U-Net unet_mnist, batch {batch_size}"
        return step, (state, {"x": x, "y": y}, jax.random.PRNGKey(3)), lambda out, a: (out[0],) + a[1:], 1, label

    model = LabMLP(width=args.width, depth=args.depth)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 2)), jnp.zeros((2,)))
    if args.what == "sample":
        x0 = jax.random.normal(jax.random.PRNGKey(1), (args.points, 2))
        ts = uniform_grid(100, dtype=jnp.float32)
        fn = jax.jit(lambda p, x: odeint(lambda x, t, p: model.apply(p, x, t), x, ts, method=args.method, args=(p,)))
        label = f"odeint {args.method}, 100 steps, lab MLP {args.depth}x{args.width}, {args.points:,} points"
        return fn, (params, x0), lambda out, a: a, 1, label

    loss = make_loss(model.apply, LinearScheduler(), time_bins=0)
    state = jt.create_train_state(params, optax.adam(1e-3))
    k = args.fused
    if k > 1:
        step = jt.make_fused_train_step(loss)
        batch = {"x": jax.random.normal(jax.random.PRNGKey(1), (k, args.batch or 4096, 2))}
    else:
        step = jt.make_train_step(loss)
        batch = {"x": jax.random.normal(jax.random.PRNGKey(1), (args.batch or 4096, 2))}
    label = f"train step, lab MLP {args.depth}x{args.width}, batch {args.batch or 4096}" + (f", fused k={k}" if k > 1 else "")
    return step, (state, batch, jax.random.PRNGKey(2)), lambda out, a: (out[0],) + a[1:], k, label


def compare(args, jitted, call_args, advance, label):
    """Time the program compiled with each set of XLA options of ``--compare``, interleaved."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    variants = json.loads(args.compare)
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise SystemExit('--compare takes a JSON list of dicts of XLA options, e.g. \'[{}, {"xla_cpu_use_onednn": true}]\'')
    compiled = [jitted.lower(*call_args).compile(compiler_options=v or None) for v in variants]
    boxes = [jax.tree.map(jnp.copy, call_args) for _ in variants]  # donated: one copy each

    def run(i, n):
        a = boxes[i]
        t0 = time.perf_counter()
        for _ in range(n):
            out = compiled[i](*a)
            a = advance(out, a)
        jax.block_until_ready(out)
        boxes[i] = a
        return (time.perf_counter() - t0) / n

    first = run(0, 1)
    for i in range(1, len(variants)):
        run(i, 1)
    n = max(1, int(round(0.5 / first)))
    times = [[] for _ in variants]
    for r in range(args.repeats):
        for i in (range(len(variants)) if r % 2 == 0 else reversed(range(len(variants)))):
            times[i].append(run(i, n))
    base = np.asarray(times[0])
    print(f"{label}: {args.repeats} interleaved repeats of {n} call(s); load {os.getloadavg()}")
    print("| XLA options | ms per call (median) | speed-up vs the first (median of per-repeat ratios) |")
    print("|---|---:|---:|")
    for v, t in zip(variants, times):
        t = np.asarray(t)
        print(f"| `{json.dumps(v)}` | {np.median(t) * 1e3:.1f} | {np.median(base / t):.3f}x |")


def main(argv=None):
    args = _parse_args(argv)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, REPO)
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import jax
    import jax.numpy as jnp
    import numpy as np

    jitted, call_args, advance, per_call, label = build(args)
    if args.compare:
        return compare(args, jitted, call_args, advance, label)
    flops = dot_flops(jitted.lower(*call_args).compile().as_text())
    box = {"args": call_args}

    def fn():
        out = jitted(*box["args"])
        box["args"] = advance(out, box["args"])
        return out

    for _ in range(2):
        jax.block_until_ready(fn())
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)

    n = 2048
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()
    peaks = []
    for _ in range(5):
        t0 = time.perf_counter()
        dot(a, a).block_until_ready()
        peaks.append(2 * n**3 / (time.perf_counter() - t0))
    peak = max(peaks)

    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(args.calls):
                jax.block_until_ready(fn())
        files = glob.glob(os.path.join(d, "**", "*.trace.json.gz"), recursive=True)
        if not files:
            raise SystemExit("the profiler wrote no perfetto trace; is this jax build's profiler available?")
        with gzip.open(files[0]) as f:
            events = json.load(f)["traceEvents"]

    total, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(("end: ", "$")) and "::" not in e["name"] \
                and not e["name"].startswith(("PjitFunction", "Thunk")):
            total[e["name"]] += e.get("dur", 0.0) / 1e3 / args.calls
            count[e["name"]] += 1
    call_ms = float(np.median(times)) * 1e3
    print(f"{label}")
    print(f"jax {jax.__version__}, XLA_FLAGS={os.environ['XLA_FLAGS']!r}, load {os.getloadavg()}")
    print(f"one call: {call_ms:.1f} ms untraced (median of 3; {per_call} update(s) or solve per call); "
          f"matmul peak {peak / 1e9:.1f} GFLOP/s (jitted 2048^3 jnp.dot, best of 5)")
    # an op inside a loop (a fused step's or odeint's lax.scan) runs several times per call
    runs = {name: count[name] / args.calls if count[name] else 1.0 for name in flops}
    call_flops = sum(flops[name] * runs[name] for name in flops)
    print(f"matrix multiplies and convolutions: {call_flops / 1e9:.3f} GFLOP per call -> {call_flops / peak * 1e3:.1f} ms "
          "at the measured peak\n")
    print("| op | ms per call | share of call | runs per call | GFLOP per call | GFLOP/s | % of peak |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    kinds = collections.Counter()
    for name, ms in sorted(total.items(), key=lambda kv: -kv[1]):
        if name.startswith(("while", "conditional", "call")):
            continue  # a loop's event spans the events of its body
        kind = "matmul/conv" if name in flops else ("copy" if name.startswith("copy") else "other")
        kinds[kind] += ms
    for name, ms in sorted(total.items(), key=lambda kv: -kv[1])[: args.top]:
        f = flops[name] * runs[name] if name in flops else None
        rate = f"{f / (ms / 1e3) / 1e9:.1f}" if f and ms > 0 else ""
        pct = f"{f / (ms / 1e3) / peak:.0%}" if f and ms > 0 else ""
        gf = f"{f / 1e9:.3f}" if f else ""
        print(f"| {name} | {ms:.2f} | {ms / call_ms:.0%} | {count[name] / args.calls:.0f} | {gf} | {rate} | {pct} |")
    print("\ntraced time by kind, loops counted by their bodies (ms per call): " + ", ".join(f"{k} {v:.1f}" for k, v in kinds.most_common()))
    async_dots = [n for n in flops if n.startswith("dot") and total.get(n, 0) < 0.2 * flops[n] * runs[n] / peak * 1e3]
    if async_dots:
        print(f"asynchronous Eigen dots (their work overlaps the ops above): {', '.join(sorted(async_dots))}, "
              f"{sum(flops[n] * runs[n] for n in async_dots) / 1e9:.3f} GFLOP")


if __name__ == "__main__":
    main()
