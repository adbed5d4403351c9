"""MLPs of ``jflow.models.mlp``: the parameter-count formulas of the docstrings, the plain MLP's
forward pass written out by hand, and the two Dense initialisations against their definitions."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflow.models import MLP, PlainMLP, count_params
from jflow.models.mlp import dense_init


def _shapes(model, d):
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((2, d)), jnp.zeros((2,)))


@pytest.mark.parametrize("width, depth, d", [(256, 4, 2), (16, 1, 3), (24, 3, 5)])
def test_plain_mlp_parameter_count(width, depth, d):
    expected = (d + 1) * width + width + (depth - 1) * (width**2 + width) + width * d + d
    assert count_params(_shapes(PlainMLP(width=width, depth=depth), d)) == expected
    # depth counts hidden layers: one Dense per hidden layer plus the output layer
    assert len(_shapes(PlainMLP(width=width, depth=depth), d)["params"]) == depth + 1


@pytest.mark.parametrize("width, depth, features, d", [(144, 2, 64, 2), (32, 3, 16, 3)])
def test_film_mlp_parameter_count(width, depth, features, d):
    expected = depth * (4 * width**2 + 6 * width) + width**2 + (features + 2 * d + 5) * width + d
    assert count_params(_shapes(MLP(width=width, depth=depth, time_features=features), d)) == expected


def test_plain_mlp_is_t_concatenated_to_x_then_dense_silu_layers():
    model = PlainMLP(width=8, depth=2)
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    t = jnp.linspace(0.0, 1.0, 5)
    params = model.init(jax.random.PRNGKey(0), x, t)
    p = params["params"]
    h = jnp.concatenate([x, t[:, None]], axis=1)
    for name in ("hidden_0", "hidden_1"):
        z = h @ p[name]["kernel"] + p[name]["bias"]
        h = z / (1.0 + jnp.exp(-z))
    expected = h @ p["output"]["kernel"] + p["output"]["bias"]
    np.testing.assert_allclose(model.apply(params, x, t), expected, rtol=1e-5, atol=1e-6)
    # a scalar t is broadcast over the batch
    np.testing.assert_allclose(model.apply(params, x, 0.5), model.apply(params, x, jnp.full((5,), 0.5)), rtol=1e-6)


def test_plain_mlp_rejects_bad_configuration_and_labels():
    x, t = jnp.zeros((2, 2)), jnp.zeros((2,))
    with pytest.raises(ValueError, match="initializer"):
        PlainMLP(initializer="he").init(jax.random.PRNGKey(0), x, t)
    with pytest.raises(ValueError, match="depth must be a Python int >= 1"):
        PlainMLP(depth=0).init(jax.random.PRNGKey(0), x, t)
    with pytest.raises(ValueError, match="unconditional"):
        PlainMLP(width=4, depth=1).init(jax.random.PRNGKey(0), x, t, jnp.zeros((2,), jnp.int32))


def test_torch_init_is_uniform_within_one_over_sqrt_fan_in_for_kernel_and_bias():
    fan_in, fan_out = 256, 512
    init = dense_init("torch", fan_in)
    bound = 1.0 / math.sqrt(fan_in)
    kernel = np.asarray(init["kernel_init"](jax.random.PRNGKey(0), (fan_in, fan_out)))
    bias = np.asarray(init["bias_init"](jax.random.PRNGKey(1), (fan_out,)))
    for w in (kernel, bias):
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.98 * bound
    # Unif(-b, b) has mean 0 and variance b^2 / 3 (kaiming_uniform with a = sqrt(5))
    assert abs(kernel.mean()) < 0.01 * bound
    np.testing.assert_allclose(kernel.var(), bound**2 / 3, rtol=0.03)
    assert abs(bias.mean()) < 0.1 * bound


def test_lecun_normal_init_has_variance_one_over_fan_in_and_zero_bias():
    init = dense_init("lecun_normal", 128)
    kernel = np.asarray(init["kernel_init"](jax.random.PRNGKey(0), (128, 512)))
    np.testing.assert_allclose(kernel.var(), 1.0 / 128, rtol=0.03)
    assert not np.any(np.asarray(init["bias_init"](jax.random.PRNGKey(1), (7,))))
    with pytest.raises(ValueError, match="dense initialisation"):
        dense_init("xavier", 3)
