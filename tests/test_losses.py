"""Tests of jflow.losses against formulas written independently (Algorithms 3-6, DDPM, CFG training).

Flow time throughout: t = 0 noise, t = 1 data.
"""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflow import losses, paths, schedulers
from jflow.marginals import GaussianMixture, marginal_field
from jflow.schedulers import CosineScheduler, LinearScheduler

LIN = LinearScheduler()
COS = CosineScheduler()


def _normal_cdf(x):
    return 0.5 * (1.0 + np.vectorize(math.erf)(np.asarray(x) / math.sqrt(2.0)))


def _ks_tolerance(n, alpha=1e-4):
    """Critical value of the one-sample Kolmogorov-Smirnov statistic (asymptotic)."""
    return math.sqrt(-math.log(alpha / 2.0) / (2.0 * n))


def _ks(samples, cdf):
    s = np.sort(np.asarray(samples, np.float64))
    n = s.size
    f = cdf(s)
    return max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n))


def _draws(seed, shape, dtype=np.float64):
    """Test data from numpy (no jax random programs to compile): z, eps, prediction, t."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=shape) * 2.0 + 1.0
    eps, pred = rng.normal(size=shape), rng.normal(size=shape)
    t = rng.uniform(size=shape[:1])
    return tuple(jnp.asarray(a, dtype) for a in (z, eps, pred, t))


def _bcast(t, x):
    return t.reshape(t.shape + (1,) * (x.ndim - 1))


# --------------------------------------------------------------------------------------
# conditional_matching_loss against the algorithms of the lectures
# --------------------------------------------------------------------------------------


def test_condot_losses_match_algorithms_4_and_5(x64):
    z, eps, pred, t = _draws(0, (16, 3, 2))
    tt = _bcast(t, z)
    x = tt * z + (1 - tt) * eps  # Algorithm 4, step 5 (x only feeds the network, not the target)
    assert x.shape == z.shape
    axes = (1, 2)
    expected = {
        "velocity": np.mean(np.sum((pred - (z - eps)) ** 2, axes)),  # Algorithm 4
        "score": np.mean(np.sum((pred + eps / (1 - tt)) ** 2, axes)),  # Algorithm 5
        "noise": np.mean(np.sum((pred - eps) ** 2, axes)),  # DDPM
        "data": np.mean(np.sum((pred - z) ** 2, axes)),  # x-prediction
    }
    for name, want in expected.items():
        got = losses.conditional_matching_loss(pred, LIN, z, eps, t, name)
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=name)
        per = losses.conditional_matching_errors(pred, LIN, z, eps, t, name)
        chex.assert_shape(per, (16,))
        np.testing.assert_allclose(np.mean(per), want, rtol=1e-12, err_msg=name)


def test_cosine_velocity_target_and_scalar_time(x64):
    z, eps, pred, t = _draws(1, (8, 4))
    h = 0.5 * np.pi
    target = h * np.cos(h * t)[:, None] * z - h * np.sin(h * t)[:, None] * eps
    got = losses.conditional_matching_loss(pred, COS, z, eps, t, "velocity")
    np.testing.assert_allclose(got, np.mean(np.sum((pred - target) ** 2, 1)), rtol=1e-12)
    s = 0.3  # a scalar t is shared by every example
    target = h * np.cos(h * s) * z - h * np.sin(h * s) * eps
    got = losses.conditional_matching_loss(pred, COS, z, eps, s, "velocity")
    np.testing.assert_allclose(got, np.mean(np.sum((pred - target) ** 2, 1)), rtol=1e-12)


def test_weighting_and_relations_between_parameterisations(x64):
    z, eps, e_pred, t = _draws(2, (32, 3))
    t = 0.05 + 0.9 * t
    tt = t[:, None]
    beta = 1 - tt
    # weighting multiplies each example's squared norm
    got = losses.conditional_matching_loss(e_pred, LIN, z, eps, t, "noise", weighting=lambda s: s**2)
    np.testing.assert_allclose(got, np.mean(t**2 * np.sum((e_pred - eps) ** 2, 1)), rtol=1e-12)
    # score network s = -eps_hat / beta: score loss weighted by beta^2 is the noise loss (DDPM)
    score_loss = losses.conditional_matching_loss(-e_pred / beta, LIN, z, eps, t, "score", weighting=lambda s: (1 - s) ** 2)
    noise_loss = losses.conditional_matching_loss(e_pred, LIN, z, eps, t, "noise")
    np.testing.assert_allclose(score_loss, noise_loss, rtol=1e-10)
    # CondOT: u = (z_hat - x) / (1 - t); the velocity loss is the data loss weighted by 1/(1-t)^2
    x = tt * z + beta * eps
    z_pred = z + 0.3 * e_pred
    vel_loss = losses.conditional_matching_loss((z_pred - x) / beta, LIN, z, eps, t, "velocity")
    data_loss = losses.conditional_matching_loss(z_pred, LIN, z, eps, t, "data", weighting=lambda s: (1 - s) ** -2)
    np.testing.assert_allclose(vel_loss, data_loss, rtol=1e-10)


def test_conditional_loss_preserves_float32_under_x64(x64):
    z, eps, pred, t = _draws(3, (4, 2), np.float32)
    for name in losses.PARAMETERIZATIONS:
        fn = lambda *a: losses.conditional_matching_loss(*a, name, weighting=lambda s: 1 - s)  # noqa: E731
        assert jax.eval_shape(fn, pred, LIN, z, eps, t).dtype == jnp.float32


def test_conditional_loss_rejects_bad_input():
    z, eps, pred, t = _draws(4, (4, 2), np.float32)
    with pytest.raises(ValueError, match="choose one of"):
        losses.conditional_matching_loss(pred, LIN, z, eps, t, "epsilon")
    with pytest.raises(ValueError, match="shape mismatch"):
        losses.conditional_matching_loss(pred[:, :1], LIN, z, eps, t)
    with pytest.raises(ValueError, match="batch axis"):
        losses.conditional_matching_loss(pred[0, 0], LIN, z[0, 0], eps[0, 0], 0.5)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        losses.conditional_matching_loss(pred, LIN, z, eps, t[:3])
    with pytest.raises(ValueError, match="must lie in"):
        losses.conditional_matching_loss(pred, LIN, z, eps, t + 1.5)
    with pytest.raises(ValueError, match="beta_t = 0"):
        losses.conditional_matching_loss(pred, LIN, z, eps, t.at[0].set(1.0), "score")
    with pytest.raises(ValueError, match="one weight per example"):
        losses.conditional_matching_loss(pred, LIN, z, eps, t, weighting=lambda s: s[:, None])
    with pytest.raises(ValueError, match="empty"):  # the mean of no examples would be NaN
        losses.conditional_matching_loss(pred[:0], LIN, z[:0], eps[:0], t[:0])


# --------------------------------------------------------------------------------------
# Flow matching theorem (Thm 4.1) and its score analogue (Thm 4.2) on Gaussian-mixture data
# --------------------------------------------------------------------------------------

_GM_ARGS = (
    [[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]],
    [0.5, 0.3, 0.7],
    [0.3, 0.5, 0.2],
)


def _affine_model(theta, x, t):
    """A tiny parametric field u_theta(x, t) = x W + t (x V) + t a + b (pure function of params)."""
    tt = t[:, None]
    return x @ theta["W"] + tt * (x @ theta["V"]) + tt * theta["a"] + theta["b"]


def _theta(seed, scale):
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(scale * rng.normal(size=shape)) for k, shape in
            (("W", (2, 2)), ("V", (2, 2)), ("a", (2,)), ("b", (2,)))}


def _mean_and_se(values):
    return jnp.mean(values), jnp.std(values) / math.sqrt(values.size)


_STATS = ("gap1-gap2", "gap1-C", "C", "models_differ") + tuple(
    f"{name}{i}" for i in range(3) for name in ("excess-sq", "sq")
)


def _mixture_draws(seed, n):
    """(z, eps, t) with z from the mixture _GM_ARGS, drawn with numpy; t ~ Unif[0, 0.9]."""
    means, stds, weights = (np.asarray(a) for a in _GM_ARGS)
    rng = np.random.default_rng(seed)
    k = rng.choice(len(weights), size=n, p=weights)
    z = means[k] + stds[k, None] * rng.normal(size=(n, 2))
    return z, rng.normal(size=(n, 2)), 0.9 * rng.uniform(size=n)


@jax.jit
def _theorem_statistics(z, eps, t, theta1, theta2):
    """Monte-Carlo statistics of Thm 4.1 / 4.2 for each parameterisation: (mean, standard error).

    Common random numbers (t, z, eps) for every field; t <= 0.9 keeps the variance of the
    score target -eps/beta_t bounded (the theorems hold for any law of t).
    """
    gm = GaussianMixture(*(jnp.asarray(a, jnp.float64) for a in _GM_ARGS))
    n = z.shape[0]
    x = t[:, None] * z + (1 - t[:, None]) * eps  # CondOT path, written out
    u1 = _affine_model(theta1, x, t)
    u2 = _affine_model(theta2, x, t)
    deltas = jnp.stack([0.3 * jnp.ones_like(x), 0.5 * x * t[:, None], u2 - u1])  # (3, n, d)
    sq = jnp.sum(deltas**2, -1)
    stats = {}
    for name in losses.PARAMETERIZATIONS:
        marginal = marginal_field(LIN, gm, x, t, name)
        fields = jnp.concatenate([jnp.stack([u1, u2, marginal]), marginal + deltas])  # (6, n, d)
        cond = jax.vmap(lambda u: losses.conditional_matching_errors(u, LIN, z, eps, t, name))(fields)
        gap = cond - jnp.sum((fields - marginal) ** 2, -1)  # ||u - target(x|z)||^2 - ||u - target(x)||^2
        base = cond[2]  # its mean is C = E||target(x|z) - target(x)||^2
        per_sample = jnp.stack(
            [gap[0] - gap[1], gap[0] - base, base, jnp.sum((u1 - u2) ** 2, -1)]
            + [v for i in range(3) for v in (cond[3 + i] - base - sq[i], sq[i])]
        )
        stats[name] = (jnp.mean(per_sample, 1), jnp.std(per_sample, 1) / math.sqrt(n))
    return stats


@pytest.fixture(scope="module")
def theorem_statistics():
    with jax.enable_x64(True):
        data = (jnp.asarray(a) for a in _mixture_draws(10, 1 << 16))
        stats = _theorem_statistics(*data, _theta(1, 1.0), _theta(2, 0.5))
    return {
        name: {k: (float(mean[i]), float(se[i])) for i, k in enumerate(_STATS)} for name, (mean, se) in stats.items()
    }


@pytest.mark.parametrize("parameterization", losses.PARAMETERIZATIONS)
def test_conditional_loss_differs_from_marginal_loss_by_a_constant(theorem_statistics, parameterization):
    """Thm 4.1 (velocity) / 4.2 (score), and their noise/data analogues, on Gaussian-mixture data:

    L_marginal(theta) = L_conditional(theta) + C with C independent of theta; here
    -C = E||target(x|z) - target(x)||^2 = L_conditional(exact marginal field). The exact
    marginal field minimises L_conditional: perturbing it by delta adds exactly E||delta||^2.
    Tolerances are 5 standard errors of the per-sample differences (from the sample size).
    """
    s = theorem_statistics[parameterization]
    assert s["models_differ"][0] > 0.1  # u1 != u2, so the constant check is not trivial
    off, se = s["gap1-gap2"]
    assert abs(off) < 5 * se, (off, se)  # the same constant for both parameters ...
    off, se = s["gap1-C"]
    assert abs(off) < 5 * se, (off, se)  # ... equal to C = L_conditional(exact marginal field)
    assert s["C"][0] > 10 * s["C"][1] > 0
    for i in range(3):
        off, se = s[f"excess-sq{i}"]
        assert abs(off) < 5 * se, (i, off, se)
        assert s[f"sq{i}"][0] > 5 * se  # the excess E||delta||^2 is resolved by the sample


# --------------------------------------------------------------------------------------
# Time sampling
# --------------------------------------------------------------------------------------


N_T = 4096  # one sample size for every sampler test: the random programs compile once


def test_uniform_time_moments_and_law():
    t = np.asarray(losses.sample_time(jax.random.PRNGKey(0), N_T), np.float64)
    assert t.shape == (N_T,) and t.min() >= 0.0 and t.max() < 1.0
    assert abs(t.mean() - 0.5) < 5 * math.sqrt(1 / 12 / N_T)
    assert abs(t.var() - 1 / 12) < 5 * math.sqrt((1 / 80 - 1 / 144) / N_T)  # Var of s^2: (mu4 - s^4)/n
    assert _ks(t, lambda s: s) < _ks_tolerance(N_T)


def test_logit_normal_time_law_and_range():
    m, s, lo, hi = 0.5, 0.8, 0.1, 0.9
    t = losses.sample_time(jax.random.PRNGKey(1), N_T, method="logit_normal", mean=m, std=s, t_min=lo, t_max=hi)
    t = np.asarray(t, np.float64)
    assert t.min() >= lo and t.max() <= hi
    median = lo + (hi - lo) / (1 + math.exp(-m))  # sigmoid(m), on the rescaled interval
    assert abs(np.mean(t < median) - 0.5) < 5 * 0.5 / math.sqrt(N_T)
    u = np.clip((t - lo) / (hi - lo), 1e-12, 1 - 1e-12)
    cdf = lambda v: _normal_cdf((np.log(v) - np.log1p(-v) - m) / s)  # noqa: E731  P(sigmoid(m + s N) <= v)
    assert _ks(u, cdf) < _ks_tolerance(N_T)
    assert _ks(u, lambda v: v) > 3 * _ks_tolerance(N_T)  # the KS test tells it apart from uniform


def test_stratified_time_one_sample_per_bin():
    n = N_T
    t = np.asarray(losses.sample_time(jax.random.PRNGKey(2), n, method="stratified"))
    assert t.dtype == np.float32
    assert not np.array_equal(t, np.sort(t))  # randomly permuted
    # float32: the i-th smallest lies in the closed bin [i/n, (i+1)/n] (rounding may reach an edge)
    edges = np.arange(n + 1, dtype=np.float32) / np.float32(n)
    t = np.sort(t)
    assert np.all(t >= edges[:-1]) and np.all(t <= edges[1:])


def test_time_float64_stratified_bins_and_ranges(x64):
    n = N_T
    t = np.asarray(losses.sample_time(jax.random.PRNGKey(3), n, method="stratified", dtype=jnp.float64))
    np.testing.assert_array_equal(np.sort(np.floor(t * n)), np.arange(n))  # exactly one per bin
    lo, hi = 0.25, 0.5
    for method in losses.TIME_SAMPLING:
        t = np.asarray(losses.sample_time(jax.random.PRNGKey(4), n, method=method, t_min=lo, t_max=hi, std=3.0))
        assert t.dtype == np.float64  # the default float under x64
        assert t.min() >= lo and t.max() <= hi, method
        assert t.max() - t.min() > 0.9 * (hi - lo), method  # fills the range
        if method == "stratified":
            np.testing.assert_array_equal(np.sort(np.floor((t - lo) / (hi - lo) * n)), np.arange(n))
        f32 = jax.eval_shape(lambda k: losses.sample_time(k, n, method=method, dtype=jnp.float32), jax.random.PRNGKey(4))
        assert f32.dtype == jnp.float32 and f32.shape == (n,)


def test_time_sampling_rejects_bad_input():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="stratified"):
        losses.sample_time(key, 4, method="beta")
    for lo, hi in [(0.5, 0.5), (0.6, 0.4), (-0.1, 1.0), (0.0, 1.1)]:
        with pytest.raises(ValueError, match="t_min < t_max"):
            losses.sample_time(key, 4, t_min=lo, t_max=hi)
    with pytest.raises(ValueError, match="std"):
        losses.sample_time(key, 4, method="logit_normal", std=0.0)
    for n in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match="positive int"):
            losses.sample_time(key, n)
    with pytest.raises(ValueError, match="float dtype"):
        losses.sample_time(key, 4, dtype=jnp.int32)


# --------------------------------------------------------------------------------------
# Classifier-free guidance label dropout
# --------------------------------------------------------------------------------------


def test_drop_labels_rate_and_kept_labels():
    n, p, null = N_T, 0.3, 10
    y = jnp.asarray(np.random.default_rng(0).integers(0, 10, size=n), jnp.int32)
    out = losses.drop_labels(jax.random.PRNGKey(1), y, p, null)
    assert out.dtype == y.dtype and out.shape == y.shape
    dropped = np.asarray(out) == null
    assert abs(dropped.mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
    np.testing.assert_array_equal(np.asarray(out)[~dropped], np.asarray(y)[~dropped])
    # deterministic for a fixed key, different for another key
    np.testing.assert_array_equal(out, losses.drop_labels(jax.random.PRNGKey(1), y, p, null))
    assert not np.array_equal(out, losses.drop_labels(jax.random.PRNGKey(2), y, p, null))


def test_drop_labels_extremes_and_rows():
    y = jnp.arange(64) % 7
    key = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(losses.drop_labels(key, y, 0.0, 7), y)
    np.testing.assert_array_equal(losses.drop_labels(key, y, 1.0, 7), jnp.full_like(y, 7))
    # traced p under jit
    np.testing.assert_array_equal(jax.jit(losses.drop_labels)(key, y, 1.0, 7), jnp.full_like(y, 7))
    # one-hot rows: a dropped row becomes the null row, a kept row is unchanged
    onehot = jax.nn.one_hot(y, 7)
    out = np.asarray(losses.drop_labels(key, onehot, 0.5, jnp.zeros(7)))
    kept = out.sum(1) == 1
    assert 0 < kept.sum() < 64
    np.testing.assert_array_equal(out[kept], np.asarray(onehot)[kept])
    np.testing.assert_array_equal(out[~kept], 0.0)


def test_drop_labels_rejects_bad_input():
    key, y = jax.random.PRNGKey(0), jnp.arange(4)
    for p in (-0.1, 1.5, jnp.ones(2) * 0.5):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            losses.drop_labels(key, y, p, 9)
    with pytest.raises(ValueError, match="null_label is required"):
        losses.drop_labels(key, y, 0.1, None)
    with pytest.raises(ValueError, match="broadcast"):
        losses.drop_labels(key, jnp.zeros((4, 3)), 0.1, jnp.zeros(2))
    with pytest.raises(ValueError, match="batch axis"):
        losses.drop_labels(key, 3, 0.1, 9)


# --------------------------------------------------------------------------------------
# make_loss
# --------------------------------------------------------------------------------------

B, D, NULL = 16, 3, 5


def _apply(params, x, t, y):
    """Tiny labelled model: x W + t a + c * onehot(y) M (y = None: no label term)."""
    out = x @ params["W"] + t[:, None] * params["a"]
    if y is not None:
        out = out + params["c"] * (jax.nn.one_hot(y, NULL + 1, dtype=x.dtype) @ params["M"])
    return out


def _params(dtype=np.float32):
    rng = np.random.default_rng(7)
    shapes = {"W": (D, D), "a": (D,), "c": (), "M": (NULL + 1, D)}
    return {k: jnp.asarray(rng.normal(size=shape), dtype) for k, shape in shapes.items()}


def _batch(dtype=np.float32, labels=True):
    rng = np.random.default_rng(8)
    batch = {"x": jnp.asarray(rng.normal(size=(B, D)) + 2.0, dtype)}
    if labels:
        batch["y"] = jnp.asarray(rng.integers(0, NULL, size=B), jnp.int32)
    return batch


def _reference(params, batch, key, parameterization, *, t_max=1.0, p=0.0):
    """The documented recipe of make_loss for CondOT, with the targets written out."""
    z = batch["x"]
    k_t, k_eps, k_drop = jax.random.split(key, 3)
    t = losses.sample_time(k_t, z.shape[0], t_max=t_max, dtype=z.dtype)
    eps = jax.random.normal(k_eps, z.shape, z.dtype)
    tt = t[:, None]
    x = tt * z + (1 - tt) * eps
    y = batch.get("y")
    if p > 0:
        y = losses.drop_labels(k_drop, y, p, NULL)
    out = _apply(params, x, t, y)
    target = {"velocity": z - eps, "score": -eps / (1 - tt), "noise": eps, "data": z}[parameterization]
    return jnp.mean(jnp.sum((out - target) ** 2, 1)), t, target


LOSS_VEL = losses.make_loss(_apply, LIN)


@pytest.mark.parametrize("parameterization", losses.PARAMETERIZATIONS)
def test_make_loss_matches_documented_recipe(parameterization):
    loss_fn = losses.make_loss(_apply, LIN, parameterization=parameterization, time_bins=4)
    params, batch, key = _params(), _batch(), jax.random.PRNGKey(11)
    value, metrics = loss_fn(params, batch, key)
    t_max = losses.SCORE_T_MAX if parameterization == "score" else 1.0  # default clip of the score form
    want, t, target = _reference(params, batch, key, parameterization, t_max=t_max)
    np.testing.assert_allclose(value, want, rtol=2e-6)
    assert value.dtype == jnp.float32
    # metrics: loss, scale reference, and a per-time-bin breakdown that adds up to the loss
    np.testing.assert_allclose(metrics["loss"], value, rtol=0)
    np.testing.assert_allclose(metrics["target_sq_norm"], np.mean(np.sum(np.asarray(target) ** 2, 1)), rtol=2e-6)
    counts = np.histogram(np.asarray(t), bins=4, range=(0, 1))[0]
    np.testing.assert_array_equal(metrics["count_by_time"], counts)
    np.testing.assert_allclose(np.sum(metrics["loss_by_time"] * metrics["count_by_time"]) / B, value, rtol=2e-6)


def test_make_loss_on_a_bfloat16_batch_draws_float32_times_and_reduces_in_float32():
    seen = {}

    def apply(params, x, t, y):
        seen.update(x=x.dtype, t=np.asarray(t))
        return _apply(params, x, t, y)

    batch = {"x": jnp.ones((4096, D), jnp.bfloat16)}
    value, _ = losses.make_loss(apply, LIN)(_params(jnp.bfloat16), batch, jax.random.PRNGKey(0))
    assert seen["x"] == jnp.bfloat16 and seen["t"].dtype == np.float32  # x_t keeps the batch's dtype
    assert value.dtype == jnp.float32
    # bfloat16 has 128 values in [0.5, 1); 4096 float32 draws are (nearly) all distinct
    assert len(np.unique(seen["t"])) > 4000


def test_make_loss_label_dropout_follows_algorithm_5():
    params, batch, key = _params(), _batch(), jax.random.PRNGKey(12)
    n_dropped = int(jnp.sum(losses.drop_labels(jax.random.split(key, 3)[2], batch["y"], 0.5, NULL) == NULL))
    assert 0 < n_dropped < B  # p = 0.5 drops some labels and keeps others for this key
    for p in (0.5, 1.0):
        loss_fn = losses.make_loss(_apply, LIN, label_dropout=p, null_label=NULL)
        want = _reference(params, batch, key, "velocity", p=p)[0]
        np.testing.assert_allclose(loss_fn(params, batch, key)[0], want, rtol=2e-6)
    # p = 1 equals feeding the null label to every example; it differs from the labelled loss
    all_null = dict(batch, y=jnp.full((B,), NULL))
    np.testing.assert_allclose(
        losses.make_loss(_apply, LIN, label_dropout=1.0, null_label=NULL)(params, batch, key)[0],
        LOSS_VEL(params, all_null, key)[0], rtol=1e-6,
    )
    assert abs(float(LOSS_VEL(params, batch, key)[0] - LOSS_VEL(params, all_null, key)[0])) > 1e-3
    # unlabelled batches reach the model with y = None
    seen = []
    losses.make_loss(lambda p_, x, t, y: seen.append(y) or x, LIN)(params, _batch(labels=False), key)
    assert seen == [None]


def test_make_loss_jit_equals_no_jit_without_retracing():
    params, batch = _params(), _batch()
    jitted = jax.jit(chex.assert_max_traces(LOSS_VEL, n=1))
    values = {}
    for seed in (0, 1, 0):
        key = jax.random.PRNGKey(seed)
        got, got_m = jitted(params, batch, key)
        want, want_m = LOSS_VEL(params, batch, key)
        np.testing.assert_allclose(got, want, rtol=1e-5)
        chex.assert_trees_all_close(got_m, want_m, rtol=1e-5)
        values.setdefault(seed, []).append(float(got))
    # deterministic for a fixed key, different for another key
    assert values[0][0] == values[0][1] != values[1][0]


def _endpoints(key, n):
    return (jnp.arange(n) % 2).astype(jnp.float32)  # t in {0, 1}


@pytest.mark.parametrize("parameterization", ["velocity", "noise", "data"])
@pytest.mark.parametrize("sched", [LIN, COS], ids=["linear", "cosine"])
def test_make_loss_finite_at_both_ends_with_finite_gradients(parameterization, sched):
    loss_fn = losses.make_loss(_apply, sched, parameterization=parameterization, time_sampling=_endpoints, time_bins=4)
    (value, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(_params(), _batch(), jax.random.PRNGKey(0))
    assert np.isfinite(value) and value > 0
    np.testing.assert_array_equal(metrics["count_by_time"], [B // 2, 0, 0, B // 2])
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
    assert float(jnp.abs(grads["W"]).sum()) > 0


def test_make_loss_preserves_dtype(x64):
    # float64 data gives a float64 loss; float32 data a float32 loss, also under x64
    key = jax.random.PRNGKey(13)
    for dtype in (np.float64, np.float32):
        out = jax.eval_shape(LOSS_VEL, _params(dtype), _batch(dtype), key)
        assert all(leaf.dtype == dtype for leaf in jax.tree_util.tree_leaves(out))


def test_make_loss_options():
    params, batch, key = _params(), _batch(), jax.random.PRNGKey(13)
    # weighting multiplies per-example losses
    weighted = losses.make_loss(_apply, LIN, weighting=lambda t: 2.0 * jnp.ones_like(t))(params, batch, key)[0]
    np.testing.assert_allclose(weighted, 2 * LOSS_VEL(params, batch, key)[0], rtol=1e-6)
    # named time sampling with its parameters = the callable it stands for
    named = losses.make_loss(_apply, LIN, time_sampling="logit_normal", time_mean=0.3, time_std=0.5, t_min=0.1)
    as_callable = losses.make_loss(
        _apply, LIN,
        time_sampling=lambda k, n: losses.sample_time(k, n, method="logit_normal", mean=0.3, std=0.5, t_min=0.1, dtype=jnp.float32),
    )
    np.testing.assert_allclose(named(params, batch, key)[0], as_callable(params, batch, key)[0], rtol=1e-6)
    no_bins = losses.make_loss(_apply, LIN)(params, batch, key)[1]  # per-time bins are opt-in
    assert sorted(no_bins) == ["loss", "target_sq_norm"]


def test_make_loss_refuses_a_velocity_target_that_is_infinite_at_t_max():
    for sched in (schedulers.VPScheduler(), schedulers.SqrtScheduler(), schedulers.LinearVPScheduler()):
        with pytest.raises(ValueError, match=r"infinite at t_max=1.0.*t_max=1 - 1e-3"):
            losses.make_loss(_apply, sched)  # d beta_t / dt = -inf at t = 1
        losses.make_loss(_apply, sched, t_max=0.999)  # the fix works
        losses.make_loss(_apply, sched, parameterization="noise")  # other targets need no derivative
    losses.make_loss(_apply, schedulers.CosineScheduler())  # finite derivatives: t_max = 1 is fine


def test_make_loss_rejects_bad_configuration():
    with pytest.raises(ValueError, match="choose one of"):
        losses.make_loss(_apply, LIN, parameterization="eps")
    with pytest.raises(ValueError, match="logit_normal"):
        losses.make_loss(_apply, LIN, time_sampling="lognormal")
    with pytest.raises(ValueError, match="t_min < t_max"):
        losses.make_loss(_apply, LIN, t_min=0.5, t_max=0.5)
    with pytest.raises(ValueError, match="callable time_sampling"):
        losses.make_loss(_apply, LIN, time_sampling=_endpoints, t_max=0.9)
    with pytest.raises(ValueError, match="null_label"):
        losses.make_loss(_apply, LIN, label_dropout=0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        losses.make_loss(_apply, LIN, label_dropout=1.5, null_label=NULL)
    with pytest.raises(ValueError, match="time_std"):
        losses.make_loss(_apply, LIN, time_sampling="logit_normal", time_std=-1.0)
    with pytest.raises(ValueError, match="weighting"):
        losses.make_loss(_apply, LIN, weighting=2.0)
    with pytest.raises(ValueError, match="time_bins"):
        losses.make_loss(_apply, LIN, time_bins=-1)
    with pytest.raises(ValueError, match="apply_fn"):
        losses.make_loss(None, LIN)


def test_make_loss_rejects_bad_batches_at_trace_time():
    params, key = _params(), jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="'x'"):
        jax.jit(LOSS_VEL)(params, {"z": jnp.ones((B, D))}, key)
    with pytest.raises(ValueError, match="float array"):
        jax.jit(LOSS_VEL)(params, {"x": jnp.ones((B, D), jnp.int32)}, key)
    with pytest.raises(ValueError, match="empty"):
        jax.jit(LOSS_VEL)(params, {"x": jnp.ones((0, D))}, key)
    with pytest.raises(ValueError, match="leading axis"):
        jax.jit(LOSS_VEL)(params, dict(_batch(), y=jnp.zeros((B + 1,), jnp.int32)), key)
    with pytest.raises(ValueError, match="no 'y'"):
        jax.jit(losses.make_loss(_apply, LIN, label_dropout=0.1, null_label=NULL))(params, _batch(labels=False), key)
    with pytest.raises(ValueError, match="shape of x"):
        jax.jit(losses.make_loss(lambda p, x, t, y: x[:, :1], LIN))(params, _batch(), key)
    with pytest.raises(ValueError, match=r"return shape \(16,\)"):
        jax.jit(losses.make_loss(_apply, LIN, time_sampling=lambda k, n: jnp.zeros((n, 1))))(params, _batch(), key)
    with pytest.raises(ValueError, match="one weight per example"):
        jax.jit(losses.make_loss(_apply, LIN, weighting=lambda t: t[:, None]))(params, _batch(), key)


# ----------------------------------------------------------------------------- named weightings


@pytest.mark.parametrize("parameterization", losses.PARAMETERIZATIONS)
def test_noise_error_factor_relates_errors_in_float64(parameterization, x64):
    """||P_hat - P||^2 = c_P^2 ||eps_hat - eps||^2 for predictions converted from a noise prediction."""
    sched = schedulers.CosineScheduler()
    key = jax.random.PRNGKey(3)
    z, eps, eps_hat = (jax.random.normal(k, (6, 3), jnp.float64) for k in jax.random.split(key, 3))
    t = jnp.linspace(0.1, 0.9, 6, dtype=jnp.float64)
    x = paths.sample_conditional(sched, z, eps, t)
    pred = paths.convert(sched, eps_hat, x, t, source="noise", target=parameterization)
    err = losses.conditional_matching_errors(pred, sched, z, eps, t, parameterization)
    want = losses.noise_error_factor(sched, t, parameterization) * jnp.sum((eps_hat - eps) ** 2, 1)
    np.testing.assert_allclose(err, want, rtol=1e-10)


def test_noise_weighted_score_loss_is_the_ddpm_loss():
    """DSM weighted by beta_t^2 (weighting="noise") equals noise prediction with eps = -beta s."""
    sched = schedulers.VPScheduler()
    noise_model = lambda params, x, t, y: x @ params["W"] + t[:, None] * params["a"]  # noqa: E731
    score_model = lambda params, x, t, y: -noise_model(params, x, t, y) / sched(t)[1][:, None]  # noqa: E731
    params, batch, key = _params(), _batch(), jax.random.PRNGKey(21)
    kw = dict(t_min=0.05, t_max=0.95)
    dsm = losses.make_loss(score_model, sched, parameterization="score", weighting="noise", **kw)
    ddpm = losses.make_loss(noise_model, sched, parameterization="noise", **kw)
    np.testing.assert_allclose(dsm(params, batch, key)[0], ddpm(params, batch, key)[0], rtol=1e-5)
    as_callable = losses.make_loss(score_model, sched, parameterization="score",
                                   weighting=lambda t: sched(t)[1] ** 2, **kw)
    np.testing.assert_allclose(dsm(params, batch, key)[0], as_callable(params, batch, key)[0], rtol=1e-6)


def test_min_snr_weighting_formula():
    """min-SNR-gamma: the noise loss weighted by min(1, gamma / SNR); on data loss min(SNR, gamma)."""
    t = jnp.array([0.1, 0.5, 0.7, 0.9])
    snr = (t / (1 - t)) ** 2  # CondOT
    w_noise = losses.loss_weight("min_snr", LIN, t, "noise", snr_gamma=2.0)
    np.testing.assert_allclose(w_noise, np.minimum(1.0, 2.0 / snr), rtol=1e-5)
    w_data = losses.loss_weight("min_snr", LIN, t, "data", snr_gamma=2.0)
    np.testing.assert_allclose(w_data, np.minimum(snr, 2.0), rtol=1e-5)
    # CondOT factors: velocity error = noise error / t^2, so "noise" on a velocity model weights t^2
    np.testing.assert_allclose(losses.loss_weight("noise", LIN, t, "velocity"), t**2, rtol=1e-5)
    np.testing.assert_allclose(losses.loss_weight("none", LIN, t, "score"), 1.0)


def test_bad_weighting_names_are_refused():
    with pytest.raises(ValueError, match="unknown loss weighting 'beta'.*min_snr"):
        losses.make_loss(_apply, LIN, weighting="beta")
    with pytest.raises(ValueError, match="snr_gamma"):
        losses.make_loss(_apply, LIN, weighting="min_snr", snr_gamma=0.0)
