"""Training-step throughput: plain vs fused steps, and the sharded step over 1/2/4/8 devices.

Usage (from the repository root)::

    python benchmarks/bench_train.py                      # everything, CPU
    python benchmarks/bench_train.py --steps 400 --batch 256 --width 64 --depth 2
    python benchmarks/bench_train.py --skip-sharded       # only plain vs fused

Model: ``jflow.models.MLP`` trained with ``jflow.losses.make_loss`` (flow matching, CondOT
path) on 2-D Gaussian data, Adam. Reported: optimizer steps per second after compilation
(the first call is excluded), median of ``--repeats`` timings.

The sharded part starts one subprocess per device count, because
``--xla_force_host_platform_device_count`` is read once when JAX starts; the global batch
is fixed (strong scaling). Fake CPU devices share the machine's cores, so on CPU this
measures the overhead of partitioning and collectives, not a speed-up; on a multi-GPU host
run with ``--platform gpu`` to use real devices. The sharded timing waits for each step
before dispatching the next (see ``bench_sharded``), so it includes one host round trip
per step, unlike the plain/fused timings.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup(args):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from jflow.losses import make_loss
    from jflow.models import MLP
    from jflow.schedulers import LinearScheduler
    import jflow.train as jt

    model = MLP(width=args.width, depth=args.depth)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((2, 2)), jnp.zeros((2,)))
    loss = make_loss(model.apply, LinearScheduler())
    tx = optax.adam(1e-3)
    rng = np.random.default_rng(0)
    host_params = jax.device_get(params)

    def new_state():  # a fresh copy: the donating steps consume the state's buffers
        return jt.create_train_state(jax.tree.map(jnp.asarray, host_params), tx)

    def batches(n):
        return {"x": (rng.standard_normal((n, args.batch, 2)) * 0.5 + 1.0).astype(np.float32)}

    return jax, jt, loss, new_state, batches


def _time(fn, repeats):
    """Median wall-clock and CPU (all threads of this process) seconds of ``fn()``.

    CPU time is the steadier figure on a shared machine: other processes stretch the wall
    clock but not the work this process does.
    """
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]


def _rates(n, fn, repeats):
    wall, cpu = _time(fn, repeats)
    return {"wall": n / wall, "cpu": n / cpu}


def bench_fused(args):
    jax, jt, loss, new_state, batches = _setup(args)
    key = jax.random.PRNGKey(1)
    n = args.steps
    data = batches(n)
    results = {}

    step = jt.make_train_step(loss)
    box = {"s": new_state()}
    singles = [jax.tree.map(lambda x: jax.device_put(x[i]), data) for i in range(n)]

    def run_single():
        s = box["s"]
        for b in singles:
            s, m = step(s, b, key)
        jax.block_until_ready(s)
        box["s"] = s

    run_single()  # compile + warm up
    results["single"] = _rates(n, run_single, args.repeats)

    for k in args.fused:
        if n % k:
            continue
        fused = jt.make_fused_train_step(loss)
        chunks = [jax.tree.map(lambda x: jax.device_put(x[i:i + k]), data) for i in range(0, n, k)]
        box["s"] = new_state()

        def run_fused():
            s = box["s"]
            for b in chunks:
                s, m = fused(s, b, key)
            jax.block_until_ready(s)
            box["s"] = s

        run_fused()
        results[f"fused_k{k}"] = _rates(n, run_fused, args.repeats)
    return results


def bench_sharded(args):
    jax, jt, loss, new_state, batches = _setup(args)
    mesh = jt.make_mesh()
    key = jax.random.PRNGKey(1)
    n = args.steps
    step = jt.make_sharded_train_step(loss, mesh)
    data = batches(n)
    sharded = [jt.shard_batch(jax.tree.map(lambda x: x[i], data), mesh) for i in range(n)]
    box = {"s": jt.put_replicated(new_state(), mesh)}

    def run():
        s = box["s"]
        for b in sharded:
            s, m = step(s, b, key)
            # one step in flight at a time: with many queued programs the fake CPU devices'
            # all-reduce rendezvous wedged on an oversubscribed 2-core machine
            jax.block_until_ready(s)
        box["s"] = s

    run()
    return {"devices": jax.device_count(), **_rates(n, run, args.repeats)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200, help="optimizer steps per timing")
    p.add_argument("--batch", type=int, default=256, help="global batch size")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--fused", type=int, nargs="+", default=[10, 50], help="k values of the fused step")
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--platform", default="cpu")
    p.add_argument("--skip-sharded", action="store_true")
    p.add_argument("--skip-fused", action="store_true")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", args.platform)
    sys.path.insert(0, REPO)

    if args.worker is not None:
        print("RESULT " + json.dumps(bench_sharded(args)))
        return

    import jax

    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPU cores; "
          f"MLP width={args.width} depth={args.depth}, batch {args.batch}, {args.steps} steps per timing")
    if not args.skip_fused:
        fused = bench_fused(args)
        base = fused["single"]
        print("\nplain vs fused steps (one device): steps per wall-clock second | per CPU second")
        for name, r in fused.items():
            print(f"  {name:>10}: {r['wall']:8.1f} ({r['wall'] / base['wall']:4.2f}x) | "
                  f"{r['cpu']:8.1f} ({r['cpu'] / base['cpu']:4.2f}x)")

    if args.skip_sharded:
        return
    print(f"\nsharded step (jit over a mesh, global batch {args.batch} split over the devices): "
          "steps per wall-clock second | per CPU second")
    base = None
    for n in args.devices:
        env = dict(os.environ, JAX_PLATFORMS=args.platform, PYTHONPATH=REPO)
        if args.platform == "cpu":
            # a long collective timeout: on a busy machine the fake devices' threads can be
            # starved past XLA's default 40 s rendezvous limit, which aborts the process
            env["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={n} "
                                "--xla_cpu_collective_call_terminate_timeout_seconds=600")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n), "--steps", str(args.steps),
               "--batch", str(args.batch), "--width", str(args.width), "--depth", str(args.depth),
               "--repeats", str(args.repeats), "--platform", args.platform]
        if args.platform != "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(n))
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode or not lines:
            print(f"  {n} devices: failed\n{out.stderr[-2000:]}")
            continue
        res = json.loads(lines[-1][len("RESULT "):])
        base = base or res
        print(f"  {res['devices']} devices: {res['wall']:8.1f} ({res['wall'] / base['wall']:4.2f}x) | "
              f"{res['cpu']:8.1f} ({res['cpu'] / base['cpu']:4.2f}x)")


if __name__ == "__main__":
    main()
