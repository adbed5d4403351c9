"""Tests for jflow.likelihood: instantaneous change of variables against closed-form densities."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflow import integrators as I
from jflow import likelihood as L
from jflow import marginals as M
from jflow.schedulers import LinearScheduler

SCHED = LinearScheduler()
GM = M.GaussianMixture(jnp.array([[-1.5, 0.0], [1.5, 0.5]]), jnp.array([0.5, 0.7]), jnp.array([0.6, 0.4]))


def u_mixture(x, t):
    return M.marginal_velocity(SCHED, GM, x, t)


def u_scale(x, t, a):
    """dx/dt = a x: X_1 = e^a X_0, so from N(0, I) the law at t = 1 is N(0, e^{2a} I)."""
    return a * x


def log_normal_scaled(x, a):
    d = int(np.prod(x.shape[1:]))
    sq = jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=1)
    return -0.5 * sq * jnp.exp(-2 * a) - d * a - 0.5 * d * math.log(2 * math.pi)


@jax.jit
def _mixture_ll_and_references(x, ts):
    """Backward-ODE log-likelihood from ts[0], the exact log p_{ts[0]}, and gm.log_prob (one compile)."""
    ll = L.log_likelihood(u_mixture, x, ts, method="rk4")
    return ll, M.marginal_log_prob(SCHED, GM, x, ts[0]), GM.log_prob(x)


def test_exact_likelihood_matches_mixture_log_prob():
    x = jnp.concatenate([GM.sample(jax.random.PRNGKey(0), 14), jnp.array([[0.0, 0.0], [3.0, -2.0]])])
    ll, _, log_prob = _mixture_ll_and_references(x, I.uniform_grid(40, 1.0, 0.0))
    np.testing.assert_allclose(ll, log_prob, atol=5e-5)
    # starting the backward ODE at t = 0.7 gives the log-density of the marginal p_0.7 (same compiled function)
    ll, marginal, _ = _mixture_ll_and_references(x, I.uniform_grid(40, 0.7, 0.0))
    np.testing.assert_allclose(ll, marginal, atol=5e-5)
    assert float(jnp.max(jnp.abs(marginal - log_prob))) > 0.1  # the two references differ


def test_divergence_exact_closed_form():
    a = jnp.array([[1.0, 2.0, 0.5], [-1.0, 0.3, 0.0], [4.0, 1.0, -2.0]])
    x = jax.random.normal(jax.random.PRNGKey(2), (5, 3))
    linear, nonlinear = jax.jit(
        lambda x: (L.divergence_exact(lambda x, t: x @ a.T + t, x, 0.5), L.divergence_exact(lambda x, t: jnp.sin(x), x, 0.0))
    )(x)
    np.testing.assert_allclose(linear, jnp.full(5, -0.7), rtol=1e-5)  # tr A
    np.testing.assert_allclose(nonlinear, jnp.cos(x).sum(1), rtol=1e-5)  # div sin(x) = sum cos(x)


def test_likelihood_image_shaped_closed_form_and_gradient():
    # data of shape (B, 2, 2, 1) (d = 4) under dx/dt = a x: log N(x; 0, e^{2a} I)
    x = jax.random.normal(jax.random.PRNGKey(3), (6, 2, 2, 1))
    ts = I.uniform_grid(20, 1.0, 0.0)
    f = jax.jit(lambda a, x: L.log_likelihood(u_scale, x, ts, method="rk4", args=(a,)))
    np.testing.assert_allclose(f(0.4, x), log_normal_scaled(x, 0.4), rtol=1e-5, atol=1e-5)
    # maximum-likelihood gradient through the backward ODE: d/da log p = |x|^2 e^{-2a} - d
    g = jax.jit(jax.grad(lambda a, x: f(a, x).sum()))(0.4, x)
    np.testing.assert_allclose(g, float(jnp.sum(x**2) * jnp.exp(-0.8) - 6 * 4), rtol=1e-4)


W1 = jax.random.normal(jax.random.PRNGKey(30), (3, 8))
W2 = jax.random.normal(jax.random.PRNGKey(31), (8, 3)) / 3


def u_mlp(x, t):
    """A small nonlinear field with a dense, state-dependent Jacobian."""
    return jnp.tanh(x @ W1 + t) @ W2


def test_hutchinson_is_unbiased():
    # with the probe fixed along the trajectory the estimate is linear in the probe's outer
    # product, so its mean over probes is the exact value of the same discretisation
    x = jax.random.normal(jax.random.PRNGKey(4), (8, 3))
    ts = I.uniform_grid(10, 1.0, 0.0)
    exact = L.log_likelihood(u_mlp, x, ts, method="midpoint")

    @jax.jit
    @jax.vmap
    def hutch(key):
        return L.log_likelihood(u_mlp, x, ts, method="midpoint", divergence="hutchinson", key=key)

    est = hutch(jax.random.split(jax.random.PRNGKey(5), 400))  # (400, 8)
    assert float(est.std(0).min()) > 1e-2  # it is an estimator (random), not the exact value
    se = est.std(0) / np.sqrt(est.shape[0])
    assert bool(jnp.all(jnp.abs(est.mean(0) - exact) < 4 * se)), (est.mean(0) - exact, se)


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_probes_average_to_trace(kind):
    a = jnp.array([[0.5, 0.3, -0.2], [0.1, -0.3, 0.3], [-0.3, 0.2, 0.1]])
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 3))
    u = lambda x, t: x @ a.T
    rng = np.random.default_rng(3)
    shape = (4000, 4, 3)
    probes = rng.choice([-1.0, 1.0], shape) if kind == "rademacher" else rng.standard_normal(shape)
    probes = jnp.asarray(probes, jnp.float32)
    est = L.divergence_hutchinson(u, x, 0.0, probes)
    np.testing.assert_allclose(est, jnp.full(4, 0.3), atol=0.12)  # ~4 standard errors
    # the same estimate written out: mean_p eps_p^T A eps_p
    np.testing.assert_allclose(est, jnp.einsum("pbi,ij,pbj->pb", probes, a, probes).mean(0), rtol=1e-4, atol=1e-4)
    # in log_likelihood: n_probes averaged probes of the chosen kind (divergence constant = tr A)
    ts = I.uniform_grid(2, 1.0, 0.0)
    ll = L.log_likelihood(u, x, ts, method="euler", divergence="hutchinson", key=jax.random.PRNGKey(4), probe=kind, n_probes=4000)
    exact = L.log_likelihood(u, x, ts, method="euler")
    np.testing.assert_allclose(ll, exact, atol=0.12)


def test_hutchinson_probe_fixed_along_trajectory():
    # for a linear field, a fixed Rademacher probe gives exactly the trace of a diagonal Jacobian
    a = jnp.array([0.3, -0.2, 0.5])
    u = lambda x, t: x * a * jnp.cos(t)
    x = jax.random.normal(jax.random.PRNGKey(6), (4, 3))
    ts = I.uniform_grid(30, 1.0, 0.0)
    exact = L.log_likelihood(u, x, ts)
    hutch = L.log_likelihood(u, x, ts, divergence="hutchinson", key=jax.random.PRNGKey(7))
    np.testing.assert_allclose(hutch, exact, rtol=1e-5, atol=1e-5)


def test_bits_per_dim_closed_form():
    x_int = jnp.asarray(np.random.default_rng(8).integers(0, 256, (5, 2, 2, 1)))
    key = jax.random.PRNGKey(9)
    a = 0.2

    @jax.jit
    def run(x_int, key):
        bpd = L.bits_per_dim(u_scale, x_int, I.uniform_grid(20, 1.0, 0.0), key=key, method="rk4", args=(a,))
        return bpd, jax.random.uniform(jax.random.split(key)[0], x_int.shape)  # the documented dequantisation noise

    bpd, v = run(x_int, key)
    # independent: map [0, 256) -> [-1, 1), closed-form density of N(0, e^{2a} I), change of units
    z = -1.0 + 2.0 * (np.asarray(x_int) + np.asarray(v)) / 256.0
    d = 4
    expected = -(log_normal_scaled(jnp.asarray(z), a) + d * math.log(2.0) - d * math.log(256.0)) / (d * math.log(2.0))
    np.testing.assert_allclose(bpd, expected, rtol=1e-5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: L.log_likelihood(u_mixture, jnp.zeros((2, 2)), I.uniform_grid(4)), "decrease"),
        (lambda: L.log_likelihood(u_mixture, jnp.zeros((2, 2)), I.uniform_grid(4, 1.0, 0.0), divergence="trace"), "unknown divergence"),
        (lambda: L.log_likelihood(u_mixture, jnp.zeros((2, 2)), I.uniform_grid(4, 1.0, 0.0), divergence="hutchinson"), "PRNG key"),
        (lambda: L.log_likelihood(u_mixture, jnp.zeros((2, 2)), I.uniform_grid(4, 1.0, 0.0), probe="uniform"), "unknown probe"),
        (lambda: L.log_likelihood(u_mixture, jnp.zeros((2,)), I.uniform_grid(4, 1.0, 0.0)), "batch axis"),
        (lambda: L.bits_per_dim(u_mixture, jnp.full((2, 2), 256), I.uniform_grid(4, 1.0, 0.0), key=jax.random.PRNGKey(0)), "integer pixel"),
        (lambda: L.bits_per_dim(u_mixture, jnp.full((2, 2), 1.5), I.uniform_grid(4, 1.0, 0.0), key=jax.random.PRNGKey(0)), "integer pixel"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_singular_end_of_a_converted_field_raises_and_a_shorter_grid_works():
    from jflow.sampling import as_velocity

    # data N(0, I) on the CondOT path: p_t = N(0, v_t I), v_t = t^2 + (1 - t)^2, score -x / v_t
    score_model = lambda x, t: -x / (t * t + (1.0 - t) ** 2)
    u = as_velocity(score_model, SCHED, "score")  # singular at t = 0 (alpha_0 = 0)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 2))
    with pytest.raises(ValueError, match=r"log_likelihood: u .* singular at t = 0 .*uniform_grid\(8, t0=1, t1=0.001\)"):
        L.log_likelihood(u, x, I.uniform_grid(8, 1.0, 0.0))  # rk4 evaluates the last step's right end, t = 0
    # stopping at t = 1e-3, where p_t = N(0, 0.998 I) is taken as N(0, I): log N(x; 0, I) up to O(1e-3)
    ll = L.log_likelihood(u, x, I.uniform_grid(8, 1.0, 1e-3))
    np.testing.assert_allclose(ll, L.standard_normal_log_prob(x), atol=5e-3)


def test_half_precision_data_is_integrated_in_float32():
    x = jax.random.normal(jax.random.PRNGKey(3), (4, 3)) * 4.0
    ts = I.uniform_grid(8, 1.0, 0.0)
    ll16 = L.log_likelihood(u_scale, x.astype(jnp.float16), ts, args=(0.3,))
    ll32 = L.log_likelihood(u_scale, x.astype(jnp.float16).astype(jnp.float32), ts, args=(0.3,))
    assert ll16.dtype == jnp.float32
    np.testing.assert_allclose(ll16, ll32, rtol=1e-6)
    big = jnp.full((1, 3000), 8.0, jnp.float16)  # |x|^2 = 192000 overflows float16
    np.testing.assert_allclose(L.standard_normal_log_prob(big), -0.5 * 192000 - 1500 * math.log(2 * math.pi), rtol=1e-6)
    # numpy integers are accepted where a Python int is expected
    hutch = L.log_likelihood(u_scale, x, ts, divergence="hutchinson", key=jax.random.PRNGKey(1), n_probes=np.int64(2), args=(0.3,))
    np.testing.assert_allclose(hutch, L.log_likelihood(u_scale, x, ts, args=(0.3,)), rtol=1e-5)  # a x: tr = 3a exactly
