"""One accelerator check, one command: bf16 train-step throughput and MFU, sampling throughput,
and the sharded step's agreement with the single-device step.

    python -m benchmarks.device_check --out device_check.json          # on a GPU/TPU, < 5 min
    python -m benchmarks.device_check --tiny --out /tmp/tiny.json      # any machine, seconds (tested)

For each model (``dit_s2`` at batch 256 and ``unet_cifar10`` at batch 128, CIFAR-10 shape,
class-conditional; ``--tiny`` uses two tiny models at 8x8):

- **train**: one jitted flow matching step (CondOT path, Adam, EMA, ``compute_dtype=bfloat16``,
  float32 parameters and optimizer state), timed over ``--steps`` calls after warm-up; the
  FLOPs of one step are XLA's own count of the compiled program (``cost_analysis``), so
  ``MFU = flops / step time / peak``. The peak is the device's dense bf16 figure where it is
  known (``PEAK_BF16``) and, always, a measured large bf16 matrix multiply.
- **sample**: images per second of a Heun solve with 50 network evaluations (25 steps) of
  the bf16 model, batch ``--sample_batch``.
- **sharded**: the data-parallel step (``make_sharded_train_step`` over every local device)
  against the single-device step on the same global batch and key: the largest parameter
  difference after one step (float32 compute). With one device this checks the sharded code
  path only.

Writes one JSON file with every figure and the device description, and prints a table.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jflow import integrators, losses, schedulers, train
from jflow.models import count_params, get_model

# Dense bf16 peak of one chip, FLOP/s (vendor figures without sparsity).
PEAK_BF16 = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "TPU v4": 275e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
}


class Case(NamedTuple):
    model: str
    overrides: dict
    input_shape: tuple
    batch: int


FULL = (
    Case("dit_s2", {}, (32, 32, 3), 256),
    Case("unet_cifar10", {"dropout": 0.0}, (32, 32, 3), 128),
)
TINY = (
    Case("dit", dict(patch_size=2, hidden_size=32, depth=2, num_heads=2, num_classes=10), (8, 8, 1), 8),
    Case(
        "unet",
        dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,), num_heads=2,
             norm_groups=4, num_classes=10),
        (8, 8, 1),
        8,
    ),
)


def spec_peak(device) -> float | None:
    """The dense bf16 peak of ``device`` from :data:`PEAK_BF16`, or ``None`` when unknown."""
    kind = device.device_kind
    for name, peak in PEAK_BF16.items():
        if name.lower() in kind.lower():
            return peak
    return None


def seconds_per_call(fn: Callable, *args, repeats: int) -> float:
    """Median wall time of ``fn(*args)`` over ``repeats`` calls after one warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measured_peak(n: int, repeats: int) -> float:
    """FLOP/s of an ``n x n x n`` bf16 matrix multiply (``2 n^3`` FLOPs)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.bfloat16)
    matmul = jax.jit(lambda a, b: a @ b)
    return 2.0 * n**3 / seconds_per_call(matmul, a, a, repeats=repeats)


def _setup(case: Case, compute_dtype):
    model = get_model(case.model, **case.overrides)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((case.batch,) + case.input_shape, dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 10, case.batch), jnp.int32)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x, jnp.zeros(case.batch), y)
    loss_fn = losses.make_loss(model.apply, schedulers.LinearScheduler())
    state = train.create_train_state(params, train.make_optimizer(1e-4, name="adam"), ema_decay=0.999)
    step = train.make_train_step(loss_fn, ema_decay=0.999, compute_dtype=compute_dtype, donate=False)
    return model, state, step, {"x": x, "y": y}


def check_train(case: Case, steps: int) -> dict:
    """Step time, XLA FLOPs per step and parameters of the bf16 train step."""
    model, state, step, batch = _setup(case, jnp.bfloat16)
    key = jax.random.PRNGKey(1)
    flops = step.lower(state, batch, key).compile().cost_analysis()
    flops = flops[0] if isinstance(flops, (list, tuple)) else flops
    seconds = seconds_per_call(step, state, batch, key, repeats=steps)
    return {
        "params": count_params(state.params),
        "batch": case.batch,
        "step_s": seconds,
        "steps_per_s": 1.0 / seconds,
        "flops_per_step": float(flops.get("flops", float("nan"))),
    }


def check_sampling(case: Case, batch: int, nfe: int) -> dict:
    """Images per second of a Heun solve with ``nfe`` network evaluations of the bf16 model."""
    model = get_model(case.model, **case.overrides, dtype=jnp.bfloat16)
    x0 = jax.random.normal(jax.random.PRNGKey(2), (batch,) + case.input_shape)
    y = jnp.arange(batch) % 10
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x0, jnp.zeros(batch), y)
    grid = integrators.uniform_grid(nfe // integrators.num_evals("heun", 1))

    @jax.jit
    def sample(params, x0, y):
        def field(x, t):
            return model.apply(params, x, jnp.full((x.shape[0],), t), y)

        return integrators.odeint(field, x0, grid, method="heun")

    seconds = seconds_per_call(sample, params, x0, y, repeats=2)
    return {"batch": batch, "nfe": integrators.num_evals("heun", grid), "images_per_s": batch / seconds}


def check_sharded(case: Case) -> dict:
    """Largest parameter difference between the sharded and the single-device step (float32)."""
    _, state, step, batch = _setup(case, None)
    mesh = train.make_mesh()
    n = mesh.devices.size
    batch = {k: v[: (case.batch // n) * n] for k, v in batch.items()}
    sharded = train.make_sharded_train_step(
        losses.make_loss(get_model(case.model, **case.overrides).apply, schedulers.LinearScheduler()),
        mesh, ema_decay=0.999, donate=False,
    )
    key = jax.random.PRNGKey(3)
    single, _ = step(state, batch, key)
    multi, _ = sharded(train.put_replicated(state, mesh), train.shard_batch(batch, mesh), key)
    diffs = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), single.params, multi.params)
    return {"devices": n, "max_param_diff": max(jax.tree_util.tree_leaves(diffs))}


def run(cases, tiny: bool, steps: int, sample_batch: int, nfe: int) -> dict:
    device = jax.devices()[0]
    peak = measured_peak(256 if tiny else 8192, repeats=3)
    out = {
        "device": f"{device.platform}: {device.device_kind} x {jax.device_count()}",
        "jax": jax.__version__,
        "peak_bf16_spec": spec_peak(device),
        "peak_bf16_measured": peak,
        "models": {},
    }
    for case in cases:
        result = {"train": check_train(case, steps)}
        step_rate = result["train"]["flops_per_step"] * result["train"]["steps_per_s"]
        result["train"]["mfu_measured_peak"] = step_rate / peak
        if out["peak_bf16_spec"]:
            result["train"]["mfu_spec_peak"] = step_rate / out["peak_bf16_spec"]
        result["sample"] = check_sampling(case, sample_batch, nfe)
        result["sharded"] = check_sharded(case)
        out["models"][case.model] = result
        print(json.dumps({case.model: result}), flush=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models on any device (seconds)")
    parser.add_argument("--steps", type=int, default=None, help="timed train steps (default 20, tiny 2)")
    parser.add_argument("--sample_batch", type=int, default=None, help="default 256, tiny 4")
    parser.add_argument("--nfe", type=int, default=50, help="network evaluations of the Heun sampler")
    parser.add_argument("--models", default=None, help="comma-separated subset of the models (default: all)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    cases = TINY if args.tiny else FULL
    if args.models:
        wanted = args.models.split(",")
        unknown = sorted(set(wanted) - {c.model for c in cases})
        if unknown:
            parser.error(f"unknown model(s) {unknown}; choose from {[c.model for c in cases]}")
        cases = tuple(c for c in cases if c.model in wanted)
    if args.nfe < 2 or args.nfe % 2:
        parser.error(f"--nfe must be an even number >= 2 (Heun evaluates the network twice a step); got {args.nfe}")
    steps = args.steps or (2 if args.tiny else 20)
    sample_batch = args.sample_batch or (4 if args.tiny else 256)
    results = run(cases, args.tiny, steps, sample_batch, args.nfe)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
