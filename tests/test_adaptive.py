"""Dormand-Prince 5(4) with a PI controller: tolerance met on closed forms, NFE vs tolerance, diffrax."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflow import data, integrators, marginals, schedulers
from jflow.integrators import odeint_adaptive

ROT = jnp.array([[0.0, 1.0], [-1.0, 0.0]])
X0 = jnp.array([[1.0, 0.0], [0.5, 0.3], [-0.2, 0.9]])


def _rotation(x, t):
    return x @ ROT.T


def _exact(x0, t):
    """x(t) = x0 expm(t A)^T for dx/dt = A x, A a rotation generator."""
    c, s = np.cos(t), np.sin(t)
    return np.asarray(x0) @ np.array([[c, s], [-s, c]]).T


def test_tableau_is_consistent():
    tab = integrators.odeint_adaptive.__globals__["EMBEDDED_TABLEAUS"]["dopri5"]
    for row, ci in zip(tab.a, tab.c):
        assert sum(row) == pytest.approx(ci, abs=1e-14)  # row sums = nodes
    assert sum(tab.b) == pytest.approx(1.0) and sum(tab.b_hat) == pytest.approx(1.0)
    assert tab.a[-1] == tab.b[:-1]  # first same as last


def test_meets_tolerance_and_nfe_grows_as_tolerance_shrinks(x64):
    x0 = X0.astype(jnp.float64)
    solve = jax.jit(lambda x0, tol: odeint_adaptive(_rotation, x0, 0.0, 10.0, rtol=tol, atol=tol))
    nfes = []
    for tol in (1e-3, 1e-6, 1e-9):
        x, nfe = solve(x0, tol)
        # global error of a stable problem stays within a small multiple of the local tolerance
        assert np.abs(np.asarray(x) - _exact(x0, 10.0)).max() < 30 * tol
        nfes.append(int(nfe))
    assert nfes[0] < nfes[1] < nfes[2]
    assert (nfes[0] - 2) % 6 == 0  # FSAL: 6 evaluations per attempted step, plus 2 at the start


def test_backwards_and_traced_tolerance_do_not_recompile(x64):
    x0 = X0.astype(jnp.float64)
    x, _ = odeint_adaptive(_rotation, x0, 10.0, 0.0, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(x, _exact(x0, -10.0), atol=1e-6)
    traces = []

    @jax.jit
    def solve(x0, tol):
        traces.append(1)
        return odeint_adaptive(_rotation, x0, 0.0, 1.0, rtol=tol, atol=tol)

    solve(x0, 1e-4), solve(x0, 1e-7)
    assert len(traces) == 1


def test_exact_mixture_field_matches_a_fine_fixed_step_solve(x64):
    gm = data.symmetric_mixture(nmodes=3, std=0.5, scale=3.0)
    sched = schedulers.LinearScheduler()
    field = lambda x, t: marginals.marginal_velocity(sched, gm, x, t)  # noqa: E731
    x0 = jax.random.normal(jax.random.PRNGKey(0), (16, 2), jnp.float64)
    ref = integrators.odeint(field, x0, integrators.uniform_grid(2000, 0.0, 0.99, dtype=jnp.float64), method="rk4")
    x, nfe = odeint_adaptive(field, x0, 0.0, 0.99, rtol=1e-7, atol=1e-7)
    assert np.abs(np.asarray(x - ref)).max() < 1e-4
    assert 20 < int(nfe) < 2000


def test_max_steps_exhausted_gives_nan_not_a_wrong_answer():
    x, nfe = odeint_adaptive(_rotation, X0, 0.0, 100.0, max_steps=3)
    assert np.isnan(np.asarray(x)).all() and int(nfe) == 2 + 3 * 6


def test_vmap_over_samples_gives_per_sample_steps():
    xs, nfes = jax.vmap(lambda x: odeint_adaptive(_rotation, x, 0.0, 5.0))(X0 * jnp.array([[1.0], [10.0], [100.0]]))
    np.testing.assert_allclose(xs[0], _exact(X0[0], 5.0), atol=1e-3)
    assert nfes.shape == (3,)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="unknown adaptive ODE method 'rk45'"):
        odeint_adaptive(_rotation, X0, 0.0, 1.0, method="rk45")
    with pytest.raises(ValueError, match="rtol must be a positive"):
        odeint_adaptive(_rotation, X0, 0.0, 1.0, rtol=0.0)
    with pytest.raises(ValueError, match="finite and distinct"):
        odeint_adaptive(_rotation, X0, 1.0, 1.0)
    with pytest.raises(ValueError, match="max_steps must be a Python int >= 1"):
        odeint_adaptive(_rotation, X0, 0.0, 1.0, max_steps=0)


def test_agrees_with_diffrax_dopri5(x64):
    diffrax = pytest.importorskip("diffrax")
    x0 = X0.astype(jnp.float64)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: _rotation(y, t)), diffrax.Dopri5(), 0.0, 10.0, None, x0,
        stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-6),
    )
    x, nfe = odeint_adaptive(_rotation, x0, 0.0, 10.0, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(x, sol.ys[-1], atol=2e-4)
    diffrax_nfe = 6 * int(sol.stats["num_steps"]) + 1
    assert 0.5 * diffrax_nfe < int(nfe) < 3 * diffrax_nfe


def test_bfloat16_state_is_solved_in_float32_and_returned_in_bfloat16():
    # in bfloat16 the default tolerances (1e-5) are below the state's resolution, so a solve
    # carried in bf16 could never accept a step; it runs in float32 and is rounded once
    u = lambda x, t: jnp.cos(t) * x  # noqa: E731  x(1) = x0 e^{sin 1}
    x0 = jnp.linspace(-1.0, 1.0, 5).astype(jnp.bfloat16)
    low, nfe_low = odeint_adaptive(u, x0, 0.0, 1.0)
    high, nfe_high = odeint_adaptive(u, x0.astype(jnp.float32), 0.0, 1.0)
    assert low.dtype == jnp.bfloat16 and int(nfe_low) == int(nfe_high)
    np.testing.assert_array_equal(np.asarray(low, np.float32), np.asarray(high.astype(jnp.bfloat16), np.float32))
    np.testing.assert_allclose(np.asarray(low, np.float32), np.asarray(x0, np.float32) * np.exp(np.sin(1.0)), rtol=1e-2)
