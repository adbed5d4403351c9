"""Parameter count and forward / forward+backward time of every named model configuration.

Each configuration of ``jflow.models.CONFIGS`` is built with ``get_model(name)``, given
random float32 parameters of the right shapes (values do not change the timing; this skips
the slow-to-compile initialisers), and timed at its input shape with

- forward:          ``jit(model.apply)(params, x, t, y)``
- forward+backward: ``jit(grad(mean(model.apply(params, x, t, y) ** 2)))`` w.r.t. the parameters

(``train=False``: no dropout). Each function is compiled and run once (warm-up, reported as
compile time), then run ``--repeats`` times with ``block_until_ready``; the median is reported.

    python -m benchmarks.models --out benchmarks/results/models_cpu.md
    python -m benchmarks.models --configs unet_cifar10 --batch 4 --repeats 3 --out /tmp/cifar.md

Prints a Markdown table and writes it (with the device and load average) to ``--out``.
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness
from jflow.models import CONFIGS, count_params, get_model

# batch sizes that keep each configuration around a minute on a 2-core CPU
DEFAULT_BATCH = {
    "mlp_2d": 1024,
    "unet_digits": 32,
    "unet_mnist": 16,
    "unet_cifar10": 4,
    "dit_tiny": 16,
    "dit_s2": 4,
    "dit_b2": 2,
}


def random_params(model, x, t, y, seed=0):
    """Parameters with the structure of ``model.init`` and N(0, 0.02^2) values (numpy, no compilation)."""
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, t, y)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(0.02 * rng.standard_normal(s.shape, dtype=np.float32)), abstract
    )


def _time(fn, args, repeats):
    """``(seconds of the first call, median seconds of the next repeats)``."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - start
    timings = harness.time_calls(lambda: jax.block_until_ready(fn(*args)), repeats=repeats, warmup=0)
    return compile_s, timings.median_wall


def bench(name, batch, repeats, dtype):
    cfg = CONFIGS[name]
    model = get_model(name, dtype=dtype)
    key_x, key_t = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(key_x, (batch,) + cfg.input_shape)
    t = jax.random.uniform(key_t, (batch,))
    y = None if model.num_classes is None else jnp.arange(batch) % model.num_classes
    params = random_params(model, x, t, y)

    forward = jax.jit(model.apply)
    backward = jax.jit(jax.grad(lambda p, x, t, y: jnp.mean(model.apply(p, x, t, y) ** 2)))
    fwd_compile, fwd = _time(forward, (params, x, t, y), repeats)
    bwd_compile, bwd = _time(backward, (params, x, t, y), repeats)
    return {
        "name": name,
        "params": count_params(params),
        "input": "x".join(map(str, cfg.input_shape)),
        "batch": batch,
        "fwd_ms": 1e3 * fwd,
        "bwd_ms": 1e3 * bwd,
        "compile_s": fwd_compile + bwd_compile,
    }


def to_markdown(rows, header):
    lines = header + [
        "",
        "| config | parameters | input | batch | forward (ms) | fwd+bwd (ms) | fwd+bwd per example (ms) | compile (s) |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['params']:,} | {r['input']} | {r['batch']} | {r['fwd_ms']:.1f} | "
            f"{r['bwd_ms']:.1f} | {r['bwd_ms'] / r['batch']:.2f} | {r['compile_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batch", type=int, default=None, help="batch size for every config (default: per config)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--out", required=True, help="Markdown file to write")
    args = parser.parse_args(argv)
    if args.batch is not None and args.batch < 1:
        parser.error("--batch must be >= 1")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    device = jax.devices()[0]
    header = [
        f"Device: {device.platform} ({device.device_kind}), {os.cpu_count()} CPU cores visible, "
        f"jax {jax.__version__}; compute dtype {args.dtype}, float32 parameters; "
        f"median of {args.repeats} runs after one warm-up run.",
        f"Load average at start (other processes on this machine): {harness.load_now()[0]:.1f}.",
    ]
    rows = []
    for name in args.configs:
        batch = args.batch or DEFAULT_BATCH[name]
        rows.append(bench(name, batch, args.repeats, getattr(jnp, args.dtype)))
        print(to_markdown(rows[-1:], [])[1:].splitlines()[-1], flush=True)
    table = to_markdown(rows, header)
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(table)


if __name__ == "__main__":
    main()
