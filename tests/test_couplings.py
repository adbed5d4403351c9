"""Couplings: exact minibatch OT equals scipy's assignment, entropic OT tends to it as epsilon
shrinks (and to the product as it grows), sampled pairs follow the plan, OT shortens pairs,
class-conditional couplings never cross labels, jit/vmap over seeds, and the make_loss hook
(x0 in the batch, a coupling, Brownian-bridge path noise)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from jflow import couplings as C
from jflow import paths as P
from jflow import schedulers as S
from jflow.losses import make_loss, sample_time

_rng = np.random.default_rng(0)


def _points(b, d=2, shift=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(b, d)), rng.normal(size=(b, d)) + shift


def _sq_cost(x0, x1):
    """Squared distances written out in numpy (independent of the library)."""
    a, b = np.reshape(x0, (len(x0), -1)), np.reshape(x1, (len(x1), -1))
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def _source_index(x0_new, x0):
    """For each output row, the index of the row of x0 it copies."""
    match = (np.asarray(x0_new)[:, None] == np.asarray(x0)[None]).reshape(len(x0_new), len(x0), -1).all(-1)
    assert match.any(1).all()
    return match.argmax(1)


def _scipy_plan(x0, x1, mask=None):
    cost = _sq_cost(x0, x1)
    if mask is not None:
        cost = np.where(mask, cost, np.inf)
    rows, cols = linear_sum_assignment(cost)
    plan = np.zeros(cost.shape)
    plan[rows, cols] = 1.0 / len(x0)
    return plan, cost[rows, cols].mean()


def test_exact_ot_equals_scipy_assignment(x64):
    exact = jax.jit(C.exact_ot)
    for seed, shape in ((1, (12, 3)), (2, (12, 3)), (3, (12, 2, 2))):  # image-like trailing axes too
        rng = np.random.default_rng(seed)
        x0, x1 = rng.normal(size=shape), rng.normal(size=shape) + 0.5
        new0, new1 = exact(jax.random.PRNGKey(seed), x0, x1)
        np.testing.assert_array_equal(new1, x1)  # targets stay in order
        plan, _ = _scipy_plan(x0, x1)
        np.testing.assert_array_equal(_source_index(new0, x0), plan.argmax(0))


def test_exact_ot_vmaps_over_keys_and_problems():
    x0, x1 = (jnp.asarray(a, jnp.float32) for a in _points(10))
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    over_keys = jax.jit(jax.vmap(lambda k: C.exact_ot(k, x0, x1)[0]))(keys)
    single = C.exact_ot(keys[0], x0, x1)[0]
    np.testing.assert_array_equal(over_keys, jnp.broadcast_to(single, over_keys.shape))
    batch0, batch1 = jnp.stack([x0, x1, x0[::-1]]), jnp.stack([x1, x0, x1])
    over_problems = jax.vmap(C.exact_ot)(keys, batch0, batch1)[0]
    for i in range(3):
        np.testing.assert_array_equal(over_problems[i], C.exact_ot(keys[i], batch0[i], batch1[i])[0])


def test_sinkhorn_plan_tends_to_exact_plan_and_to_product(x64):
    x0, x1 = _points(8, seed=4)
    exact, _ = _scipy_plan(x0, x1)
    distances = []
    for eps in (1.0, 0.1, 0.01):
        plan = np.asarray(C.sinkhorn_plan(x0, x1, eps, max_iterations=20_000, tolerance=1e-7))
        np.testing.assert_allclose(plan.sum(0), 1 / 8, atol=1e-12)  # column marginals: exact after each step
        assert np.abs(plan.sum(1) - 1 / 8).sum() < 1e-4  # row marginals: within the tolerance, or near it
        distances.append(np.abs(plan - exact).sum())
    assert distances[0] > distances[1] > distances[2] and distances[2] < 0.02, distances
    flat = np.asarray(C.sinkhorn_plan(x0, x1, 1e4))
    np.testing.assert_allclose(flat, 1 / 64, rtol=2e-3)  # epsilon -> infinity: the product coupling


def test_sinkhorn_pairs_follow_the_plan_under_jit_and_vmap():
    x0, x1 = (jnp.asarray(a, jnp.float32) for a in _points(4, seed=5))
    eps = 0.5
    plan = np.asarray(C.sinkhorn_plan(x0, x1, eps))
    n_keys = 4000
    keys = jax.random.split(jax.random.PRNGKey(1), n_keys)
    sources = jax.jit(jax.vmap(lambda k: C.sinkhorn(k, x0, x1, eps)[0]))(keys)
    idx = np.asarray(jnp.argmin(jnp.sum((sources[:, :, None] - x0[None, None]) ** 2, -1), axis=-1))
    np.testing.assert_array_equal(np.asarray(sources), np.asarray(x0)[idx])  # every output is a source row
    freq = np.stack([(idx == i).mean(0) for i in range(4)])  # P(source i | target j) over the keys
    conditional = plan / plan.sum(0, keepdims=True)
    np.testing.assert_allclose(freq, conditional, atol=4 * np.sqrt(0.25 / n_keys))


def test_ot_couplings_shorten_pairs():
    x0, x1 = (jnp.asarray(a, jnp.float32) for a in _points(64, seed=6))
    key = jax.random.PRNGKey(0)

    def mean_sq(pair):
        return float(jnp.mean(jnp.sum((pair[0] - pair[1]) ** 2, -1)))

    independent = mean_sq(C.independent(key, x0, x1))
    exact = mean_sq(C.exact_ot(key, x0, x1))
    entropic = mean_sq(C.sinkhorn(key, x0, x1, 0.05))
    _, optimum = _scipy_plan(np.asarray(x0, np.float64), np.asarray(x1, np.float64))
    np.testing.assert_allclose(exact, optimum, rtol=1e-5)
    assert exact < 0.6 * independent and entropic < 0.6 * independent, (exact, entropic, independent)
    # in expectation the entropic plan costs more than the optimum (a sample with repeated sources may not)
    plan = C.sinkhorn_plan(x0, x1, 0.05)
    assert exact <= float(jnp.sum(plan * C.squared_distances(x0, x1))) < 1.05 * exact


@pytest.mark.parametrize("one_hot", [False, True])
def test_class_conditional_couplings_never_cross_labels(one_hot):
    b, k = 24, 3
    x0, x1 = (jnp.asarray(a, jnp.float32) for a in _points(b, seed=7, shift=0.0))
    classes = np.arange(b) % k
    labels = np.eye(k)[classes] if one_hot else classes
    key = jax.random.PRNGKey(2)
    runs = {
        "exact_ot": lambda lab: C.exact_ot(key, x0, x1, labels=lab),
        "sinkhorn": lambda lab: C.sinkhorn(key, x0, x1, 5.0, labels=lab),  # wide plan: crosses without the mask
        "schrodinger_bridge": lambda lab: C.schrodinger_bridge(key, x0, x1, 1.5, labels=lab),
    }
    for name, run in runs.items():
        new0, new1 = run(jnp.asarray(labels))
        np.testing.assert_array_equal(new1, x1)
        src = _source_index(new0, x0)
        assert np.array_equal(classes[src], classes), name
        assert not np.array_equal(classes[_source_index(run(None)[0], x0)], classes), name
    plan = np.asarray(C.sinkhorn_plan(x0, x1, 5.0, labels=jnp.asarray(labels)))
    assert plan[classes[:, None] != classes[None, :]].max() == 0.0
    np.testing.assert_allclose(plan.sum(1), 1 / b, atol=1e-5)


def test_schrodinger_bridge_is_entropic_ot_with_two_sigma_squared():
    x0, x1 = (jnp.asarray(a, jnp.float32) for a in _points(16, seed=8))
    key = jax.random.PRNGKey(3)
    got = C.schrodinger_bridge(key, x0, x1, 0.3)[0]
    np.testing.assert_array_equal(got, C.sinkhorn(key, x0, x1, 2 * 0.3**2)[0])


def test_independent_keeps_pairs():
    x0, x1 = (a.astype(np.float32) for a in _points(5))
    out = C.independent(jax.random.PRNGKey(0), x0, x1, labels=np.arange(5))
    np.testing.assert_array_equal(out[0], x0)
    np.testing.assert_array_equal(out[1], x1)


def test_nan_propagates_under_jit_and_raises_outside():
    x0, x1 = (np.asarray(a, np.float32) for a in _points(6))
    bad = x0.copy()
    bad[2, 0] = np.nan
    key = jax.random.PRNGKey(0)
    for fn in (C.exact_ot, functools.partial(C.sinkhorn, epsilon=0.5)):
        with pytest.raises(ValueError, match="x0 contains NaN"):
            fn(key, bad, x1)
        assert np.isnan(np.asarray(jax.jit(fn)(key, bad, x1)[0])).any()
    assert np.isnan(np.asarray(jax.jit(C.sinkhorn_plan)(bad, x1, 0.5))).all()


def test_bad_inputs_raise():
    x0, x1 = _points(6)
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="shape mismatch"):
        C.exact_ot(key, x0, x1[:5])
    with pytest.raises(ValueError, match="float arrays"):
        C.sinkhorn(key, x0[:, 0], x1[:, 0], 0.1)
    with pytest.raises(ValueError, match="labels must have leading axis B=6"):
        C.exact_ot(key, x0, x1, labels=np.arange(5))
    with pytest.raises(ValueError, match="epsilon .* must be > 0"):
        C.sinkhorn(key, x0, x1, 0.0)
    with pytest.raises(ValueError, match="sigma .* must be > 0"):
        C.schrodinger_bridge(key, x0, x1, -1.0)
    with pytest.raises(ValueError, match="max_iterations must be a Python int >= 1"):
        C.sinkhorn_plan(x0, x1, 0.1, max_iterations=0)


# --------------------------------------------------------------------------------------
# make_loss: a source batch x0, a coupling, path noise
# --------------------------------------------------------------------------------------


def _zero_model(params, x, t, y):
    return jnp.zeros_like(x)


def _identity_model(params, x, t, y):
    return x


def test_make_loss_x0_plays_eps_and_default_is_unchanged():
    z = jnp.asarray(_rng.normal(size=(8, 2)), jnp.float32)
    key = jax.random.PRNGKey(4)
    loss = make_loss(_identity_model, S.CosineScheduler())
    _, key_eps, _ = jax.random.split(key, 3)
    eps = jax.random.normal(key_eps, z.shape, z.dtype)  # make_loss's documented draw
    value, metrics = loss(None, {"x": z}, key)
    value_x0, metrics_x0 = loss(None, {"x": z, "x0": eps}, key)
    assert float(value) == float(value_x0) and float(metrics["target_sq_norm"]) == float(metrics_x0["target_sq_norm"])
    assert float(loss(None, {"x": z, "x0": eps + 1.0}, key)[0]) != float(value)


def test_make_loss_with_exact_ot_regresses_on_optimal_pairs(x64):
    z, x0 = (jnp.asarray(a) for a in _points(12, seed=9))
    labels = np.arange(12) % 2
    key = jax.random.PRNGKey(5)
    loss = make_loss(_zero_model, S.LinearScheduler(), coupling=C.exact_ot)
    # zero prediction on the CondOT path: the loss is the mean of ||z - x0'||^2, the OT cost
    for y, mask in ((None, None), (labels, labels[:, None] == labels[None, :])):
        batch = {"x": z, "x0": x0} if y is None else {"x": z, "x0": x0, "y": jnp.asarray(y)}
        value, _ = loss(None, batch, key)
        _, optimum = _scipy_plan(np.asarray(x0), np.asarray(z), mask)
        np.testing.assert_allclose(value, optimum, rtol=1e-12)
    assert float(loss(None, {"x": z, "x0": x0, "y": jnp.asarray(labels)}, key)[0]) > float(
        loss(None, {"x": z, "x0": x0}, key)[0]
    )


def test_make_loss_brownian_bridge_matches_paths_bridge(x64):
    z, x0 = (jnp.asarray(a) for a in _points(8, seed=10))
    sigma = 0.7
    key = jax.random.PRNGKey(6)
    noise = P.brownian_bridge_noise(sigma)
    loss = make_loss(_identity_model, S.LinearScheduler(), path_noise=noise)
    key_t, key_eps, _ = jax.random.split(key, 3)
    t = sample_time(key_t, 8, dtype=z.dtype)
    xi = jax.random.normal(jax.random.fold_in(key_eps, 2), z.shape, z.dtype)
    x_t, u_t = P.bridge(S.LinearScheduler(), x0, z, t, path_noise=noise, noise=xi)
    expected = jnp.mean(jnp.sum((x_t - u_t) ** 2, -1))
    np.testing.assert_allclose(loss(None, {"x": z, "x0": x0}, key)[0], expected, rtol=1e-12)


def test_make_loss_coupling_options_raise():
    with pytest.raises(ValueError, match="-x0/beta_t is not a score target"):
        make_loss(_zero_model, S.LinearScheduler(), parameterization="score", coupling=C.exact_ot)
    with pytest.raises(ValueError, match="path_noise needs parameterization='velocity'"):
        make_loss(_zero_model, S.LinearScheduler(), parameterization="data", path_noise=P.constant_noise(0.1))
    with pytest.raises(ValueError, match="coupling must be a callable"):
        make_loss(_zero_model, S.LinearScheduler(), coupling="ot")
    loss = make_loss(_zero_model, S.LinearScheduler())
    with pytest.raises(ValueError, match=r"batch\['x0'\] must be a float array of the shape"):
        loss(None, {"x": jnp.zeros((4, 2)), "x0": jnp.zeros((3, 2))}, jax.random.PRNGKey(0))
