"""Gaussian conditional paths: fields vs autodiff, the twelve conversions (round trips, the
exact marginal fields of a Gaussian mixture, endpoint behaviour), t broadcasting, errors,
and bridges. Each scheduler's interior quantities come from one float64 function run
eagerly: with tiny fixed shapes, cached primitives cost far less than compiling one large
function per scheduler."""
import functools
import itertools

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
PARAMS = P.PARAMETERIZATIONS
PAIRS = [(s, t) for s, t in itertools.permutations(PARAMS, 2)]
B, D = 4, 3
T = np.array([0.1, 0.35, 0.6, 0.85])
_rng = np.random.default_rng(0)
Z, EPS, R = (_rng.normal(size=(B, D)) for _ in range(3))
MEANS = np.array([[1.0, -1.0, 0.5], [-1.5, 0.5, 0.0], [0.0, 2.0, -1.0]])
MIXED = dict(means=MEANS, stds=np.array([0.5, 0.0, 1.2]), weights=np.array([0.3, 0.2, 0.5]))  # a point mass
SMOOTH = dict(means=MEANS, stds=np.array([0.5, 0.8, 1.2]), weights=np.array([0.3, 0.2, 0.5]))


def _log_normal(x, mean, std):
    """log N(x; mean, std^2 I) of one point, written out (independent of the library)."""
    d = x.shape[-1]
    return -0.5 * jnp.sum((x - mean) ** 2) / std**2 - 0.5 * d * jnp.log(2 * jnp.pi * std**2)


def _interior_eager(sched, z, eps, r, t, means, stds, weights):
    x = P.sample_conditional(sched, z, eps, t)
    # d/dt (alpha_t z + beta_t eps): example i depends on t_i only, so a tangent of ones is exact
    dxdt = jax.jvp(lambda s: P.sample_conditional(sched, z, eps, s), (t,), (jnp.ones_like(t),))[1]

    def log_density(xi, zi, ti):
        alpha, beta = sched(ti)
        return _log_normal(xi, alpha * zi, beta)

    _, beta = sched(t)
    # the four parameterisations of the conditional field at x (module table of paths.py)
    table = {"velocity": dxdt, "score": -eps / beta[:, None], "noise": eps, "data": z}
    gm = M.GaussianMixture(means, stds, weights)
    exact = {p: M.marginal_field(sched, gm, x, t, p) for p in PARAMS}
    return dict(
        x=x,
        dxdt=dxdt,
        conditional_velocity=P.conditional_velocity(sched, x, z, t),
        path_velocity=P.path_velocity(sched, z, eps, t),
        conditional_score=P.conditional_score(sched, x, z, t),
        grad_log_density=jax.vmap(jax.grad(log_density))(x, z, t),
        table=table,
        targets={p: P.conditional_target(sched, z, eps, t, p) for p in PARAMS},
        converted={f"{s}>{g}": P.convert(sched, table[s], x, t, source=s, target=g) for s, g in PAIRS},
        round_trip={
            f"{s}>{g}": P.convert(sched, P.convert(sched, r, x, t, source=s, target=g), x, t, source=g, target=s)
            for s, g in PAIRS
        },
        exact=exact,
        exact_converted={f"{s}>{g}": P.convert(sched, exact[s], x, t, source=s, target=g) for s, g in PAIRS},
    )


@functools.lru_cache(maxsize=None)
def interior(name):
    """All interior-t quantities for one scheduler, in float64 (call from a test using ``x64``)."""
    out = _interior_eager(SCHEDULERS[name], Z, EPS, R, jnp.asarray(T), **{k: jnp.asarray(v) for k, v in MIXED.items()})
    assert out["x"].dtype == jnp.float64
    return jax.tree.map(np.asarray, out)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_conditional_velocity_is_time_derivative_of_path(name, x64):
    q = interior(name)
    np.testing.assert_allclose(q["conditional_velocity"], q["dxdt"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(q["path_velocity"], q["dxdt"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_conditional_score_is_grad_of_gaussian_log_density(name, x64):
    q = interior(name)
    np.testing.assert_allclose(q["conditional_score"], q["grad_log_density"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_conditional_targets(name, x64):
    q = interior(name)
    for p in PARAMS:
        np.testing.assert_allclose(q["targets"][p], q["table"][p], rtol=1e-10, atol=1e-12, err_msg=p)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_conversions_of_conditional_fields(name, x64):
    """convert maps each parameterisation of u(x|z), grad log p(x|z), eps, z to every other."""
    q = interior(name)
    for s, g in PAIRS:
        np.testing.assert_allclose(q["converted"][f"{s}>{g}"], q["table"][g], rtol=1e-9, atol=1e-10, err_msg=f"{s}>{g}")


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_conversions_round_trip(name, x64):
    q = interior(name)
    for pair, value in q["round_trip"].items():
        np.testing.assert_allclose(value, R, rtol=1e-9, atol=1e-10, err_msg=pair)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_conversions_of_exact_marginal_fields(name, x64):
    """The real check: convert(marginal_score -> velocity) == marginal_velocity, etc., for a
    Gaussian mixture with a point mass (the marginal fields are not the conditional ones)."""
    q = interior(name)
    assert not np.allclose(q["exact"]["velocity"], q["table"]["velocity"])
    for s, g in PAIRS:
        np.testing.assert_allclose(
            q["exact_converted"][f"{s}>{g}"], q["exact"][g], rtol=1e-9, atol=1e-10, err_msg=f"{s}>{g}"
        )


# Where paths.convert's docstring says a conversion is finite, read pair by pair (alpha_0 = 0, beta_1 = 0).
DEFINED = {
    0.0: {"velocity>data", "velocity>noise", "velocity>score", "data>velocity", "data>noise", "data>score",
          "score>noise", "noise>score"},
    1.0: {"velocity>data", "velocity>noise", "noise>data", "noise>velocity", "score>data", "score>velocity",
          "score>noise"},
}


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("t", [0.0, 1.0])
def test_conversions_at_endpoints(name, t, x64):
    """Finite exactly where documented, and there equal to the exact marginal field of a
    mixture with stds > 0 (e.g. velocity -> data at t = 1 gives E[z | x_1 = x] = x, and at
    t = 0 gives E[z] for every x)."""
    sched = SCHEDULERS[name]
    gm = M.GaussianMixture(**{k: jnp.asarray(v) for k, v in SMOOTH.items()})
    x = jnp.asarray(EPS)
    exact = {p: M.marginal_field(sched, gm, x, t, p) for p in PARAMS}
    for p, value in exact.items():
        assert np.isfinite(value).all(), p
    if t == 0.0:
        np.testing.assert_allclose(exact["data"], np.broadcast_to(gm.mean(), x.shape), rtol=1e-12, atol=1e-15)
    else:
        np.testing.assert_allclose(exact["data"], x, rtol=1e-12)
    for s, g in PAIRS:
        pair = f"{s}>{g}"
        out = P.convert(sched, exact[s], x, t, source=s, target=g)
        if pair in DEFINED[t]:
            np.testing.assert_allclose(out, exact[g], rtol=1e-9, atol=1e-12, err_msg=pair)
        else:
            assert not np.isfinite(out).all(), pair


def test_score_noise_conversions_at_t0(x64):
    x, r = jnp.asarray(EPS), jnp.asarray(R)
    for name in ("linear", "cosine"):
        np.testing.assert_allclose(P.convert(SCHEDULERS[name], r, x, 0.0, source="score", target="noise"), -r)
        np.testing.assert_allclose(P.convert(SCHEDULERS[name], r, x, 0.0, source="noise", target="score"), -r)


def test_velocity_is_uninformative_where_alpha_and_beta_are_flat(x64):
    """PolynomialScheduler(n > 1) has d_alpha = d_beta = 0 at t = 0: u_0 = 0 for every data
    distribution, so velocity -> data cannot be defined there (unlike linear/cosine)."""
    sched = S.PolynomialScheduler(2.0)
    gm = M.GaussianMixture(**{k: jnp.asarray(v) for k, v in SMOOTH.items()})
    x = jnp.asarray(EPS)
    np.testing.assert_array_equal(M.marginal_velocity(sched, gm, x, 0.0), 0.0)
    assert not np.isfinite(P.convert(sched, jnp.zeros_like(x), x, 0.0, source="velocity", target="data")).any()


_fns = {
    "sample_conditional": lambda s, x, z, t: P.sample_conditional(s, z, x, t),
    "path_velocity": lambda s, x, z, t: P.path_velocity(s, z, x, t),
    "conditional_velocity": P.conditional_velocity,
    "conditional_score": P.conditional_score,
    "convert": lambda s, x, z, t: P.convert(s, z, x, t, source="score", target="velocity"),
}


def test_time_broadcasting_scalar_vector_vmap():
    """Scalar t == (B,) filled with it; (B,) t == vmap of per-example calls (x of shape (d,))."""
    sched = S.CosineScheduler()
    x, z = jnp.asarray(EPS, jnp.float32), jnp.asarray(Z, jnp.float32)
    t = jnp.asarray(T, jnp.float32)

    @jax.jit
    def run(x, z, t):
        return {
            k: (f(sched, x, z, 0.6), f(sched, x, z, jnp.full((B,), 0.6)), f(sched, x, z, t),
                jax.vmap(lambda xi, zi, ti: f(sched, xi, zi, ti))(x, z, t))
            for k, f in _fns.items()
        }

    for k, (scalar, filled, vector, per_example) in run(x, z, t).items():
        assert vector.shape == (B, D) and vector.dtype == jnp.float32, k
        np.testing.assert_allclose(scalar, filled, rtol=1e-6, err_msg=k)
        np.testing.assert_allclose(vector, per_example, rtol=1e-6, err_msg=k)
        assert not np.allclose(vector[0], scalar[0]), k  # t really varies per example
    # trailing axes: (B, H, W) data with (B,) t
    img = jnp.asarray(_rng.normal(size=(2, 3, 5)), jnp.float32)
    out = P.sample_conditional(sched, img, 2 * img, jnp.asarray([0.0, 1.0]))
    np.testing.assert_allclose(out, jnp.stack([2 * img[0], img[1]]), rtol=1e-6, atol=1e-7)


def test_dtype_preserved(x64):
    x32 = jnp.asarray(EPS, jnp.float32)
    for k, f in _fns.items():  # abstract evaluation: no compilation
        for t in (jnp.asarray(T, jnp.float32), 0.5):
            assert jax.eval_shape(lambda: f(SCHEDULERS["vp"], x32, x32, t)).dtype == jnp.float32, k


@pytest.mark.parametrize("bad_t", [1.5, -0.1, float("nan"), [0.2, 0.3, 0.4, 1.01]])
def test_time_outside_unit_interval_raises(bad_t):
    x = jnp.asarray(EPS)
    for k, f in _fns.items():
        with pytest.raises(ValueError, match=r"t must lie in \[0.0, 1.0\]"):
            f(SCHEDULERS["linear"], x, x, jnp.asarray(bad_t))
    with pytest.raises(ValueError, match="must lie in"):
        P.bridge(SCHEDULERS["linear"], x, x, jnp.asarray(bad_t))


def test_bad_shapes_and_names_raise():
    sched, x = SCHEDULERS["linear"], jnp.asarray(EPS)
    for bad_t in (jnp.full((B + 1,), 0.5), jnp.full((B, 1), 0.5)):
        with pytest.raises(ValueError, match=r"scalar or have shape \(B,\)"):
            P.conditional_velocity(sched, x, x, bad_t)
    with pytest.raises(ValueError, match="shape mismatch"):
        P.conditional_score(sched, x, x[:, :2], 0.5)
    with pytest.raises(ValueError, match="shape mismatch"):
        P.sample_conditional(sched, x, x[:2], 0.5)
    with pytest.raises(ValueError, match="shape mismatch"):
        P.convert(sched, x, x[:2], 0.5, source="score", target="noise")
    with pytest.raises(ValueError, match="unknown source parameterization 'epsilon'"):
        P.convert(sched, x, x, 0.5, source="epsilon", target="noise")
    with pytest.raises(ValueError, match="unknown target parameterization 'x0'"):
        P.convert(sched, x, x, 0.5, source="noise", target="x0")
    with pytest.raises(ValueError, match="unknown parameterization 'v'"):
        P.conditional_target(sched, x, x, 0.5, "v")


def test_bridge_endpoints_and_velocity(x64):
    sched = SCHEDULERS["cosine"]
    x0, z = jnp.asarray(EPS), jnp.asarray(Z)
    np.testing.assert_allclose(P.bridge(sched, x0, z, 0.0)[0], x0, atol=1e-15)
    np.testing.assert_allclose(P.bridge(sched, x0, z, 1.0)[0], z, atol=1e-15)
    t = jnp.asarray(T)
    (xt, ut), (dxdt, _) = jax.jvp(lambda s: P.bridge(sched, x0, z, s), (t,), (jnp.ones_like(t),))
    np.testing.assert_allclose(ut, dxdt, rtol=1e-12)
    a, b = np.sin(np.pi * T / 2)[:, None], np.cos(np.pi * T / 2)[:, None]
    np.testing.assert_allclose(xt, a * Z + b * EPS, rtol=1e-12)
    lin_x, lin_u = P.bridge(SCHEDULERS["linear"], x0, z, t)
    np.testing.assert_allclose(lin_u, Z - EPS, rtol=1e-12)  # CondOT: z - x0
    np.testing.assert_allclose(lin_x, T[:, None] * Z + (1 - T[:, None]) * EPS, rtol=1e-12)


def test_bridge_path_noise_target_is_time_derivative(x64):
    x0, z, xi = jnp.asarray(EPS), jnp.asarray(Z), jnp.asarray(R)
    t = jnp.asarray(T)
    for sched in (SCHEDULERS["linear"], SCHEDULERS["cosine"]):
        for noise in (P.brownian_bridge_noise(0.7), P.constant_noise(0.3)):
            path = lambda s: P.bridge(sched, x0, z, s, path_noise=noise, noise=xi)  # noqa: E731
            (xt, ut), (dxdt, _) = jax.jvp(path, (t,), (jnp.ones_like(t),))
            np.testing.assert_allclose(ut, dxdt, rtol=1e-12)
    # SB-CFM (Tong et al. 2023): x_t = t x1 + (1-t) x0 + sigma sqrt(t(1-t)) xi,
    # u_t = x1 - x0 + (1 - 2t) / (2 t (1-t)) (x_t - (t x1 + (1-t) x0))
    sigma, tt = 0.7, T[:, None]
    xt, ut = P.bridge(SCHEDULERS["linear"], x0, z, t, path_noise=P.brownian_bridge_noise(sigma), noise=xi)
    mean = tt * Z + (1 - tt) * EPS
    np.testing.assert_allclose(xt, mean + sigma * np.sqrt(tt * (1 - tt)) * R, rtol=1e-12)
    np.testing.assert_allclose(ut, Z - EPS + (1 - 2 * tt) / (2 * tt * (1 - tt)) * (xt - mean), rtol=1e-10)
    # endpoints: no noise, the noise velocity is its mean 0 (finite)
    for end, point in ((0.0, EPS), (1.0, Z)):
        xe, ue = P.bridge(SCHEDULERS["linear"], x0, z, end, path_noise=P.brownian_bridge_noise(sigma), noise=xi)
        np.testing.assert_allclose(xe, point, atol=1e-15)
        np.testing.assert_allclose(ue, Z - EPS, atol=1e-15)


def test_bridge_noise_arguments_raise():
    x = jnp.asarray(EPS)
    with pytest.raises(ValueError, match="path_noise needs noise"):
        P.bridge(SCHEDULERS["linear"], x, x, 0.5, path_noise=P.brownian_bridge_noise(0.1))
    with pytest.raises(ValueError, match="noise is only used with path_noise"):
        P.bridge(SCHEDULERS["linear"], x, x, 0.5, noise=x)
    with pytest.raises(ValueError, match="shape mismatch"):
        P.bridge(SCHEDULERS["linear"], x, x, 0.5, path_noise=P.constant_noise(0.1), noise=x[:2])
