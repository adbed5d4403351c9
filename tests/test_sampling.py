"""Tests for jflow.sampling with the exact marginal fields of Gaussian mixtures (jflow.marginals)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflow import integrators as I
from jflow import marginals as M
from jflow import sampling as S
from jflow.schedulers import CosineScheduler, LinearScheduler

SCHED = LinearScheduler()
GM = M.GaussianMixture(
    jnp.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]]), jnp.array([0.4, 0.6, 0.3]), jnp.array([0.5, 0.3, 0.2])
)
N = 1000


@jax.jit
def _energy_distance(x, y):
    d = lambda a, b: jnp.sqrt(jnp.sum((a[:, None] - b[None]) ** 2, -1) + 1e-12).mean()
    return d(x, y) - 0.5 * d(x, x) - 0.5 * d(y, y)


def energy_distance(x, y):
    """E|X - Y| - E|X - X'|/2 - E|Y - Y'|/2 (V-statistic), >= 0 with equality iff the laws agree."""
    return float(_energy_distance(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)))


def assert_matches_mixture(x, gm, key, tol=0.01):
    x = jnp.asarray(x, jnp.float32)
    assert bool(jnp.all(jnp.isfinite(x)))
    fresh = gm.sample(key, x.shape[0])
    np.testing.assert_allclose(x.mean(0), gm.mean(), atol=0.1)
    np.testing.assert_allclose(jnp.cov(x.T), gm.covariance(), atol=0.15)
    ed = energy_distance(x, fresh)
    assert ed < tol, ed


def u_exact(x, t):
    return M.marginal_velocity(SCHED, GM, x, t)


def score_exact(x, t):
    return M.marginal_score(SCHED, GM, x, t)


@pytest.fixture(scope="module")
def x0():
    return jax.random.normal(jax.random.PRNGKey(10), (N, 2))


def test_energy_distance_detects_mismatch(x0):
    # the two-sample statistic used below separates noise from the mixture, and is small for two mixture draws
    fresh = GM.sample(jax.random.PRNGKey(0), N)
    assert energy_distance(x0, fresh) > 0.15
    assert energy_distance(GM.sample(jax.random.PRNGKey(1), N), fresh) < 0.01


@pytest.fixture(scope="module")
def ode_euler(x0):
    return jax.jit(lambda x: S.sample_ode(u_exact, x, I.uniform_grid(200)))(x0)


def test_flow_ode_moves_noise_to_mixture(x0, ode_euler):
    assert_matches_mixture(ode_euler, GM, jax.random.PRNGKey(1))


def test_flow_ode_heun_on_power_grid(x0):
    out = jax.jit(lambda x: S.sample_ode(u_exact, x, I.power_grid(20, 2.0), method="heun"))(x0)
    assert_matches_mixture(out, GM, jax.random.PRNGKey(1))


def test_flow_ode_from_other_p_init():
    # bridging: CondOT from p_init = N((3, 3), 0.5^2 I) to a point mass; the exact field of the
    # coupling x_t = t z + (1 - t) x0 is (z - x) / (1 - t), so Euler lands exactly on z
    z = jnp.array([[1.0, -1.0]])
    x_init = 3.0 + 0.5 * jax.random.normal(jax.random.PRNGKey(2), (50, 2))
    u = lambda x, t: (z - x) / (1.0 - t)
    np.testing.assert_allclose(S.sample_ode(u, x_init, I.uniform_grid(10)), jnp.broadcast_to(z, (50, 2)), atol=1e-5)


@jax.jit
@chex.assert_max_traces(n=1)
def _sde(x0, key, a, b):
    """SDE extension sampler, sigma_t = a + b (1 - t) traced (one compile for every sigma), score from the velocity."""
    u = lambda x, t, *sigma_args: u_exact(x, t)  # args reach u, the score and sigma alike
    score = S.as_score(u, SCHED, "velocity")  # as a flow-matching network would be sampled
    return S.sample_sde(u, score, lambda t, a, b: a + b * (1.0 - t), x0, I.uniform_grid(200), key=key, args=(a, b))


@pytest.mark.parametrize("a, b", [(0.7, 0.0), (1.5, 0.0), (0.2, 1.5)])
def test_sde_extension_trick_reaches_mixture(x0, a, b):
    out = _sde(x0, jax.random.PRNGKey(3), jnp.float32(a), jnp.float32(b))
    assert_matches_mixture(out, GM, jax.random.PRNGKey(4))


def test_sde_zero_sigma_is_the_euler_ode(x0, ode_euler):
    out = _sde(x0, jax.random.PRNGKey(3), jnp.float32(0.0), jnp.float32(0.0))
    np.testing.assert_allclose(out, ode_euler, atol=1e-4)


def test_as_velocity_and_as_score_from_any_parameterisation(x64):
    sched = CosineScheduler()
    x = jax.random.normal(jax.random.PRNGKey(7), (16, 2), jnp.float64) * 2
    t = jnp.linspace(0.05, 0.95, 16)

    @jax.jit
    def errors(x, t):
        out = []
        for param in ("velocity", "score", "noise", "data"):
            net = lambda x, t, scale: scale * M.marginal_field(sched, GM, x, t, param)  # the extra arg passes through
            u = S.as_velocity(net, sched, param)(x, t, 1.0)
            s = S.as_score(net, sched, param)(x, t, 1.0)
            out.append(jnp.max(jnp.abs(u - M.marginal_velocity(sched, GM, x, t))))
            out.append(jnp.max(jnp.abs(s - M.marginal_score(sched, GM, x, t))))
        return jnp.stack(out)

    np.testing.assert_array_less(np.asarray(errors(x, t)), 1e-9)


def test_score_model_sampled_by_ode_on_grid_avoiding_t0(x0):
    # velocity from a score is singular at t = 0 (alpha_0 = 0): start the grid at t0 = 1e-3
    score_model = S.as_score(u_exact, SCHED, "velocity")
    u = S.as_velocity(score_model, SCHED, "score")
    assert not bool(jnp.all(jnp.isfinite(u(x0[:4], 0.0))))
    out = S.sample_ode(u, x0, I.uniform_grid(100, 1e-3, 1.0))
    assert_matches_mixture(out, GM, jax.random.PRNGKey(8))


# ------------------------------------------------------------------- Langevin and OU

GM_L = M.GaussianMixture(jnp.array([[-0.8, 0.0], [0.8, 0.5]]), jnp.array([0.6, 0.5]), jnp.array([0.7, 0.3]))


def test_langevin_with_exact_score_converges_to_mixture():
    score = jax.vmap(jax.grad(GM_L.log_prob))  # static score, independent of jflow.marginals' formulas
    start = 3.0 + jax.random.normal(jax.random.PRNGKey(11), (N, 2))  # far from p
    out = jax.jit(lambda x, h: S.langevin(score, x, key=jax.random.PRNGKey(12), n_steps=400, step_size=h, sigma=2.0**0.5))(
        start, 0.03
    )
    assert_matches_mixture(out, GM_L, jax.random.PRNGKey(13))
    assert energy_distance(start, GM_L.sample(jax.random.PRNGKey(13), N)) > 1.0


def test_ou_process_matches_exact_marginal():
    theta, sigma, t = 2.0, 0.6, 0.5
    x0 = jnp.full((4000, 1), 1.5)
    out = S.ou_process(x0, I.uniform_grid(100, 0.0, t), key=jax.random.PRNGKey(14), theta=theta, sigma=sigma)
    mean, std = S.ou_marginal(x0, t, theta=theta, sigma=sigma)
    np.testing.assert_allclose(mean[0, 0], 1.5 * np.exp(-theta * t), rtol=1e-6)
    np.testing.assert_allclose(std[0, 0], sigma * np.sqrt((1 - np.exp(-2 * theta * t)) / (2 * theta)), rtol=1e-6)
    assert abs(float(out.mean()) - float(mean[0, 0])) < 0.02
    assert abs(float(out.std()) / float(std[0, 0]) - 1) < 0.05
    _, std_inf = S.ou_marginal(x0, 1e3, theta=theta, sigma=sigma)
    np.testing.assert_allclose(std_inf[0, 0], sigma / np.sqrt(2 * theta), rtol=1e-6)


# ------------------------------------------------------------------- classifier-free guidance

GM_Y = M.GaussianMixture(
    jnp.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.2]]), jnp.array([0.6, 0.6, 0.6]), jnp.array([0.45, 0.45, 0.1])
)
NULL = 3  # label 3 = "no label"


def u_labelled(x, t, y):
    """Exact class-conditional field u_t(x|y) (component y), and the unconditional one for y = NULL."""

    def one(xi, yi):
        mask = (jnp.arange(3) == yi) | (yi == NULL)
        return M.marginal_velocity(SCHED, GM_Y.select(mask), xi, t)

    return jax.vmap(one)(x, y)


def test_guided_field_formula_and_single_batched_call():
    calls = []

    def u(x, t, y, scale):
        calls.append(x.shape)
        return scale * (jnp.sin(x + t) + y[:, None].astype(x.dtype))

    x = jax.random.normal(jax.random.PRNGKey(0), (5, 2))
    y = jnp.array([0, 1, 2, 0, 1])
    w = jnp.array([0.0, 1.0, 2.5, -1.0, 4.0])
    guided = S.classifier_free_guidance(u, NULL)(x, 0.3, y, w, 2.0)
    assert calls == [(10, 2)]  # one call on the doubled batch
    u_y, u_null = u(x, 0.3, y, 2.0), u(x, 0.3, jnp.full_like(y, NULL), 2.0)
    wb = w[:, None]
    np.testing.assert_allclose(guided, (1 - wb) * u_null + wb * u_y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(guided, u_null + wb * (u_y - u_null), rtol=1e-5, atol=1e-6)
    w_other = wb - 1.0  # the (1 + w') u_y - w' u_null form
    np.testing.assert_allclose(guided, (1 + w_other) * u_y - w_other * u_null, rtol=1e-5, atol=1e-6)
    # per-example t is doubled along with x
    t = jnp.linspace(0.1, 0.9, 5)
    g = S.classifier_free_guidance(lambda x, t, y: x * t[:, None] + y[:, None], NULL)(x, t, y, 2.0)
    np.testing.assert_allclose(g, 2.0 * (x * t[:, None] + y[:, None]) - (x * t[:, None] + NULL), rtol=1e-5, atol=1e-5)


@jax.jit
@chex.assert_max_traces(n=1)
def _guided_sample(x0, y, w):
    field = S.classifier_free_guidance(u_labelled, NULL)
    return S.sample_ode(field, x0, I.uniform_grid(50), args=(y, w))


@jax.jit
def _hit_rate(x, label):
    """Fraction of x whose most probable component under the data law is ``label``."""
    return jnp.mean(jnp.argmax(M.posterior_weights(SCHED, GM_Y, x, 1.0), axis=1) == label)


def test_guidance_rate_grows_with_w_and_no_recompile():
    n = 1000
    x0 = jax.random.normal(jax.random.PRNGKey(20), (n, 2))
    y = jnp.full((n,), 2)  # the rare class (weight 0.1)
    # a new guidance scale reuses the compiled sampler (assert_max_traces(n=1) on _guided_sample)
    rates = [float(_hit_rate(_guided_sample(x0, y, jnp.float32(w)), 2)) for w in (0.0, 1.0, 4.0)]
    # w = 0 gives unconditional samples, w = 1 exactly component 2: compare with fresh draws of each
    p_uncond = float(_hit_rate(GM_Y.sample(jax.random.PRNGKey(21), n), 2))
    p_cond = float(_hit_rate(GM_Y.select(jnp.array([2])).sample(jax.random.PRNGKey(22), n), 2))
    tol = lambda p: 5 * np.sqrt(max(p * (1 - p), 0.01) / n)
    assert abs(rates[0] - p_uncond) < tol(p_uncond), (rates, p_uncond)
    assert abs(rates[1] - p_cond) < tol(p_cond), (rates, p_cond)
    assert rates[0] < rates[1] < rates[2], rates


def test_jit_equals_nojit(x0, ode_euler):
    # ode_euler was sampled under jit; the same call without jit agrees
    np.testing.assert_allclose(S.sample_ode(u_exact, x0, I.uniform_grid(200)), ode_euler, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: S.sample_ode(u_exact, jnp.zeros((2, 2)), jnp.linspace(0.0, 1.5, 4)), "flow time"),
        (lambda: S.as_velocity(u_exact, SCHED, "eps"), "unknown parameterization"),
        (lambda: S.as_score(u_exact, SCHED, "x0"), "unknown parameterization"),
        (lambda: S.classifier_free_guidance(u_labelled, NULL)(jnp.zeros((4, 2)), 0.5, jnp.zeros((3,), int), 1.0), "labels y"),
        (lambda: S.classifier_free_guidance(u_labelled, NULL)(jnp.zeros((4, 2)), 0.5, jnp.zeros((4,), int), jnp.ones(3)), "guidance scale"),
        (lambda: S.langevin(score_exact, jnp.zeros((2, 2)), key=jax.random.PRNGKey(0), n_steps=0, step_size=0.1), "n_steps"),
        (lambda: S.langevin(score_exact, jnp.zeros((2, 2)), key=jax.random.PRNGKey(0), n_steps=3, step_size=-0.1), "step_size"),
        (lambda: S.ou_process(jnp.zeros(2), I.uniform_grid(3), key=jax.random.PRNGKey(0), theta=-1.0, sigma=1.0), "theta"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_concrete_grid_captured_inside_jit():
    """A concrete grid closed over by a jitted sampler is validated on the host, not traced."""
    ts = jnp.linspace(0.0, 1.0, 5)
    out = jax.jit(lambda x0: S.sample_ode(lambda x, t: -x, x0, ts))(jnp.ones((3, 2)))
    np.testing.assert_allclose(out, np.full((3, 2), 0.75**4), rtol=1e-6)
    bad = jnp.linspace(0.0, 1.5, 5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        jax.jit(lambda x0: S.sample_ode(lambda x, t: -x, x0, bad))(jnp.ones((3, 2)))


# ------------------------------------------------------------------- singular ends of converted fields

from jflow import fields as F  # noqa: E402
from jflow.schedulers import VPScheduler  # noqa: E402


def _model(param):
    """The exact marginal field of GM in ``param`` (a perfect network of that parameterisation)."""
    return lambda x, t: M.marginal_field(SCHED, GM, x, t, param)


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun", "rk4", "euler_maruyama"])
def test_evaluation_times_are_the_times_the_integrator_evaluates(method):
    seen = []
    record = lambda t: seen.append(float(t))

    def u(x, t):
        jax.debug.callback(record, t)
        return -x

    ts = np.array([0.0, 0.1, 0.4, 1.0], np.float32)
    if method == "euler_maruyama":
        jax.block_until_ready(I.sdeint(u, 0.0, jnp.ones((1, 1)), ts, key=jax.random.PRNGKey(0)))
    else:
        jax.block_until_ready(I.odeint(u, jnp.ones((1, 1)), ts, method=method))
    np.testing.assert_array_equal(F.evaluation_times(method, ts), np.unique(np.float32(seen)))
    assert (1.0 in seen) == (method in ("heun", "rk4"))  # only these evaluate ts[-1]


def test_singular_ends_follow_the_scheduler():
    ident = lambda x, t: x
    assert S.as_velocity(ident, SCHED, "noise").singular_ends == (0.0,)  # alpha_0 = 0
    assert S.as_velocity(ident, SCHED, "score").singular_ends == (0.0,)
    assert S.as_velocity(ident, SCHED, "data").singular_ends == (1.0,)  # beta_1 = 0
    assert S.as_score(ident, SCHED, "velocity").singular_ends == (1.0,)
    assert S.as_velocity(ident, VPScheduler(), "noise").singular_ends == (1.0,)  # alpha_0 > 0, d beta_1 = -inf
    assert S.as_velocity(ident, SCHED, "velocity") is ident
    # a chain of conversions is singular where any link is
    assert S.as_velocity(S.as_score(ident, SCHED, "velocity"), SCHED, "score").singular_ends == (0.0, 1.0)


@pytest.mark.parametrize(
    "call, fix",
    [
        (lambda x0, ts: S.sample_ode(S.as_velocity(_model("noise"), SCHED, "noise"), x0, ts), "t0=0.001, t1=1"),
        (lambda x0, ts: S.sample_ode(S.as_velocity(_model("score"), SCHED, "score"), x0, ts, method="rk4"), "t0=0.001, t1=1"),
        (lambda x0, ts: S.sample_ode(S.as_velocity(_model("data"), SCHED, "data"), x0, ts, method="heun"), "method='euler'"),
        (
            lambda x0, ts: S.sample_sde(
                S.as_velocity(_model("noise"), SCHED, "noise"), S.as_score(_model("noise"), SCHED, "noise"), 0.5, x0, ts,
                key=jax.random.PRNGKey(0),
            ),
            "t0=0.001",
        ),
        (
            lambda x0, ts: S.sample_ode(
                S.classifier_free_guidance(S.as_velocity(lambda x, t, y: _model("noise")(x, t), SCHED, "noise"), NULL),
                x0, ts, args=(jnp.zeros((4,), int), 2.0),
            ),
            "t0=0.001",
        ),
    ],
)
def test_default_grid_through_a_singular_end_raises_with_the_fix(call, fix):
    x0 = jax.random.normal(jax.random.PRNGKey(5), (4, 2))
    with pytest.raises(ValueError, match="singular at t = ") as err:
        call(x0, I.uniform_grid(8))
    assert fix in str(err.value) and "\n" not in str(err.value)
    assert "ddim" in str(err.value)


def test_grids_that_avoid_the_singular_end_sample_finite_values():
    x0 = jax.random.normal(jax.random.PRNGKey(5), (4, 2))
    u_noise = S.as_velocity(_model("noise"), SCHED, "noise")
    u_data = S.as_velocity(_model("data"), SCHED, "data")
    outs = [
        S.sample_ode(u_noise, x0, I.uniform_grid(8, t0=1e-3)),
        S.sample_ode(u_data, x0, I.uniform_grid(8)),  # Euler never evaluates t = 1
        S.sample_ode(u_data, x0, I.uniform_grid(8, t1=1 - 1e-3), method="heun"),
        # the velocity model's score is singular at 1 only, which Euler-Maruyama never evaluates
        S.sample_sde(u_exact, S.as_score(u_exact, SCHED, "velocity"), 0.5, x0, I.uniform_grid(8), key=jax.random.PRNGKey(0)),
    ]
    assert all(bool(jnp.all(jnp.isfinite(o))) for o in outs)
    # under jit a concrete grid captured by the sampler is still checked; a traced one cannot be, and the
    # documented result is NaN, not a finite number
    grid = I.uniform_grid(2)
    with pytest.raises(ValueError, match="singular"):
        jax.jit(lambda x: S.sample_ode(u_noise, x, grid))(x0)
    traced = jax.jit(lambda ts: S.sample_ode(u_noise, x0, ts))(grid)
    assert bool(jnp.all(jnp.isnan(traced)))


# ------------------------------------------------------------------- as_field: a flax model as a field


@pytest.fixture(scope="module")
def mlp():
    from jflow.models import MLP

    model = MLP(width=8, depth=1, num_classes=3, time_features=8)
    x = jnp.zeros((4, 2))
    return model, jax.jit(model.init)(jax.random.PRNGKey(0), x, jnp.zeros((4,)), jnp.zeros((4,), int))


def test_as_field_equals_the_hand_written_lambda(mlp):
    model, params = mlp
    x0 = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
    y = jnp.array([0, 1, 2, 1])
    by_hand = lambda x, t: model.apply(params, x, jnp.full((x.shape[0],), t), y)
    # inside the sampler (scalar traced t): two Euler steps of the hand-written field, written out
    x_half = x0 + 0.4 * by_hand(x0, 0.1)
    want = x_half + 0.4 * by_hand(x_half, 0.5)
    got = S.sample_ode(S.as_field(model.apply, params, y=y), x0, jnp.array([0.1, 0.5, 0.9]))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # a noise model in one call: as_velocity(as_field(...))
    u = S.as_velocity(S.as_field(model.apply, params), SCHED, "noise")
    eps_hat = model.apply(params, x0, jnp.full((4,), 0.3))
    want = paths_convert(eps_hat, x0, 0.3)
    np.testing.assert_allclose(u(x0, 0.3), want, rtol=1e-6)
    # classifier-free guidance (Algorithm 8) with the labels and the scale as sampler arguments (a batch
    # of 2, doubled to the 4 of the references: every shape is already compiled)
    guided = S.classifier_free_guidance(S.as_field(model.apply, params), model.null_label)
    w = 2.5
    u_y, u_null = model.apply(params, x0, jnp.full((4,), 0.3), y)[:2], model.apply(params, x0, jnp.full((4,), 0.3))[:2]
    np.testing.assert_allclose(guided(x0[:2], 0.3, y[:2], w), (1 - w) * u_null + w * u_y, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="model.apply"):
        S.as_field(model, params)


def test_as_field_broadcasts_a_scalar_time_and_passes_labels_and_args():
    calls = []
    apply_fn = lambda p, x, t, *rest: calls.append((p, t.shape, rest)) or x
    S.as_field(apply_fn, "params")(jnp.zeros((5, 2)), 0.5, "extra")
    S.as_field(apply_fn, "params", y="labels")(jnp.zeros((5, 2)), jnp.full((5,), 0.5))
    assert calls == [("params", (5,), ("extra",)), ("params", (5,), ("labels",))]


def paths_convert(value, x, t):
    from jflow import paths

    return paths.convert(SCHED, value, x, t, source="noise", target="velocity")


# ------------------------------------------------------------------- OU with theta = 0 and small theta


def test_ou_marginal_brownian_limit_and_small_theta(x64):
    x0 = jnp.array([[1.5, -2.0]])
    mean, std = S.ou_marginal(x0, 0.7, theta=0.0, sigma=0.4)  # Brownian motion: N(x0, sigma^2 t)
    np.testing.assert_array_equal(mean, x0)
    np.testing.assert_allclose(std, np.full((1, 2), 0.4 * np.sqrt(0.7)), rtol=1e-15)
    for theta in (1e-12, 1e-6, 1e-2, np.float32(3.0)):  # numpy scalars too
        _, std = S.ou_marginal(x0.astype(jnp.float32), 0.7, theta=theta, sigma=0.4)
        # closed form in float64 with the series 1 - e^{-z} = z - z^2/2 + z^3/6 - ... for small z = 2 theta t
        z = 2 * float(theta) * 0.7
        var = 0.4**2 * (z - z * z / 2 + z**3 / 6 - z**4 / 24) / (2 * float(theta)) if z < 1e-3 else 0.4**2 * (1 - np.exp(-z)) / (2 * float(theta))
        np.testing.assert_allclose(std, np.full((1, 2), np.sqrt(var)), rtol=1e-6)
    with pytest.raises(ValueError, match="theta"):
        S.ou_marginal(x0, 0.7, theta=-1.0, sigma=0.4)
    with pytest.raises(ValueError, match="t must be >= 0"):
        S.ou_marginal(x0, -0.1, theta=1.0, sigma=0.4)
    _, std_inf = S.ou_marginal(x0, jnp.inf, theta=2.0, sigma=0.6)  # the stationary law
    np.testing.assert_allclose(std_inf, np.full((1, 2), 0.6 / 2.0), rtol=1e-15)


def test_a_grid_built_inside_jit_is_still_checked():
    # uniform_grid with concrete endpoints is concrete under jit, so the singular-end check runs
    u = S.as_velocity(_model("noise"), SCHED, "noise")  # singular at t = 0
    inside = jax.jit(lambda x0: S.sample_ode(u, x0, I.uniform_grid(4, t0=1e-3)))
    assert jnp.all(jnp.isfinite(inside(jnp.zeros((3, 2)))))
    with pytest.raises(ValueError, match="singular at t = 0"):
        jax.jit(lambda x0: S.sample_ode(u, x0, I.uniform_grid(4)))(jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="singular at t = 0"):
        jax.jit(lambda x0: S.sample_ode(u, x0, I.power_grid(4, 2.0)))(jnp.zeros((3, 2)))


def test_langevin_and_ou_on_bfloat16_states_run_in_float32_and_return_bfloat16():
    # 500 steps of 0.01 in bfloat16 would give a time grid with repeated points (its spacing
    # near 4 is 2^-5); the state and grid are carried in float32 and the result rounded once
    x0 = jax.random.normal(jax.random.PRNGKey(0), (64, 2)).astype(jnp.bfloat16)
    key = jax.random.PRNGKey(1)
    run = lambda x: S.langevin(lambda x: -x, x, key=key, n_steps=500, step_size=0.01)  # noqa: E731
    low = run(x0)
    assert low.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(low, np.float32), np.asarray(run(x0.astype(jnp.float32)).astype(jnp.bfloat16), np.float32))
    ou = S.ou_process(x0, jnp.linspace(0.0, 5.0, 501), key=key, theta=0.5, sigma=1.0)
    assert ou.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(ou)))
