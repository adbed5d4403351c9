"""jflow's CPU formulations of group normalisation and attention against the stock ones.

    python -m benchmarks.layers                 # from the repository root
    python -m benchmarks.layers --repeats 9 --no-steps

Two layers of :mod:`jflow.models.layers` compute the same function as a stock JAX/flax layer
in a form that XLA:CPU runs faster (``tests/test_models_large.py`` checks values and
gradients against the stock layers):

- :class:`~jflow.models.layers.GroupNorm` against :class:`flax.linen.GroupNorm` (the same
  parameters), followed by SiLU as in the U-Net, on ``(16, 28, 28, 64)`` with 32 groups
  (the ``unet_mnist`` level-0 size at batch 16);
- :func:`~jflow.models.layers.dot_product_attention` (on CPU: heads moved before the tokens)
  against :func:`jax.nn.dot_product_attention`, on ``(16, 196, 4, 32)`` (``dit_tiny`` at
  batch 16).

Each pair is timed forward and forward + gradient, jitted, interleaved (``--repeats``). Then,
unless ``--no-steps``, the whole U-Net (``unet_mnist``) and DiT (``dit_tiny``) flow matching
train steps at batch 16 are timed with the current layers against the same step built with
the stock layers swapped in: the step that ``python -m benchmarks.peers --parts unet dit``
times, so the gain there is the gain of these two rewrites. Ratios are medians of
per-repeat ratios (current / stock, higher is faster).
"""
from __future__ import annotations

import argparse
import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import jflow.models.layers as layers
import jflow.models.unet as unet
import jflow.train as jt
from benchmarks import harness
from jflow.losses import make_loss
from jflow.models import get_config, get_model
from jflow.schedulers import LinearScheduler


def _timed(name: str, fn, args, seconds: float) -> harness.Runner:
    jax.block_until_ready(fn(*args))  # compile

    def run(n):
        for _ in range(n):
            out = fn(*args)
        jax.block_until_ready(out)

    n = harness.calibrate(run, seconds)
    return harness.Runner(name, "jflow", lambda: run(n), n, "calls/s")


def layer_pairs(seconds: float) -> list[tuple[str, harness.Runner, harness.Runner]]:
    """``(label, current, stock)`` runners of each layer, forward and forward + gradient."""
    x = 0.5 + 2.0 * jax.random.normal(jax.random.PRNGKey(0), (16, 28, 28, 64))
    params = nn.GroupNorm(32).init(jax.random.PRNGKey(1), x)
    qkv = jax.random.normal(jax.random.PRNGKey(2), (3, 16, 196, 4, 32))
    cases = {
        "GroupNorm + SiLU (16, 28, 28, 64), 32 groups": (
            lambda p, x: nn.silu(layers.GroupNorm(32).apply(p, x)),
            lambda p, x: nn.silu(nn.GroupNorm(32).apply(p, x)),
            (params, x),
        ),
        "attention (16, 196, 4, 32)": (
            lambda qkv: layers.dot_product_attention(*qkv),
            lambda qkv: jax.nn.dot_product_attention(*qkv),
            (qkv,),
        ),
    }
    pairs = []
    for label, (ours, stock, args) in cases.items():
        for how in ("forward", "forward + gradient"):
            if how == "forward":
                f, g = jax.jit(ours), jax.jit(stock)
            else:  # gradient of a weighted sum with respect to every input
                w = jax.random.normal(jax.random.PRNGKey(3), jax.eval_shape(ours, *args).shape)
                argnums = tuple(range(len(args)))
                f = jax.jit(jax.grad(lambda *a, fn=ours: jnp.sum(fn(*a) * w), argnums=argnums))
                g = jax.jit(jax.grad(lambda *a, fn=stock: jnp.sum(fn(*a) * w), argnums=argnums))
            pairs.append((f"{label}, {how}", _timed("jflow", f, args, seconds), _timed("stock", g, args, seconds)))
    return pairs


@contextlib.contextmanager
def stock_layers():
    """Build models with flax's GroupNorm and ``jax.nn.dot_product_attention`` in place of jflow's."""
    saved = unet.GroupNorm, layers.dot_product_attention
    unet.GroupNorm = nn.GroupNorm
    layers.dot_product_attention = jax.nn.dot_product_attention
    try:
        yield
    finally:
        unet.GroupNorm, layers.dot_product_attention = saved


def _step_runner(name: str, config: str, stock: bool, seconds: float) -> harness.Runner:
    """One flow matching train step (Adam, batch 16), compiled under the chosen layers."""
    shape = tuple(get_config(config).input_shape)
    batch = {"x": jax.random.normal(jax.random.PRNGKey(1), (16, *shape)),
             "y": jax.random.randint(jax.random.PRNGKey(2), (16,), 0, 10)}
    with stock_layers() if stock else contextlib.nullcontext():
        model = get_model(config, dropout=0.0)
        params = jax.jit(model.init)(jax.random.PRNGKey(0), batch["x"][:1], jnp.zeros((1,)), batch["y"][:1])
        step = jt.make_train_step(make_loss(model.apply, LinearScheduler(), time_bins=0))
        box = {"s": jt.create_train_state(params, optax.adam(1e-3))}
        box["s"], _ = step(box["s"], batch, jax.random.PRNGKey(3))  # traced and compiled here
    jax.block_until_ready(box["s"])

    def run(n):
        s = box["s"]
        for _ in range(n):
            s, _ = step(s, batch, jax.random.PRNGKey(3))
        box["s"] = jax.block_until_ready(s)

    n = harness.calibrate(run, seconds)
    return harness.Runner(name, "jflow", lambda: run(n), n, "steps/s")


def _row(label: str, ours: harness.Runner, stock: harness.Runner) -> str:
    ratio = harness.quartiles([a / b for a, b in zip(ours.rates, stock.rates)])
    ms_ours, ms_stock = (1e3 / harness.quartiles(r.rates)[1] for r in (ours, stock))
    return f"| {label} | {ms_ours:.2f} | {ms_stock:.2f} | {ratio[1]:.2f}x [{ratio[0]:.2f}-{ratio[2]:.2f}] |"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.layers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7, help="interleaved repeats")
    p.add_argument("--seconds", type=float, default=0.5, help="length of one timed repeat")
    p.add_argument("--no-steps", action="store_true", help="time the layers only, not the U-Net and DiT steps")
    args = p.parse_args(argv)
    if jax.default_backend() != "cpu":
        print(f"note: backend {jax.default_backend()}: jflow's attention delegates to jax.nn's there")
    rows = []
    for label, ours, stock in layer_pairs(args.seconds):
        harness.measure_interleaved([ours, stock], args.repeats)
        rows.append(_row(label, ours, stock))
    if not args.no_steps:
        for label, config in (("U-Net train step (unet_mnist, batch 16)", "unet_mnist"),
                              ("DiT train step (dit_tiny, batch 16)", "dit_tiny")):
            ours, stock = (_step_runner(n, config, n == "stock", args.seconds) for n in ("jflow", "stock"))
            harness.measure_interleaved([ours, stock], args.repeats)
            rows.append(_row(label, ours, stock))
    print(f"jax {jax.__version__}, {args.repeats} interleaved repeats, load {harness.load_now()}")
    print("| case | jflow ms (median) | stock ms (median) | jflow speed-up [IQR] |\n|---|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
