"""Time ``jflow.integrators.odeint`` (one compiled ``lax.scan``) against a Python loop of jitted Euler steps.

Both integrate the same field with the same number of Euler steps; the loop dispatches one
jitted step per iteration from Python (the pattern ``odeint`` replaces). Compilation is
excluded (one warm-up call each); the table reports the median wall time over repeats
and the ratio loop / scan.

    python -m benchmarks.odeint                      # defaults: 100 steps, 1k and 100k points
    python -m benchmarks.odeint --steps 50 --sizes 1000 --repeats 7 --field mixture
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from benchmarks import harness
from jflow import integrators, marginals, schedulers


def mlp_field(key, width: int = 64):
    """A 2-D MLP-like vector field u(x, t) = W3 tanh(W2 tanh(W1 [x, t])) with fixed random weights."""
    k1, k2, k3 = jax.random.split(key, 3)
    w1 = jax.random.normal(k1, (3, width)) / jnp.sqrt(3.0)
    w2 = jax.random.normal(k2, (width, width)) / jnp.sqrt(width)
    w3 = jax.random.normal(k3, (width, 2)) / jnp.sqrt(width)

    def u(x, t):
        h = jnp.concatenate([x, jnp.broadcast_to(t, x.shape[:1] + (1,)).astype(x.dtype)], axis=1)
        return jnp.tanh(jnp.tanh(h @ w1) @ w2) @ w3

    return u


def mixture_field():
    """The exact marginal velocity of a 3-component 2-D Gaussian mixture (CondOT path)."""
    gm = marginals.GaussianMixture(
        jnp.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]]), jnp.array([0.4, 0.6, 0.3]), jnp.array([0.5, 0.3, 0.2])
    )
    sched = schedulers.LinearScheduler()
    return lambda x, t: marginals.marginal_velocity(sched, gm, x, t)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.odeint", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--field", choices=["mlp", "mixture", "both"], default="both")
    args = parser.parse_args(argv)

    fields = {"mlp": mlp_field(jax.random.PRNGKey(0)), "mixture": mixture_field()}
    names = list(fields) if args.field == "both" else [args.field]
    ts = integrators.uniform_grid(args.steps, dtype=jnp.float32)

    print(f"backend: {jax.default_backend()}, devices: {jax.devices()[0].device_kind}, steps: {args.steps}, "
          f"median of {args.repeats}")
    print(f"{'field':>8} {'points':>8} {'odeint scan (ms)':>17} {'python loop (ms)':>17} {'loop / scan':>12}")
    for name in names:
        u = fields[name]
        scan = jax.jit(lambda x0: integrators.odeint(u, x0, ts, method="euler"))
        step = jax.jit(lambda x, t, h: x + h * u(x, t))

        t_dev = [ts[i] for i in range(args.steps)]  # device scalars prepared outside the timed loop
        h_dev = [ts[i + 1] - ts[i] for i in range(args.steps)]

        def loop(x0):
            x = x0
            for t, h in zip(t_dev, h_dev):
                x = step(x, t, h)
            return x

        for n in args.sizes:
            x0 = jax.random.normal(jax.random.PRNGKey(1), (n, 2))
            # one warm-up call each (compilation), then the median of the timed calls
            t_scan = harness.time_calls(lambda: jax.block_until_ready(scan(x0)), repeats=args.repeats).median_wall
            t_loop = harness.time_calls(lambda: jax.block_until_ready(loop(x0)), repeats=args.repeats).median_wall
            assert jnp.allclose(scan(x0), loop(x0), atol=1e-4), "scan and loop disagree"
            print(f"{name:>8} {n:>8} {1e3 * t_scan:>17.2f} {1e3 * t_loop:>17.2f} {t_loop / t_scan:>12.2f}")


if __name__ == "__main__":
    main()
