"""Exact marginals of Gaussian-mixture data: densities vs direct formulas, sampling statistics,
score == grad log p_t, the continuity equation, Monte-Carlo posterior averages of the
conditional fields, high-dimensional stability, class-conditional sub-mixtures, jit/pytree
behaviour and input validation. Float64 unless stated; compiled helpers are shared between
tests (fixed shapes, t always a (B,) vector) to keep compilation, the main cost, small."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflow import marginals as M
from jflow import paths as P
from jflow import schedulers as S

SCHEDULERS = {
    "linear": S.LinearScheduler(),
    "cosine": S.CosineScheduler(),
    "poly3": S.PolynomialScheduler(3.0),
    "sqrt": S.SqrtScheduler(),
    "linear_vp": S.LinearVPScheduler(),
    "vp": S.VPScheduler(),
}
MEANS = np.array([[1.0, -1.0], [-1.5, 0.5], [0.5, 2.0]])
STDS = np.array([0.5, 0.3, 0.8])
WEIGHTS = np.array([0.2, 0.5, 0.3])
X = np.random.default_rng(0).normal(size=(5, 2)) * 1.5
T = np.array([0.1, 0.3, 0.5, 0.7, 0.9])


@functools.partial(jax.jit, static_argnums=0)  # schedulers static: see test_schedulers.py
def _fields(sched, gm, x, t):
    """Every exact quantity at once: one compilation per scheduler / shape (shared by tests)."""
    out = {p: M.marginal_field(sched, gm, x, t, p) for p in P.PARAMETERIZATIONS}
    out["log_prob"] = M.marginal_log_prob(sched, gm, x, t)
    out["weights"] = M.posterior_weights(sched, gm, x, t)
    return out


def fields(sched, gm, x, t):
    x = jnp.asarray(x)
    out = _fields(sched, gm, x, jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1]))
    return jax.tree.map(np.asarray, out)


@functools.lru_cache(maxsize=None)
def samples(n=100_000):
    """One shared float64 sample of the test mixture (call from a test using ``x64``)."""
    x, labels = jax.jit(_gm().sample_with_labels, static_argnums=1)(jax.random.PRNGKey(0), n)
    assert x.dtype == jnp.float64
    return np.asarray(x), np.asarray(labels)


def _gm(stds=STDS):
    return M.GaussianMixture(jnp.asarray(MEANS), jnp.asarray(stds), jnp.asarray(WEIGHTS))


def _numpy_mixture_log_prob(x, means, variances, weights):
    """log sum_k w_k (2 pi v_k)^(-d/2) exp(-|x - m_k|^2 / (2 v_k)), written directly in numpy."""
    d = x.shape[-1]
    sq = ((x[..., None, :] - means) ** 2).sum(-1)
    dens = (weights * (2 * np.pi * variances) ** (-d / 2) * np.exp(-sq / (2 * variances))).sum(-1)
    return np.log(dens)


_log_prob = jax.jit(lambda gm, x: gm.log_prob(x))


def test_log_prob_matches_direct_formula(x64):
    gm = _gm()
    for x in (X, X.reshape(5, 1, 2)):
        np.testing.assert_allclose(_log_prob(gm, x), _numpy_mixture_log_prob(x, MEANS, STDS**2, WEIGHTS), rtol=1e-12)
    assert _log_prob(gm, X.reshape(5, 1, 2)).shape == (5, 1)
    assert jax.eval_shape(gm.log_prob, jax.ShapeDtypeStruct((2,), jnp.float64)).shape == ()


def test_point_mass_log_prob(x64):
    gm = M.GaussianMixture(jnp.asarray(MEANS), jnp.asarray([0.5, 0.0, 0.8]), jnp.asarray(WEIGHTS))
    x = jnp.asarray([MEANS[1], X[0]])
    out = np.asarray(_log_prob(gm, x))
    assert out[0] == np.inf  # on the atom
    keep = [0, 2]  # off the atom only the Gaussian components contribute
    ref = _numpy_mixture_log_prob(X[0], MEANS[keep], np.array([0.25, 0.64]), WEIGHTS[keep])
    np.testing.assert_allclose(out[1], ref, rtol=1e-12)
    empirical = M.GaussianMixture.from_points(jnp.asarray(MEANS))
    np.testing.assert_allclose(empirical.weights, [1 / 3] * 3)
    np.testing.assert_array_equal(empirical.stds, 0.0)
    np.testing.assert_array_equal(_log_prob(empirical, jnp.asarray([MEANS[2], X[0]])), [np.inf, -np.inf])
    # a NaN point is NaN (not -inf "off every atom"), under jit too
    nan_x = jnp.asarray([X[0], [np.nan, 0.0]])
    assert np.isnan(np.asarray(_log_prob(empirical, nan_x))[1])
    assert np.isnan(np.asarray(jax.jit(M.marginal_log_prob, static_argnums=0)(S.LinearScheduler(), empirical, nan_x, 1.0))[1])


def test_half_precision_points_are_accumulated_in_float32():
    # d = 8 coordinates of 100: |x - m|^2 ~ 8e4 overflows float16 (max 65504); the result is in x's dtype
    gm = M.GaussianMixture(jnp.zeros((2, 8)).at[1].set(1.0), jnp.asarray([40.0, 60.0]))
    x = jnp.full((3, 8), 100.0).at[1].set(-100.0)
    got = gm.log_prob(x.astype(jnp.float16))
    assert got.dtype == jnp.float16
    np.testing.assert_allclose(np.asarray(got, np.float32), gm.log_prob(x), rtol=1e-2)
    u = M.marginal_velocity(S.LinearScheduler(), gm, x.astype(jnp.float16), 0.9)
    assert u.dtype == jnp.float16
    np.testing.assert_allclose(np.asarray(u, np.float32), M.marginal_velocity(S.LinearScheduler(), gm, x, 0.9), rtol=1e-2)


def test_mean_and_covariance_closed_form(x64):
    gm = _gm()
    mu = (WEIGHTS[:, None] * MEANS).sum(0)
    cov = sum(w * (s**2 * np.eye(2) + np.outer(m - mu, m - mu)) for w, s, m in zip(WEIGHTS, STDS, MEANS))
    np.testing.assert_allclose(gm.mean(), mu, rtol=1e-14)
    np.testing.assert_allclose(gm.covariance(), cov, rtol=1e-13)


def test_sample_statistics(x64):
    gm = _gm()
    x, labels = samples()
    n = x.shape[0]
    chex.assert_shape(x, (n, 2))
    chex.assert_shape(labels, (n,))
    # standard errors: ~0.006 for means, ~0.0016 for frequencies; tolerances are ~5-8 of them
    np.testing.assert_allclose(x.mean(0), gm.mean(), atol=0.05)
    np.testing.assert_allclose(np.cov(x.T), gm.covariance(), atol=0.08)
    np.testing.assert_allclose(np.bincount(labels, minlength=3) / n, WEIGHTS, atol=0.015)
    for k in range(3):
        xk = x[labels == k]
        np.testing.assert_allclose(xk.mean(0), MEANS[k], atol=5 * STDS[k] / np.sqrt(len(xk)) + 1e-3)
        np.testing.assert_allclose(xk.std(0), STDS[k], rtol=0.05)
    key = jax.random.PRNGKey(0)
    assert jax.eval_shape(lambda: gm.sample(key, 7)).shape == (7, 2)
    assert jax.eval_shape(lambda: gm.sample_with_labels(key, 7)[1]).shape == (7,)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_marginal_log_prob_closed_form_and_endpoints(name, x64):
    """p_t = sum_k w_k N(alpha m_k, (alpha^2 s_k^2 + beta^2) I); at t = 1 it is p_data."""
    sched, gm = SCHEDULERS[name], _gm()
    t = np.array([0.0, 0.3, 0.8, 0.95, 1.0])
    alpha, beta = (np.asarray(v)[:, None] for v in sched(t))  # per example (row) of X
    ref = _numpy_mixture_log_prob(X, alpha[..., None] * MEANS, alpha**2 * STDS**2 + beta**2, WEIGHTS)
    log_prob = fields(sched, gm, X, t)["log_prob"]
    np.testing.assert_allclose(log_prob, ref, rtol=1e-12)
    np.testing.assert_allclose(log_prob[-1], _numpy_mixture_log_prob(X[-1], MEANS, STDS**2, WEIGHTS), rtol=1e-12)
    if name != "vp":  # alpha_0 = 0: p_0 = N(0, I)
        np.testing.assert_allclose(log_prob[0], -0.5 * (X[0] ** 2).sum() - np.log(2 * np.pi), rtol=1e-12)


def test_marginal_density_is_the_law_of_the_path(x64):
    """Monte Carlo: p_t(x) = E_{z ~ p_data}[N(x; alpha_t z, beta_t^2 I)] (the convolution)."""
    sched, gm, t = SCHEDULERS["cosine"], _gm(), 0.6
    z = samples()[0]
    alpha, beta = np.sin(0.3 * np.pi), np.cos(0.3 * np.pi)
    sq = ((X[:, None, :] - alpha * z[None]) ** 2).sum(-1)
    dens = np.exp(-sq / (2 * beta**2)) / (2 * np.pi * beta**2)
    mc, se = dens.mean(1), dens.std(1) / np.sqrt(z.shape[0])
    exact = np.exp(fields(sched, gm, X, t)["log_prob"])
    assert (se < 0.02 * mc).all()
    np.testing.assert_array_less(np.abs(mc - exact), 5 * se)


@functools.partial(jax.jit, static_argnums=0)
def _autodiff(sched, gm, x, t):
    """Per example: d/dt p_t, -div(p_t u_t) and grad log p_t, by autodiff."""

    def density(xi, ti):
        return jnp.exp(M.marginal_log_prob(sched, gm, xi, ti))

    def flux(xi, ti):
        return density(xi, ti) * M.marginal_velocity(sched, gm, xi, ti)

    def one(xi, ti):
        return dict(
            dp_dt=jax.jacfwd(density, argnums=1)(xi, ti),
            minus_div=-jnp.trace(jax.jacfwd(flux)(xi, ti)),
            grad_log_prob=jax.grad(lambda y: M.marginal_log_prob(sched, gm, y, ti))(xi),
        )

    return jax.vmap(one)(x, t)


@functools.lru_cache(maxsize=None)
def autodiff(name):
    gm = _gm([0.5, 0.0, 0.8])  # with a point mass
    x = jnp.asarray(X * 0.7)
    out = jax.tree.map(np.asarray, _autodiff(SCHEDULERS[name], gm, x, jnp.asarray(T)))
    out["score"] = fields(SCHEDULERS[name], gm, x, T)["score"]
    return out


# one compilation of the autodiff graph per scheduler: the exact-endpoint ones plus the two
# with singular derivatives (sqrt: d_beta -> -inf at t=1) and alpha_0 != 0 (vp)
AUTODIFF_SCHEDULERS = ["linear", "cosine", "sqrt", "vp"]


@pytest.mark.parametrize("name", AUTODIFF_SCHEDULERS)
def test_score_is_grad_of_marginal_log_prob(name, x64):
    q = autodiff(name)
    np.testing.assert_allclose(q["score"], q["grad_log_prob"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", AUTODIFF_SCHEDULERS)
def test_continuity_equation(name, x64):
    """d/dt p_t(x) = -div(p_t u_t)(x) (lecture 2) with u_t = marginal_velocity, by autodiff:
    jacfwd in t for the left side, the trace of jacfwd in x for the divergence."""
    q = autodiff(name)
    assert np.abs(q["dp_dt"]).max() > 1e-3  # the density really changes in time
    np.testing.assert_allclose(q["dp_dt"], q["minus_div"], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("field", ["velocity", "score"])
def test_marginal_field_is_monte_carlo_posterior_average(field, x64):
    """u_t(x) = E[u_t(x|z) | x_t = x], z ~ p_data weighted by p_t(x|z) (self-normalised)."""
    sched, gm, t, alpha, beta = SCHEDULERS["linear"], _gm(), 0.5, 0.5, 0.5
    z = jnp.asarray(samples()[0])
    conditional = P.conditional_velocity if field == "velocity" else P.conditional_score
    exact = fields(sched, gm, X, t)[field]
    for i, xi in enumerate(X):
        logw = -((xi - alpha * np.asarray(z)) ** 2).sum(-1) / (2 * beta**2)
        w = np.exp(logw - logw.max())
        w /= w.sum()
        u = np.asarray(conditional(sched, jnp.broadcast_to(jnp.asarray(xi), z.shape), z, t))
        est = w @ u
        se = np.sqrt((w[:, None] ** 2 * (u - est) ** 2).sum(0))  # delta-method standard error
        assert (se < 0.05).all()
        np.testing.assert_array_less(np.abs(est - exact[i]), 5 * se + 1e-6)


def test_field_parameterisations_and_posterior(x64):
    sched, gm = SCHEDULERS["cosine"], _gm([0.5, 0.0, 0.8])
    x, t = jnp.asarray(X), jnp.asarray(T)
    q = fields(sched, gm, X, T)
    w = q["weights"]
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-14)
    # posterior weights by Bayes' rule in numpy
    alpha, beta = (np.asarray(v)[:, None] for v in sched(t))
    var = alpha**2 * np.array([0.25, 0.0, 0.64]) + beta**2
    sq = ((X[:, None, :] - alpha[..., None] * MEANS) ** 2).sum(-1)
    joint = WEIGHTS * np.exp(-sq / (2 * var)) / (2 * np.pi * var)
    np.testing.assert_allclose(w, joint / joint.sum(-1, keepdims=True), rtol=1e-10)
    # the public wrappers are the matching marginal_field calls
    public = (M.posterior_mean, M.marginal_velocity, M.marginal_score, M.posterior_weights)
    wrappers = jax.jit(lambda x, t: [f(sched, gm, x, t) for f in public])(x, t)
    for value, ref in zip(wrappers, (q["data"], q["velocity"], q["score"], w)):
        np.testing.assert_allclose(value, ref, rtol=1e-13)
    # x = alpha E[z|x] + beta E[eps|x]
    np.testing.assert_allclose(alpha * q["data"] + beta * q["noise"], X, rtol=1e-12, atol=1e-12)
    # alpha_0 = 0: the posterior is the prior, E[z | x_0] = E[z]
    np.testing.assert_allclose(fields(sched, gm, X, 0.0)["data"], np.broadcast_to(gm.mean(), X.shape), atol=1e-14)


def test_point_masses_give_the_empirical_optimal_denoiser(x64):
    points = np.random.default_rng(1).normal(size=(6, 2))
    gm = M.GaussianMixture.from_points(jnp.asarray(points))
    sched, t = SCHEDULERS["linear"], 0.8
    logits = -((X[:, None, :] - t * points) ** 2).sum(-1) / (2 * (1 - t) ** 2)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    q = fields(sched, gm, X, t)
    np.testing.assert_allclose(q["data"], w @ points, rtol=1e-10)
    # u_t(x) = (E[z|x] - x) / (1 - t) for CondOT
    np.testing.assert_allclose(q["velocity"], (w @ points - X) / (1 - t), rtol=1e-10)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_high_dimension_far_apart_components(dtype, x64):
    """d = 512, components 6 sqrt(d) apart: densities underflow, the log-sum-exp fields are
    exactly those of the nearest component."""
    d, t = 512, 0.7
    sched = SCHEDULERS["linear"]
    means = np.stack([3 * np.ones(d), -3 * np.ones(d)])
    stds, weights = np.array([0.5, 0.7]), np.array([0.4, 0.6])
    gm = M.GaussianMixture(jnp.asarray(means, dtype), jnp.asarray(stds, dtype), jnp.asarray(weights, dtype))
    var = t**2 * stds**2 + (1 - t) ** 2
    d_var = 2 * t * stds**2 - 2 * (1 - t)
    xi = np.random.default_rng(2).normal(size=(2, d))
    x = t * means + np.sqrt(var)[:, None] * xi  # x[k] is a typical point of component k
    outputs = fields(sched, gm, jnp.asarray(x, dtype), t)
    outputs.pop("noise")
    near = {
        "log_prob": np.log(weights) - 0.5 * (xi**2).sum(-1) - 0.5 * d * np.log(2 * np.pi * var),
        "score": -(x - t * means) / var[:, None],
        "velocity": means + (d_var / (2 * var))[:, None] * (x - t * means),
        "data": means + (t * stds**2 / var)[:, None] * (x - t * means),
    }
    rtol = 1e-5 if dtype == jnp.float32 else 1e-12
    for k, value in outputs.items():
        assert value.dtype == dtype and np.isfinite(value).all(), k
        if k == "weights":
            np.testing.assert_array_equal(value, np.eye(2))  # one-hot: the other term underflows
        else:
            np.testing.assert_allclose(value, near[k], rtol=rtol, atol=rtol, err_msg=k)
    # the naive density exp(log N) underflows to 0 in float32: a ratio of densities would be 0/0
    assert np.exp(near["log_prob"].astype(np.float32)).max() == 0.0


def test_select_gives_class_conditional_mixtures(x64):
    gm = _gm([0.5, 0.0, 0.8])
    sched, x, t = SCHEDULERS["cosine"], jnp.asarray(X), jnp.asarray(T)
    classes = np.array([0, 1, 0])  # class of each component
    direct = M.GaussianMixture(jnp.asarray(MEANS[[0, 2]]), jnp.asarray([0.5, 0.8]), jnp.asarray(WEIGHTS[[0, 2]] / 0.5))
    by_mask, by_index = gm.select(jnp.asarray(classes == 0)), gm.select(jnp.asarray([0, 2]))
    np.testing.assert_allclose(by_mask.weights, [0.4, 0.0, 0.6])
    ref = fields(sched, direct, X, T)["velocity"]
    np.testing.assert_allclose(fields(sched, by_mask, X, T)["velocity"], ref, rtol=1e-12)
    np.testing.assert_allclose(fields(sched, by_index, X, T)["velocity"], ref, rtol=1e-12)
    assert not np.allclose(ref, fields(sched, gm, X, T)["velocity"])
    # per-example labels under vmap (a traced mask): the fields of u(x | y) for a batch
    y = jnp.asarray([1, 0, 0, 1, 0])

    def one_example(xi, ti, yi):
        return M.marginal_velocity(sched, gm.select(jnp.asarray(classes) == yi), xi, ti)

    batched = jax.jit(jax.vmap(one_example))(x, t, y)
    only_1 = fields(sched, gm.select(jnp.asarray(classes) == 1), X, T)["velocity"]
    expected = np.where(np.asarray(y)[:, None] == 1, only_1, ref)
    np.testing.assert_allclose(batched, expected, rtol=1e-12)


def test_jit_pytree_and_dtypes(x64):
    sched = SCHEDULERS["vp"]

    @jax.jit
    @chex.assert_max_traces(n=1)
    def velocity(gm, x, t):
        return M.marginal_velocity(sched, gm, x, t)

    x, t = jnp.asarray(X), jnp.asarray(T)
    gm1, gm2 = _gm(), M.GaussianMixture(jnp.asarray(-MEANS), jnp.asarray(STDS * 2), jnp.asarray(WEIGHTS[::-1].copy()))
    ref1, ref2 = fields(sched, gm1, X, T), fields(sched, gm2, X, T)
    np.testing.assert_allclose(velocity(gm1, x, t), ref1["velocity"], rtol=1e-12)
    np.testing.assert_allclose(velocity(gm2, x, t), ref2["velocity"], rtol=1e-12)  # no retrace
    assert not np.allclose(ref1["velocity"], ref2["velocity"])
    assert jax.tree.map(jnp.shape, gm1).means == (3, 2)  # tree operations do not re-validate
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(gm1)[0]]
    assert paths == [".means", ".stds", ".weights"]
    # built inside jit from traced arrays (value checks skipped, shapes checked)
    inside = jax.jit(lambda m, s, w, x, t: M.marginal_score(sched, M.GaussianMixture(m, s, w), x, t))
    np.testing.assert_allclose(inside(gm1.means, gm1.stds, gm1.weights, x, t), ref1["score"], rtol=1e-12)
    # float32 x with a float64 mixture and float64 t: float32 out
    x32 = x.astype(jnp.float32)
    for p in P.PARAMETERIZATIONS:
        assert jax.eval_shape(lambda: M.marginal_field(sched, gm1, x32, t, p)).dtype == jnp.float32
    assert jax.eval_shape(lambda: M.marginal_log_prob(sched, gm1, x32, t)).dtype == jnp.float32
    assert jax.eval_shape(lambda: gm1.log_prob(x32)).dtype == jnp.float32
    # a single point (d,) with a scalar t; a scalar t for a batch
    single, scalar_t = jax.jit(
        lambda x, t: (M.marginal_velocity(sched, gm1, x[2], t[2]), M.marginal_velocity(sched, gm1, x, t[2]))
    )(x, t)
    np.testing.assert_allclose(single, ref1["velocity"][2], rtol=1e-12)
    np.testing.assert_allclose(scalar_t, fields(sched, gm1, X, T[2])["velocity"], rtol=1e-12)


def test_invalid_mixtures_raise():
    m, s, w = MEANS, STDS, WEIGHTS
    cases = [
        ((m[0], s, w), r"means must have shape \(K, d\)"),
        ((m, s[:2], w), r"stds must have shape \(K,\) = \(3,\)"),
        ((m, s, w[:2]), r"weights must have shape \(K,\) = \(3,\)"),
        ((m, s, w * 2), "weights must sum to 1"),
        ((m, s, np.array([1.2, -0.5, 0.3])), "weights must be finite and >= 0"),
        ((m, np.array([0.5, -0.1, 0.3]), w), "stds must be finite and >= 0"),
        ((np.where(m > 1.9, np.nan, m), s, w), "means must be finite"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            M.GaussianMixture(*args)
    gm = M.GaussianMixture(m, 0.5)  # scalar std broadcast, uniform weights by default
    np.testing.assert_allclose(gm.weights, [1 / 3] * 3)
    np.testing.assert_allclose(gm.stds, [0.5] * 3)
    with pytest.raises(ValueError, match="zero total weight"):
        M.GaussianMixture(m, s, np.array([0.0, 1.0, 0.0])).select(np.array([True, False, True]))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 3\)"):
        gm.select(np.array([0, 3]))
    with pytest.raises(ValueError, match="boolean mask"):
        gm.select(np.array([0.5, 1.0]))
    for bad in (np.zeros(3), np.zeros((0, 2))):
        with pytest.raises(ValueError, match=r"shape \(N, d\) with N >= 1"):
            M.GaussianMixture.from_points(bad)


def test_invalid_field_arguments_raise():
    gm, sched, x = _gm(), SCHEDULERS["linear"], jnp.asarray(X)
    with pytest.raises(ValueError, match=r"x must have shape \(B, d\) or \(d,\) with d = gm.dim = 2"):
        M.marginal_velocity(sched, gm, jnp.zeros((5, 3)), 0.5)
    with pytest.raises(ValueError, match=r"x must have shape"):
        M.marginal_score(sched, gm, jnp.zeros((5, 1, 2)), 0.5)
    with pytest.raises(ValueError, match=r"scalar or have shape \(B,\)"):
        M.marginal_log_prob(sched, gm, x, jnp.full((4,), 0.5))
    with pytest.raises(ValueError, match="needs a scalar t"):
        M.marginal_velocity(sched, gm, x[0], jnp.asarray([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"t must lie in \[0.0, 1.0\]"):
        M.marginal_velocity(sched, gm, x, 1.5)
    with pytest.raises(ValueError, match="unknown parameterization 'eps'"):
        M.marginal_field(sched, gm, x, 0.5, "eps")
    with pytest.raises(TypeError, match="GaussianMixture"):
        M.marginal_score(sched, (MEANS, STDS, WEIGHTS), x, 0.5)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., d\) with d = 2"):
        gm.log_prob(jnp.zeros((4, 3)))
