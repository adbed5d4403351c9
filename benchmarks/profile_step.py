"""Where the time of a jitted jflow step goes: XLA's operations, timed by the JAX profiler.

Usage (from the repository root)::

    python -m benchmarks.profile_step train --width 512 --batch 4096
    python -m benchmarks.profile_step train --width 64 --batch 1000 --fused 32
    python -m benchmarks.profile_step sample --width 64 --points 100000 --method euler
    python -m benchmarks.profile_step unet --batch 16
    python -m benchmarks.profile_step train --compare '[{}, {"xla_cpu_use_onednn": true}]'

``train`` profiles one flow matching update of the labs' MLP (``jflow.models.PlainMLP``;
``jflow.losses.make_loss`` + ``jflow.train.make_train_step``, Adam, float32), or ``--fused k``
updates in one ``lax.scan``; ``sample`` profiles ``jflow.integrators.odeint`` (100 steps)
of the same MLP with random weights; ``unet`` one flow matching update of
``jflow.models.UNet`` in its ``unet_mnist`` configuration (28x28x1, dropout 0), ``dit`` the
same for ``jflow.models.DiT`` in ``dit_tiny`` (the peer benchmark's image cases).

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

jax is imported inside the functions: :func:`main` first switches the per-operation trace
events on in ``XLA_FLAGS``, which XLA reads when JAX starts.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import tempfile

from benchmarks import harness


def _parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["train", "sample", "unet", "dit"])
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch", type=int, default=None, help="train / unet, dit: batch size (default 4096 / 16)")
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
# The programs profiled
# ------------------------------------------------------------------------------------------


IMAGE_CONFIGS = {"unet": "unet_mnist", "dit": "dit_tiny"}
"""The image models the ``unet`` and ``dit`` targets profile: the configurations of the peer benchmark."""


def build(args):
    """``(jitted, call_args, advance, per_call, label)``: ``jitted(*call_args)`` is one call and
    ``advance(out, call_args)`` the arguments of the next (a train step's state is donated)."""
    import jax
    import jax.numpy as jnp
    import optax

    import jflow.train as jt
    from jflow.integrators import odeint, uniform_grid
    from jflow.losses import make_loss
    from jflow.models import PlainMLP
    from jflow.schedulers import LinearScheduler

    if args.what in IMAGE_CONFIGS:
        from jflow.models import get_config, get_model

        name = IMAGE_CONFIGS[args.what]
        cfg, model = get_config(name), get_model(name, dropout=0.0)
        batch_size = args.batch or 16
        x = jax.random.normal(jax.random.PRNGKey(1), (batch_size,) + tuple(cfg.input_shape))
        y = jax.random.randint(jax.random.PRNGKey(2), (batch_size,), 0, 10)
        params = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1], jnp.zeros((1,)), y[:1])
        step = jt.make_train_step(make_loss(model.apply, LinearScheduler(), time_bins=0))
        state = jt.create_train_state(params, optax.adam(1e-3))
        label = f"train step, {type(model).__name__} {name}, batch {batch_size}"
        return step, (state, {"x": x, "y": y}, jax.random.PRNGKey(3)), lambda out, a: (out[0],) + a[1:], 1, label

    model = PlainMLP(width=args.width, depth=args.depth)
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

    variants = json.loads(args.compare)
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise SystemExit('--compare takes a JSON list of dicts of XLA options, e.g. \'[{}, {"xla_cpu_use_onednn": true}]\'')
    compiled = [jitted.lower(*call_args).compile(compiler_options=v or None) for v in variants]
    boxes = [jax.tree.map(jnp.copy, call_args) for _ in variants]  # donated: one copy each

    def run(i, n):
        a = boxes[i]
        for _ in range(n):
            out = compiled[i](*a)
            a = advance(out, a)
        jax.block_until_ready(out)
        boxes[i] = a

    n = harness.calibrate(lambda n: run(0, n), 0.5)
    runners = []
    for i, v in enumerate(variants):
        run(i, 1)  # warm-up
        runners.append(harness.Runner(json.dumps(v), "jflow", lambda i=i: run(i, n), n, "calls/s"))
    harness.measure_interleaved(runners, args.repeats)
    print(f"{label}: {args.repeats} interleaved repeats of {n} call(s); load {harness.load_now()}")
    print("| XLA options | ms per call (median) | speed-up vs the first (median of per-repeat ratios) |")
    print("|---|---:|---:|")
    for r in runners:
        speedup = harness.quartiles([a / b for a, b in zip(r.rates, runners[0].rates)])[1]
        print(f"| `{r.name}` | {1e3 / harness.quartiles(r.rates)[1]:.1f} | {speedup:.3f}x |")


def _trace(fn, calls: int):
    """``(total ms per call, events per call)`` of every XLA operation over ``calls`` traced calls of ``fn``."""
    import jax

    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(calls):
                fn()
        files = glob.glob(os.path.join(d, "**", "*.trace.json.gz"), recursive=True)
        if not files:
            raise SystemExit("the profiler wrote no perfetto trace; is this jax build's profiler available?")
        with gzip.open(files[0]) as f:
            events = json.load(f)["traceEvents"]
    total, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(("end: ", "$", "PjitFunction", "Thunk")) and "::" not in e["name"]:
            total[e["name"]] += e.get("dur", 0.0) / 1e3 / calls
            count[e["name"]] += 1
    return total, count


def _print_ops(args, flops, total, count, call_ms, peak) -> None:
    """The table of the ``--top`` operations and the traced time by kind."""
    # an op inside a loop (a fused step's or odeint's lax.scan) runs several times per call
    runs = {name: count[name] / args.calls if count[name] else 1.0 for name in flops}
    call_flops = sum(flops[name] * runs[name] for name in flops)
    print(f"matrix multiplies and convolutions: {call_flops / 1e9:.3f} GFLOP per call -> {call_flops / peak * 1e3:.1f} ms "
          "at the measured peak\n")
    print("| op | ms per call | share of call | runs per call | GFLOP per call | GFLOP/s | % of peak |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    kinds = collections.Counter()
    for name, ms in total.items():
        if not name.startswith(("while", "conditional", "call")):  # a loop's event spans its body's events
            kinds["matmul/conv" if name in flops else ("copy" if name.startswith("copy") else "other")] += ms
    for name, ms in sorted(total.items(), key=lambda kv: -kv[1])[: args.top]:
        f = flops[name] * runs[name] if name in flops else None
        rate = f"{f / (ms / 1e3) / 1e9:.1f}" if f and ms > 0 else ""
        pct = f"{f / (ms / 1e3) / peak:.0%}" if f and ms > 0 else ""
        gf = f"{f / 1e9:.3f}" if f else ""
        print(f"| {name} | {ms:.2f} | {ms / call_ms:.0%} | {count[name] / args.calls:.0f} | {gf} | {rate} | {pct} |")
    print("\ntraced time by kind, loops counted by their bodies (ms per call): "
          + ", ".join(f"{k} {v:.1f}" for k, v in kinds.most_common()))
    async_dots = [n for n in flops if n.startswith("dot") and total.get(n, 0) < 0.2 * flops[n] * runs[n] / peak * 1e3]
    if async_dots:
        print(f"asynchronous Eigen dots (their work overlaps the ops above): {', '.join(sorted(async_dots))}, "
              f"{sum(flops[n] * runs[n] for n in async_dots) / 1e9:.3f} GFLOP")


def main(argv=None):
    args = _parse_args(argv)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jitted, call_args, advance, per_call, label = build(args)
    if args.compare:
        return compare(args, jitted, call_args, advance, label)
    flops = harness.dot_flops(jitted.lower(*call_args).compile().as_text())
    box = {"args": call_args}

    def fn():
        out = jitted(*box["args"])
        box["args"] = advance(out, box["args"])
        return jax.block_until_ready(out)

    call_ms = harness.time_calls(fn, repeats=3, warmup=2).median_wall * 1e3
    peak = max(harness.matmul_peak(harness.jax_matmul(), repeats=5))
    total, count = _trace(fn, args.calls)
    print(f"{label}")
    print(f"jax {jax.__version__}, XLA_FLAGS={os.environ['XLA_FLAGS']!r}, load {harness.load_now()}")
    print(f"one call: {call_ms:.1f} ms untraced (median of 3; {per_call} update(s) or solve per call); "
          f"matmul peak {peak / 1e9:.1f} GFLOP/s (jitted 2048^3 jnp.dot, best of 5)")
    _print_ops(args, flops, total, count, call_ms, peak)


if __name__ == "__main__":
    main()
