"""The FLOP accounting of ``benchmarks/profile_step.py`` against closed forms (2 * M * N * K per matmul)."""
import importlib.util
import os

import jax
import jax.numpy as jnp
import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "profile_step.py")


@pytest.fixture(scope="module")
def profile_step():
    spec = importlib.util.spec_from_file_location("profile_step", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dot_flops_of_a_two_layer_forward_and_its_gradient(profile_step):
    b, k, n, m = 32, 24, 16, 8

    def f(x, w1, w2):
        return jnp.sum(jnp.tanh(jnp.tanh(x @ w1) @ w2))

    args = (jnp.ones((b, k)), jnp.ones((k, n)), jnp.ones((n, m)))
    forward = profile_step.dot_flops(jax.jit(f).lower(*args).compile().as_text())
    assert sum(forward.values()) == 2 * b * k * n + 2 * b * n * m
    # gradient in all three arguments: the forward dots, plus for each layer one dot for the
    # weight gradient and one for the input gradient
    backward = profile_step.dot_flops(jax.jit(jax.grad(f, argnums=(0, 1, 2))).lower(*args).compile().as_text())
    assert sum(backward.values()) == 3 * (2 * b * k * n + 2 * b * n * m)
    # every count is keyed by an op the executor runs (a fusion or a plain dot), never by an
    # instruction nested inside a fused computation
    hlo = jax.jit(f).lower(*args).compile().as_text()
    entry = hlo[hlo.index("ENTRY"):]
    for name in forward:
        assert f"%{name} = " in entry, name


def test_dot_flops_counts_a_convolution(profile_step):
    x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))

    def f(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    flops = profile_step.dot_flops(jax.jit(f).lower(x, w).compile().as_text())
    # every output element sums over the 3x3 window and the 3 input channels
    assert sum(flops.values()) == 2 * (2 * 8 * 8 * 4) * (3 * 3 * 3)
