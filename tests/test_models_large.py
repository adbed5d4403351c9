"""Attention kernel, DiT block scan and rematerialisation: same function, other execution."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflow.models import DiT
from jflow.models.dit import REMAT_POLICIES, stack_block_params
from jflow.models.layers import dot_product_attention

KW = dict(patch_size=2, hidden_size=16, depth=3, num_heads=2, time_features=8, num_classes=3)


def _explicit_attention(q, k, v):
    """softmax(q k^T / sqrt(d)) v written out, in float64 numpy."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", w, v)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_attention_equals_softmax_formula(dtype, tol):
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (2, 5, 3, 4), dtype) for i in range(3))
    out = dot_product_attention(q, k, v)
    assert out.shape == (2, 5, 3, 4) and out.dtype == dtype
    np.testing.assert_allclose(np.asarray(out, np.float64), _explicit_attention(q, k, v), atol=tol, rtol=tol)


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
