"""Training-step throughput: plain vs fused steps, and the sharded step over 1/2/4/8 devices.

Usage (from the repository root)::

    python -m benchmarks.train                      # everything, CPU
    python -m benchmarks.train --steps 400 --batch 256 --width 64 --depth 2
    python -m benchmarks.train --skip-sharded       # only plain vs fused

Model: ``jflow.models.MLP`` trained with ``jflow.losses.make_loss`` (flow matching, CondOT
path) on 2-D Gaussian data, Adam. Reported: optimizer steps per second after compilation
(one warm-up call excluded), median of ``--repeats`` timings, per wall-clock second and per
CPU second (the steadier figure on a shared machine).

The sharded part runs one worker process per device count
(``python -m benchmarks.train --worker N``), because
``--xla_force_host_platform_device_count`` is read once when JAX starts; the global batch
is fixed (strong scaling). Fake CPU devices share the machine's cores, so on CPU this
measures the overhead of partitioning and collectives, not a speed-up; on a multi-GPU host
run with ``--platform gpu`` to use real devices. The sharded timing waits for each step
before dispatching the next (see :func:`bench_sharded`), so it includes one host round trip
per step, unlike the plain/fused timings. jax is imported inside the functions, after
``--platform`` has set ``JAX_PLATFORMS`` (read when JAX starts).
"""
from __future__ import annotations

import argparse
import os

from benchmarks import harness


def _setup(args):
    """``(loss, new_state, batches)`` for the MLP of ``args`` (jax imported after the platform is set)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jflow.train as jt
    from jflow.losses import make_loss
    from jflow.models import MLP
    from jflow.schedulers import LinearScheduler

    model = MLP(width=args.width, depth=args.depth)
    params = jax.device_get(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((2, 2)), jnp.zeros((2,))))
    loss = make_loss(model.apply, LinearScheduler())
    rng = np.random.default_rng(0)

    def new_state():  # a fresh copy: the donating steps consume the state's buffers
        return jt.create_train_state(jax.tree.map(jnp.asarray, params), optax.adam(1e-3))

    def batches(n):
        return {"x": (rng.standard_normal((n, args.batch, 2)) * 0.5 + 1.0).astype(np.float32)}

    return loss, new_state, batches


def _rates(n: int, timings: harness.Timings) -> dict:
    return {"wall": n / timings.median_wall, "cpu": n / timings.median_cpu}


def _run_steps(step, state, chunks, key):
    """A callable running ``step`` over every chunk from the latest state (the state is donated)."""
    import jax

    box = {"s": state}

    def run():
        s = box["s"]
        for b in chunks:
            s, _ = step(s, b, key)
        box["s"] = jax.block_until_ready(s)

    return run


def bench_fused(args) -> dict:
    """Steps/s of the plain step and of fused steps of every ``k`` in ``args.fused`` dividing ``args.steps``."""
    import jax

    import jflow.train as jt

    loss, new_state, batches = _setup(args)
    key, n = jax.random.PRNGKey(1), args.steps
    data = batches(n)
    singles = [jax.tree.map(lambda x: jax.device_put(x[i]), data) for i in range(n)]
    run = _run_steps(jt.make_train_step(loss), new_state(), singles, key)
    results = {"single": _rates(n, harness.time_calls(run, repeats=args.repeats))}
    for k in args.fused:
        if n % k:
            continue
        chunks = [jax.tree.map(lambda x: jax.device_put(x[i:i + k]), data) for i in range(0, n, k)]
        run = _run_steps(jt.make_fused_train_step(loss), new_state(), chunks, key)
        results[f"fused_k{k}"] = _rates(n, harness.time_calls(run, repeats=args.repeats))
    return results


def bench_sharded(args) -> dict:
    """Steps/s of ``make_sharded_train_step`` over every device of this process."""
    import jax

    import jflow.train as jt

    loss, new_state, batches = _setup(args)
    mesh = jt.make_mesh()
    key, n = jax.random.PRNGKey(1), args.steps
    step = jt.make_sharded_train_step(loss, mesh)
    data = batches(n)
    sharded = [jt.shard_batch(jax.tree.map(lambda x: x[i], data), mesh) for i in range(n)]
    box = {"s": jt.put_replicated(new_state(), mesh)}

    def run():
        s = box["s"]
        for b in sharded:
            s, _ = step(s, b, key)
            # one step in flight at a time: with many queued programs the fake CPU devices'
            # all-reduce rendezvous wedged on an oversubscribed 2-core machine
            jax.block_until_ready(s)
        box["s"] = s

    return {"devices": jax.device_count(), **_rates(n, harness.time_calls(run, repeats=args.repeats))}


def _worker_env(args, n: int) -> dict:
    env = {"JAX_PLATFORMS": args.platform}
    if args.platform == "cpu":
        # a long collective timeout: on a busy machine the fake devices' threads can be
        # starved past XLA's default 40 s rendezvous limit, which aborts the process
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n} --xla_cpu_collective_call_terminate_timeout_seconds=600"
    else:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(n))
    return env


def _print_fused(args) -> None:
    fused = bench_fused(args)
    base = fused["single"]
    print("\nplain vs fused steps (one device): steps per wall-clock second | per CPU second")
    for name, r in fused.items():
        print(f"  {name:>10}: {r['wall']:8.1f} ({r['wall'] / base['wall']:4.2f}x) | {r['cpu']:8.1f} ({r['cpu'] / base['cpu']:4.2f}x)")


def _print_sharded(args) -> None:
    print(f"\nsharded step (jit over a mesh, global batch {args.batch} split over the devices): "
          "steps per wall-clock second | per CPU second")
    base = None
    for n in args.devices:
        cmd = harness.module_command("benchmarks.train", "--worker", str(n), "--steps", str(args.steps), "--batch",
                                     str(args.batch), "--width", str(args.width), "--depth", str(args.depth),
                                     "--repeats", str(args.repeats), "--platform", args.platform)
        try:
            res = harness.run_worker(cmd, env=_worker_env(args, n), what=f"{n}-device worker")
        except RuntimeError as err:
            print(f"  {n} devices: {err}")
            continue
        base = base or res
        print(f"  {res['devices']} devices: {res['wall']:8.1f} ({res['wall'] / base['wall']:4.2f}x) | "
              f"{res['cpu']:8.1f} ({res['cpu'] / base['cpu']:4.2f}x)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    args = p.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", args.platform)
    if args.worker is not None:
        return harness.print_result(bench_sharded(args))
    import jax

    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPU cores; "
          f"MLP width={args.width} depth={args.depth}, batch {args.batch}, {args.steps} steps per timing")
    if not args.skip_fused:
        _print_fused(args)
    if not args.skip_sharded:
        _print_sharded(args)


if __name__ == "__main__":
    main()
