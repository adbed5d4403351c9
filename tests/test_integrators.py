"""Tests for jflow.integrators: convergence orders against closed forms, Euler-Maruyama laws (array and
pytree states), grids."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from jflow import integrators as I

# dx/dt = A x: a damped rotation, solution expm(A t) x0 (computed by scipy, independently)
A = np.array([[-0.3, 1.0], [-1.0, -0.2]])
X0 = np.array([[1.0, 0.5], [-0.7, 2.0]])
NS = (16, 32, 64)
ORDERS = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


def _slope(ns, errs):
    return -np.polyfit(np.log(ns), np.log(errs), 1)[0]


@pytest.mark.parametrize("method", list(ORDERS))
def test_convergence_order_linear(x64, method):
    x0 = jnp.asarray(X0)
    exact = X0 @ scipy.linalg.expm(A * 1.5).T
    errs = []
    for n in NS:
        out = I.odeint(lambda x, t: x @ jnp.asarray(A).T, x0, I.uniform_grid(n, 0.0, 1.5), method=method)
        errs.append(float(jnp.max(jnp.abs(out - exact))))
    assert abs(_slope(NS, errs) - ORDERS[method]) < 0.25, errs


@pytest.mark.parametrize("method", list(ORDERS))
def test_convergence_order_time_dependent_nonuniform(x64, method):
    # dx/dt = cos(t) x  =>  x(t1) = x(t0) exp(sin t1 - sin t0); power grid (non-uniform)
    x0 = jnp.asarray(X0)
    exact = X0 * np.exp(np.sin(2.0) - np.sin(0.0))
    errs = []
    for n in NS:
        out = I.odeint(lambda x, t: jnp.cos(t) * x, x0, I.power_grid(n, 2.0, 0.0, 2.0), method=method)
        errs.append(float(jnp.max(jnp.abs(out - exact))))
    assert abs(_slope(NS, errs) - ORDERS[method]) < 0.25, errs


def test_reversed_grid_inverts_flow(x64):
    u = lambda x, t: jnp.sin(3 * t) * x + jnp.tanh(x[:, ::-1])
    x0 = jnp.asarray(X0)
    ts = I.power_grid(64, 2.0)
    x1 = I.odeint(u, x0, ts, method="rk4")
    back = I.odeint(u, x1, ts[::-1], method="rk4")
    assert float(jnp.max(jnp.abs(x1 - x0))) > 0.3  # the flow moved the points
    np.testing.assert_allclose(back, x0, atol=1e-7)


def test_reversed_grid_matches_closed_form(x64):
    # integrating dx/dt = cos(t) x from t=2 down to t=0 divides by exp(sin 2)
    out = I.odeint(lambda x, t: jnp.cos(t) * x, jnp.asarray(X0), I.uniform_grid(64, 2.0, 0.0), method="rk4")
    np.testing.assert_allclose(out, X0 * np.exp(-np.sin(2.0)), rtol=1e-6)


def test_trajectory_shape_and_endpoints():
    x0 = jnp.ones((3, 2), jnp.float32)
    ts = I.uniform_grid(5)
    traj = I.odeint(lambda x, t: -x, x0, ts, method="heun", trajectory=True)
    chex.assert_shape(traj, (6, 3, 2))
    np.testing.assert_array_equal(traj[0], x0)
    np.testing.assert_array_equal(traj[-1], I.odeint(lambda x, t: -x, x0, ts, method="heun"))
    # Heun on dx/dt = -x multiplies by 1 - h + h^2/2 per step
    h = 0.2
    np.testing.assert_allclose(traj[:, 0, 0], (1 - h + h * h / 2) ** np.arange(6), rtol=1e-6)


def test_pytree_state():
    # (x, y) with dx/dt = y, dy/dt = -x: rotation; RK4 to t = pi/2 maps (1, 0) -> (0, -1)
    state = {"x": jnp.ones((2,)), "y": jnp.zeros((2,))}
    out = I.odeint(lambda s, t: {"x": s["y"], "y": -s["x"]}, state, I.uniform_grid(50, 0.0, np.pi / 2), method="rk4")
    np.testing.assert_allclose(out["x"], 0.0, atol=1e-6)
    np.testing.assert_allclose(out["y"], -1.0, atol=1e-6)


def test_dtype_preserved_under_x64(x64):
    x0 = jnp.ones((2, 2), jnp.float32)
    assert I.odeint(lambda x, t: t * x, x0, I.uniform_grid(4), method="rk4").dtype == jnp.float32
    out = I.sdeint(lambda x, t: -x, 0.5, x0, I.uniform_grid(4), key=jax.random.PRNGKey(0))
    assert out.dtype == jnp.float32
    mixed = {"a": x0, "b": x0.astype(jnp.float64)}
    out = I.sdeint(lambda s, t: s, 0.5, mixed, I.uniform_grid(4), key=jax.random.PRNGKey(0))
    assert (out["a"].dtype, out["b"].dtype) == (jnp.float32, jnp.float64)
    assert I.odeint(lambda x, t: t * x, x0.astype(jnp.float64), I.uniform_grid(4)).dtype == jnp.float64


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_states_are_integrated_in_float32(dtype):
    # 1000 Euler steps of u = 1 from x = 1: each step (1e-3) is below bf16's spacing at 1 (2^-7)
    # and fp16's at 2 (2^-9), so a state carried in its own dtype would never reach 2
    x0 = jnp.ones((3,), dtype)
    seen = []
    u = lambda x, t: (seen.append(jax.tree.leaves(x)[0].dtype), jax.tree.map(jnp.ones_like, x))[1]
    x1 = I.odeint(u, x0, I.uniform_grid(1000), method="euler")
    assert x1.dtype == dtype and seen[0] == jnp.float32
    np.testing.assert_array_equal(np.asarray(x1, np.float32), 2.0)
    path = I.odeint(u, {"a": x0}, I.uniform_grid(1000), trajectory=True)["a"]
    assert path.dtype == dtype and path.shape == (1001, 3)
    xs = I.sdeint(lambda x, t: jnp.ones_like(x), 0.0, x0, I.uniform_grid(1000), key=jax.random.PRNGKey(0))
    assert xs.dtype == dtype
    np.testing.assert_array_equal(np.asarray(xs, np.float32), 2.0)


@pytest.mark.parametrize("method", list(ORDERS) + ["euler_maruyama"])
def test_num_evals_counts_calls(method):
    calls = []

    def u(x, t):
        jax.debug.callback(lambda: calls.append(1))  # runs at every evaluation, not at trace time
        return -x

    x0 = jnp.ones(3)
    ts = I.power_grid(3)
    if True:
        if method == "euler_maruyama":
            I.sdeint(u, 0.1, x0, ts, key=jax.random.PRNGKey(0))
        else:
            I.odeint(u, x0, ts, method=method)
    assert len(calls) == I.num_evals(method, ts) == I.num_evals(method, 3)
    assert I.num_evals(method, 7) == 7 * {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4, "euler_maruyama": 1}[method]


def test_jit_equals_nojit():
    x0 = jnp.asarray(X0, jnp.float32)
    u = lambda x, t, a: a * jnp.sin(x + t)
    ode = lambda x0, a: I.odeint(u, x0, I.uniform_grid(10), method="rk4", args=(a,))
    np.testing.assert_allclose(jax.jit(ode)(x0, 0.7), ode(x0, 0.7), rtol=1e-5, atol=1e-6)


def test_args_change_does_not_retrace():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(x0, a, ts):
        return I.odeint(lambda x, t, a: a * x, x0, ts, method="midpoint", args=(a,))

    x0 = jnp.ones(2)
    r1 = f(x0, 1.0, I.uniform_grid(8))
    r2 = f(x0, -1.0, I.uniform_grid(8, 0.0, 2.0))
    np.testing.assert_allclose(r1, np.exp(1.0) * np.ones(2), rtol=2e-2)
    np.testing.assert_allclose(r2, np.exp(-2.0) * np.ones(2), rtol=3e-2)


def test_vmap_and_grad(x64):
    ts = I.uniform_grid(32)

    def final(a, x0):
        return I.odeint(lambda x, t, a: a * x, x0, ts, method="rk4", args=(a,))

    a = jnp.array([0.5, -1.0, 2.0])
    x0 = jnp.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(jax.vmap(final)(a, x0), x0 * np.exp(a), rtol=1e-6)
    # backprop through the scan: d/da x0 exp(a) = x0 exp(a)
    g = jax.vmap(jax.grad(lambda a, x0: final(a, x0)))(a, x0)
    np.testing.assert_allclose(g, x0 * np.exp(a), rtol=1e-6)


# ------------------------------------------------------------------- Euler-Maruyama


# one jitted Euler-Maruyama shared by the tests (module-level fields: compiled once per shape)
_em = jax.jit(I.sdeint, static_argnums=(0, 1), static_argnames=("method", "trajectory"))


def _zero(x, t):
    return jnp.zeros_like(x)


def _ou(x, t, th):
    return -th * x


def test_em_ou_stationary_law():
    theta, sigma, n = 1.5, 0.8, 4000
    x0 = jnp.full((n, 1), 2.0, jnp.float32)
    ts = I.uniform_grid(400, 0.0, 4.0, dtype=jnp.float32)
    out = _em(_ou, sigma, x0, ts, key=jax.random.PRNGKey(1), args=(theta,))
    var = sigma**2 / (2 * theta)
    assert abs(float(out.mean())) < 4 * np.sqrt(var / n) + 2.0 * np.exp(-theta * 4.0)
    assert abs(float(out.var()) - var) < 4 * var * np.sqrt(2 / n)


def test_em_brownian_motion_variance_t():
    n = 4000
    ts = I.uniform_grid(20, 0.0, 2.0, dtype=jnp.float32)
    traj = _em(_zero, 1.0, jnp.zeros((n, 1)), ts, key=jax.random.PRNGKey(2), trajectory=True)
    var = np.asarray(traj[:, :, 0].var(axis=1))
    np.testing.assert_allclose(var[1:], np.asarray(ts[1:]), rtol=4 * np.sqrt(2 / n))
    # increments over disjoint steps are uncorrelated
    inc = np.diff(np.asarray(traj[:, :, 0]), axis=0)
    corr = np.corrcoef(inc[3], inc[10])[0, 1]
    assert abs(corr) < 4 / np.sqrt(n)


def _sigma_t_per_dim(t):
    return t * jnp.array([0.5, 2.0], t.dtype)


def test_em_sigma_callable_array_valued_on_reverse_grid():
    # sigma_t = t * (0.5, 2) on the decreasing grid 1 -> 0: the noise of a step scales with
    # sqrt|h|, so Var X = s^2 * sum_i t_i^2 |h| over the left points t_i = 1, 0.98, ..., 0.02
    n = 4000
    ts = I.uniform_grid(50, 1.0, 0.0, dtype=jnp.float32)
    out = _em(_zero, _sigma_t_per_dim, jnp.zeros((n, 2)), ts, key=jax.random.PRNGKey(3))
    em_var = float(np.sum(np.asarray(ts[:-1], np.float64) ** 2) * 0.02) * np.array([0.25, 4.0])
    np.testing.assert_allclose(np.asarray(out.var(axis=0)), em_var, rtol=4 * np.sqrt(2 / n))


def test_em_keys_fold_in_per_step():
    # step i draws its noise from fold_in(key, i): the increments are known in advance
    x0 = jnp.zeros((5, 2))
    key = jax.random.PRNGKey(4)
    traj = _em(_zero, 1.0, x0, I.uniform_grid(8, 0.0, 0.8), key=key, trajectory=True)
    inc = np.diff(np.asarray(traj), axis=0)
    for i in (0, 5):
        eps = jax.random.normal(jax.random.fold_in(key, i), x0.shape)
        np.testing.assert_allclose(inc[i], np.sqrt(0.1) * np.asarray(eps), rtol=1e-4, atol=1e-6)


def test_em_zero_sigma_is_euler():
    u = lambda x, t: jnp.cos(t) * x
    x0 = jnp.asarray(X0, jnp.float32)
    ts = I.power_grid(10)
    np.testing.assert_allclose(
        I.sdeint(u, 0.0, x0, ts, key=jax.random.PRNGKey(0)), I.odeint(u, x0, ts, method="euler"), rtol=1e-6
    )


def _ou_pair(state, t, thetas):
    return {name: -thetas[name] * x for name, x in state.items()}


# sigma and theta are traced pytrees: one compilation for the pytree-state tests below
_em_pair = jax.jit(
    lambda sigma, x0, ts, key, thetas: I.sdeint(_ou_pair, sigma, x0, ts, key=key, args=(thetas,))
)


def test_em_pytree_state_of_two_independent_ou_processes():
    # dX = -theta_j X dt + sigma_j dW per leaf; each leaf tends to N(0, sigma_j^2 / (2 theta_j)),
    # and the leaves draw independent noise (shared noise would correlate them strongly)
    n = 4000
    thetas = {"a": jnp.float32(1.5), "b": jnp.float32(3.0)}
    sigma = {"a": jnp.float32(0.8), "b": jnp.array([0.5, 1.0], jnp.float32)}
    x0 = {"a": jnp.full((n, 1), 2.0, jnp.float32), "b": jnp.full((n, 2), -1.0, jnp.float32)}
    ts = I.uniform_grid(400, 0.0, 4.0, dtype=jnp.float32)
    out = _em_pair(sigma, x0, ts, jax.random.PRNGKey(1), thetas)
    for name, x in out.items():
        var = np.asarray(sigma[name]) ** 2 / (2 * float(thetas[name]))
        x = np.asarray(x)
        assert np.all(np.abs(x.mean(axis=0)) < 4 * np.sqrt(var / n) + 2.0 * np.exp(-float(thetas[name]) * 4.0))
        np.testing.assert_allclose(x.var(axis=0), var * np.ones(x.shape[1]), rtol=4 * np.sqrt(2 / n))
    corr = np.corrcoef(np.asarray(out["a"][:, 0]), np.asarray(out["b"][:, 0]))[0, 1]
    assert abs(corr) < 4 / np.sqrt(n)


def test_em_pytree_noise_keys_and_one_leaf_equals_array():
    key = jax.random.PRNGKey(4)
    ts = I.uniform_grid(6, 0.0, 0.6)
    # one leaf: exactly the array result (the noise of step i is still normal(fold_in(key, i)))
    field = lambda x, t: jnp.sin(x) * (1.0 + t)
    x0 = jnp.linspace(-1.0, 1.0, 6).reshape(3, 2)
    ref = I.sdeint(field, 0.5, x0, ts, key=key, trajectory=True)
    one = I.sdeint(lambda s, t: {"x": field(s["x"], t)}, {"x": 0.5}, {"x": x0}, ts, key=key, trajectory=True)
    np.testing.assert_array_equal(one["x"], ref)
    # n leaves: leaf j of step i draws from split(fold_in(key, i), n)[j] (tree_util leaf order)
    state = {"a": jnp.zeros((3,)), "b": jnp.zeros((2, 2))}
    zero = lambda s, t: jax.tree_util.tree_map(jnp.zeros_like, s)
    traj = I.sdeint(zero, 1.0, state, ts, key=key, trajectory=True)
    for i in (0, 4):
        ka, kb = jax.random.split(jax.random.fold_in(key, i))
        for name, k in (("a", ka), ("b", kb)):
            inc = np.diff(np.asarray(traj[name]), axis=0)[i]
            eps = np.asarray(jax.random.normal(k, state[name].shape))
            np.testing.assert_allclose(inc, np.sqrt(0.1) * eps, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------- grids


def test_uniform_grid():
    ts = I.uniform_grid(4, 0.0, 1.0)
    np.testing.assert_allclose(ts, [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(I.uniform_grid(2, 1.0, 0.0), [1.0, 0.5, 0.0])


def test_power_grid_closed_form():
    n, rho, t1 = 10, 3.0, 1.0 - 1e-3
    ts = np.asarray(I.power_grid(n, rho, 0.0, t1))
    i = np.arange(n + 1)
    np.testing.assert_allclose(ts, t1 * (1 - (1 - i / n) ** rho), rtol=1e-6, atol=1e-7)
    steps = np.diff(ts)
    assert np.all(steps > 0) and np.all(np.diff(steps) < 0)  # steps shrink towards the data end
    np.testing.assert_allclose(steps[-1], t1 * n**-rho, rtol=1e-4)
    np.testing.assert_allclose(I.power_grid(5, 1.0), I.uniform_grid(5), atol=1e-7)


def test_edm_grid_closed_form():
    n, smin, smax, rho = 6, 0.002, 80.0, 7.0
    ts = np.asarray(I.edm_grid(n, smin, smax, rho))
    sig = (smax ** (1 / rho) + np.arange(n + 1) / n * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    np.testing.assert_allclose(ts, 1 / (1 + sig), rtol=1e-5)
    assert 0.0 < ts[0] and ts[-1] < 1.0 and np.all(np.diff(ts) > 0)
    # CondOT: x_t / t = z + sigma eps with sigma = (1 - t) / t
    np.testing.assert_allclose((1 - ts) / ts, sig, rtol=1e-4)


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: I.odeint(lambda x, t: x, jnp.ones(2), I.uniform_grid(2), method="rk5"), "unknown ODE method"),
        (lambda: I.odeint(lambda x, t: x, jnp.ones(2), jnp.ones((2, 2))), "1-D time grid"),
        (lambda: I.odeint(lambda x, t: x, jnp.ones(2), jnp.array([0.0])), "at least two points"),
        (lambda: I.odeint(lambda x, t: x, jnp.ones(2), jnp.array([0.0, 0.5, 0.3])), "strictly increasing"),
        (lambda: I.odeint(lambda x, t: x, jnp.ones(2), jnp.array([0.0, jnp.nan])), "NaN"),
        (lambda: I.odeint(lambda x, t: x[:1], jnp.ones(2), I.uniform_grid(2)), "x's shape"),
        (lambda: I.odeint(lambda x, t, a: x, jnp.ones(2), I.uniform_grid(2), args=1.0), "must be a tuple"),
        (lambda: I.odeint(lambda x, t: x, jnp.ones(2, jnp.int32), I.uniform_grid(2)), "floating"),
        (lambda: I.sdeint(lambda x, t: x, jnp.ones(3), jnp.ones(2), I.uniform_grid(2), key=jax.random.PRNGKey(0)), "broadcast"),
        (lambda: I.sdeint(lambda x, t: x, 1.0, jnp.ones(2), I.uniform_grid(2), key=None), "PRNG key"),
        (lambda: I.sdeint(_ou_pair, {"a": 1.0}, {"a": jnp.ones(2), "b": jnp.ones(2)}, I.uniform_grid(2),
                          key=jax.random.PRNGKey(0), args=({"a": 1.0, "b": 1.0},)), "state's structure"),
        (lambda: I.sdeint(_ou_pair, lambda t, th: [1.0, 1.0], {"a": jnp.ones(2), "b": jnp.ones(2)}, I.uniform_grid(2),
                          key=jax.random.PRNGKey(0), args=({"a": 1.0, "b": 1.0},)), "state's structure"),
        (lambda: I.sdeint(_ou_pair, {"a": 1.0, "b": jnp.ones(3)}, {"a": jnp.ones(2), "b": jnp.ones(2)},
                          I.uniform_grid(2), key=jax.random.PRNGKey(0), args=({"a": 1.0, "b": 1.0},)), "broadcast"),
        (lambda: I.sdeint(lambda x, t: x, 1.0, jnp.ones(2), I.uniform_grid(2), key=jax.random.PRNGKey(0), method="milstein"), "unknown SDE method"),
        (lambda: I.num_evals("rk4", 0), "at least one step"),
        (lambda: I.uniform_grid(0), "positive Python int"),
        (lambda: I.uniform_grid(3, 0.5, 0.5), "distinct"),
        (lambda: I.power_grid(3, rho=0.5), "rho"),
        (lambda: I.edm_grid(3, sigma_min=1.0, sigma_max=0.5), "sigma_min"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("unroll", [2, 4])
def test_unroll_gives_the_same_result(unroll):
    """``unroll`` only changes how the compiled loop is laid out, never the result."""
    ts = I.uniform_grid(10)
    x0 = jnp.linspace(-1.0, 1.0, 6).reshape(3, 2)
    field = lambda x, t: jnp.sin(x) * (1.0 + t)
    for method in ("euler", "heun"):
        ref = I.odeint(field, x0, ts, method=method, trajectory=True)
        out = I.odeint(field, x0, ts, method=method, trajectory=True, unroll=unroll)
        np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-7)
    key = jax.random.PRNGKey(3)
    ref = I.sdeint(field, 0.5, x0, ts, key=key)
    np.testing.assert_allclose(I.sdeint(field, 0.5, x0, ts, key=key, unroll=unroll), ref, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="unroll"):
        I.odeint(field, x0, ts, unroll=0)


def test_grids_take_traced_endpoints_and_numpy_scalars():
    """n_steps fixes the shape; endpoints and rho may be numpy scalars or traced arrays."""
    np.testing.assert_allclose(I.power_grid(4, rho=np.float32(2.0)), [0.0, 0.4375, 0.75, 0.9375, 1.0], rtol=1e-6)
    traced = jax.jit(lambda a, b: I.uniform_grid(4, a, b))(0.1, 0.9)
    np.testing.assert_allclose(traced, np.linspace(0.1, 0.9, 5), rtol=1e-6)
    traced = jax.jit(lambda r, b: I.power_grid(4, r, 0.0, b))(2.0, 0.5)
    np.testing.assert_allclose(traced, 0.5 * np.array([0.0, 0.4375, 0.75, 0.9375, 1.0]), rtol=1e-6)
    with pytest.raises(ValueError, match="rho must be a scalar >= 1"):
        I.power_grid(4, rho=np.float32(0.5))
    with pytest.raises(ValueError, match="finite and distinct"):
        I.uniform_grid(4, np.float32(0.5), 0.5)
