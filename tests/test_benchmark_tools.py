"""The shared benchmark harness (``benchmarks/harness.py``) against closed forms: FLOPs of matrix
multiplies (2 * M * N * K), quartiles of known lists, the warm-up and interleaving contracts, the
worker protocol; ``benchmarks.layers``' swap of the stock layers. Nothing here is timed."""
import sys

import jax
import jax.numpy as jnp
import pytest

from benchmarks import harness


def test_dot_flops_of_a_two_layer_forward_and_its_gradient():
    b, k, n, m = 32, 24, 16, 8

    def f(x, w1, w2):
        return jnp.sum(jnp.tanh(jnp.tanh(x @ w1) @ w2))

    args = (jnp.ones((b, k)), jnp.ones((k, n)), jnp.ones((n, m)))
    forward = harness.dot_flops(jax.jit(f).lower(*args).compile().as_text())
    assert sum(forward.values()) == 2 * b * k * n + 2 * b * n * m
    # gradient in all three arguments: the forward dots, plus for each layer one dot for the
    # weight gradient and one for the input gradient
    backward = harness.dot_flops(jax.jit(jax.grad(f, argnums=(0, 1, 2))).lower(*args).compile().as_text())
    assert sum(backward.values()) == 3 * (2 * b * k * n + 2 * b * n * m)
    # every count is keyed by an op the executor runs (a fusion or a plain dot), never by an
    # instruction nested inside a fused computation
    hlo = jax.jit(f).lower(*args).compile().as_text()
    entry = hlo[hlo.index("ENTRY"):]
    for name in forward:
        assert f"%{name} = " in entry, name


def test_dot_flops_counts_a_convolution():
    x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))

    def f(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    flops = harness.dot_flops(jax.jit(f).lower(x, w).compile().as_text())
    # every output element sums over the 3x3 window and the 3 input channels
    assert sum(flops.values()) == 2 * (2 * 8 * 8 * 4) * (3 * 3 * 3)


def test_xla_flops_of_a_matmul_is_2mnk():
    m, k, n = 48, 40, 24
    flops, lower_s, compile_s = harness.xla_flops(jax.jit(jnp.dot), jnp.ones((m, k)), jnp.ones((k, n)))
    assert flops == 2 * m * n * k
    assert lower_s >= 0 and compile_s >= 0


def test_quartiles_of_known_lists():
    assert harness.quartiles([3.0, 1.0, 2.0, 5.0, 4.0]) == (2.0, 3.0, 4.0)
    # linear interpolation between order statistics: positions 0.75, 1.5, 2.25 of [1, 2, 3, 4]
    assert harness.quartiles([4, 1, 3, 2]) == (1.75, 2.5, 3.25)
    assert harness.quartiles([7.0]) == (7.0, 7.0, 7.0)
    with pytest.raises(ValueError, match="at least one repeat"):
        harness.quartiles([])


def test_time_calls_runs_the_warmup_untimed():
    calls = []
    timings = harness.time_calls(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5
    assert len(timings.wall) == len(timings.cpu) == 3
    assert all(t >= 0 for t in timings.wall + timings.cpu)
    with pytest.raises(ValueError, match="repeats >= 1"):
        harness.time_calls(lambda: None, repeats=0)


def test_measure_interleaved_alternates_the_order_and_runs_setup_first():
    order = []
    runners = [harness.Runner(name, "jflow", lambda name=name: order.append(name), 10, "steps/s",
                              setup=lambda name=name: order.append("setup " + name)) for name in "ab"]
    harness.measure_interleaved(runners, 3)
    calls = [x for x in order if not x.startswith("setup")]
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert order[:2] == ["setup a", "a"]
    assert all(len(r.rates) == 3 and all(rate > 0 for rate in r.rates) for r in runners)


def test_calibrate_scales_the_repetitions_to_the_target_duration():
    seen = []
    assert harness.calibrate(seen.append, seconds=0.0) == 1  # never fewer than one repetition
    assert seen == [1]


def test_run_worker_returns_the_last_result_line_and_reports_failures():
    script = "from benchmarks import harness; print('noise'); harness.print_result({'a': 1}); harness.print_result([2])"
    assert harness.run_worker([sys.executable, "-c", script]) == [2]
    with pytest.raises(RuntimeError, match="exit code 3"):
        harness.run_worker([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"])


def test_stock_layers_swaps_in_flax_groupnorm_and_jax_attention_and_restores_them():
    import flax.linen as nn

    import jflow.models.layers as layers
    import jflow.models.unet as unet
    from benchmarks.layers import stock_layers
    from jflow.models import UNet

    model = UNet(base_channels=4, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,),
                 mid_attention=False, num_heads=2, norm_groups=2)
    x, t = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1)), jnp.array([0.3, 0.7])
    params = model.init(jax.random.PRNGKey(1), x, t)
    params = jax.tree_util.tree_map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
    ours = model.apply(params, x, t)
    with stock_layers():
        assert unet.GroupNorm is nn.GroupNorm
        assert layers.dot_product_attention is jax.nn.dot_product_attention
        stock = model.apply(params, x, t)  # same parameter tree, other implementations
    assert unet.GroupNorm is layers.GroupNorm
    assert layers.dot_product_attention is not jax.nn.dot_product_attention
    assert jnp.max(jnp.abs(stock - ours)) < 1e-4 * (1.0 + jnp.max(jnp.abs(ours)))
