"""Attention kernel, group normalisation, DiT block scan and rematerialisation: same function, other execution."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflow.models import DiT
from jflow.models.dit import REMAT_POLICIES, stack_block_params
from jflow.models.layers import GroupNorm, _heads_first_attention, dot_product_attention

KW = dict(patch_size=2, hidden_size=16, depth=3, num_heads=2, time_features=8, num_classes=3)


def _explicit_attention(q, k, v):
    """softmax(q k^T / sqrt(d)) v written out, in float64 numpy."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", w, v)


ATTENTION_PATHS = {
    "dispatch": dot_product_attention,  # the CPU path here, jax.nn's on accelerators
    "heads_first": _heads_first_attention,
    "jax.nn": jax.nn.dot_product_attention,
}


@pytest.mark.parametrize("path", sorted(ATTENTION_PATHS))
@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_attention_equals_softmax_formula(path, dtype, tol):
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (2, 5, 3, 4), dtype) for i in range(3))
    out = ATTENTION_PATHS[path](q, k, v)
    assert out.shape == (2, 5, 3, 4) and out.dtype == dtype
    np.testing.assert_allclose(np.asarray(out, np.float64), _explicit_attention(q, k, v), atol=tol, rtol=tol)


def test_attention_paths_have_equal_gradients():
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (2, 7, 2, 8)) for i in range(3))
    w = jax.random.normal(jax.random.PRNGKey(9), q.shape)

    def grads(fn):
        return jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) * w), argnums=(0, 1, 2))(q, k, v)

    for ours, ref in zip(grads(_heads_first_attention), grads(jax.nn.dot_product_attention)):
        np.testing.assert_allclose(ours, ref, atol=2e-5, rtol=1e-5)


def _perturbed_group_norm_params(shape, num_groups):
    params = nn.GroupNorm(num_groups).init(jax.random.PRNGKey(0), jnp.zeros(shape))
    rng = np.random.default_rng(1)  # scale 1 and bias 0 would hide a mix-up of the two
    return jax.tree_util.tree_map(lambda a: a + 0.3 * rng.standard_normal(a.shape).astype(np.float32), params)


@pytest.mark.parametrize("shape,groups", [((3, 6, 5, 8), 4), ((2, 7, 12), 3), ((4, 16), 2)])
def test_group_norm_equals_flax_value_and_gradients(shape, groups):
    params = _perturbed_group_norm_params(shape, groups)
    # an offset mean and a non-unit spread, differing per channel
    x = 2.0 + jax.random.normal(jax.random.PRNGKey(2), shape) * jnp.linspace(0.5, 3.0, shape[-1])
    w = jax.random.normal(jax.random.PRNGKey(3), shape)
    ours, ref = GroupNorm(groups), nn.GroupNorm(groups)
    np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), atol=2e-5, rtol=1e-5)

    def grads(module):
        return jax.grad(lambda p, x: jnp.sum(jnp.tanh(module.apply(p, x)) * w), argnums=(0, 1))(params, x)

    for a, b in zip(jax.tree_util.tree_leaves(grads(ours)), jax.tree_util.tree_leaves(grads(ref))):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
    # each (example, group) is normalised: with scale 1 and bias 0, mean 0 and variance 1
    plain = GroupNorm(groups).init(jax.random.PRNGKey(0), x)
    y = np.asarray(GroupNorm(groups).apply(plain, x), np.float64)
    per_group = np.moveaxis(y.reshape(shape[0], -1, groups, shape[-1] // groups), 2, 1).reshape(shape[0], groups, -1)
    np.testing.assert_allclose(per_group.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(per_group.var(-1), 1.0, atol=1e-4)


def test_group_norm_half_precision_and_bad_groups():
    shape = (2, 4, 4, 8)
    params = _perturbed_group_norm_params(shape, 4)
    x = 3.0 + jax.random.normal(jax.random.PRNGKey(4), shape)
    out = GroupNorm(4, dtype=jnp.bfloat16).apply(params, x.astype(jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), nn.GroupNorm(4).apply(params, x), atol=5e-2)
    with pytest.raises(ValueError, match="num_groups=3 must divide"):
        GroupNorm(3).init(jax.random.PRNGKey(0), x)


@pytest.fixture(scope="module")
def unrolled():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))
    t, y = jnp.array([0.2, 0.7]), jnp.array([1, 2])
    params = DiT(**KW).init(jax.random.PRNGKey(1), x, t, y)
    rng = np.random.default_rng(0)  # perturb: adaLN-Zero blocks start as the identity
    params = jax.tree_util.tree_map(lambda a: a + 0.1 * rng.standard_normal(a.shape).astype(np.float32), params)
    return params, (x, t, y)


def _loss(model, params, inputs):
    return jnp.sum(model.apply(params, *inputs) ** 2)


def test_scanned_blocks_compute_the_unrolled_function(unrolled):
    params, inputs = unrolled
    stacked = stack_block_params(params, KW["depth"])
    fresh = DiT(**KW, scan_blocks=True).init(jax.random.PRNGKey(1), *inputs)
    assert jax.tree_util.tree_structure(fresh) == jax.tree_util.tree_structure(stacked)
    assert stacked["params"]["blocks"]["block"]["adaln"]["kernel"].shape[0] == KW["depth"]
    out = DiT(**KW).apply(params, *inputs)
    np.testing.assert_allclose(DiT(**KW, scan_blocks=True).apply(stacked, *inputs), out, atol=1e-5)


@pytest.mark.parametrize("scan", [False, True])
def test_remat_keeps_value_and_gradient(unrolled, scan):
    params, inputs = unrolled
    if scan:
        params = stack_block_params(params, KW["depth"])
    base = DiT(**KW, scan_blocks=scan)
    value, grad = jax.value_and_grad(_loss, argnums=1)(base, params, inputs)
    for policy in ("nothing_saveable", "dots_saveable"):
        v, g = jax.value_and_grad(_loss, argnums=1)(DiT(**KW, scan_blocks=scan, remat=policy), params, inputs)
        np.testing.assert_allclose(v, value, rtol=1e-6)
        for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(grad)):
            np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_remat_policy_names_are_checked(unrolled):
    params, inputs = unrolled
    assert "nothing_saveable" in REMAT_POLICIES
    with pytest.raises(ValueError, match="unknown remat policy 'everything'.*nothing_saveable"):
        DiT(**KW, remat="everything").apply(params, *inputs)
