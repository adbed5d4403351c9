"""``jflow.train.make_optimizer``'s defaults against optax's own optimizers, update for update."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jflow.train as jt


def _updates(tx, steps=3):
    """Parameters after ``steps`` updates of ``tx`` with fixed pseudo-random gradients."""
    params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.array([0.5, -2.0])}
    state = tx.init(params)
    for i in range(steps):
        grads = jax.tree.map(lambda p, i=i: jax.random.normal(jax.random.PRNGKey(i), p.shape), params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def _assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_default_optimizer_is_plain_adam():
    # the optimizer of the lectures' and the PyTorch libraries' examples: no weight decay
    _assert_same(_updates(jt.make_optimizer(1e-3)), _updates(optax.adam(1e-3)))
    _assert_same(_updates(jt.make_optimizer()), _updates(optax.adam(1e-3, b1=0.9, b2=0.999, eps=1e-8)))


def test_adamw_decays_by_default_and_differs_from_adam():
    adamw = _updates(jt.make_optimizer(1e-2, name="adamw"))
    _assert_same(adamw, _updates(optax.adamw(1e-2, weight_decay=1e-4)))
    _assert_same(_updates(jt.make_optimizer(1e-2, name="adamw", weight_decay=0.1)),
                 _updates(optax.adamw(1e-2, weight_decay=0.1)))
    assert not np.allclose(adamw["w"], _updates(jt.make_optimizer(1e-2))["w"], rtol=0, atol=1e-7)


def test_weight_decay_needs_adamw():
    with pytest.raises(ValueError, match="needs name='adamw'"):
        jt.make_optimizer(1e-3, weight_decay=1e-2)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        jt.make_optimizer(1e-3, name="adamw", weight_decay=-1.0)
    _assert_same(_updates(jt.make_optimizer(1e-3, weight_decay=0.0)), _updates(optax.adam(1e-3)))
