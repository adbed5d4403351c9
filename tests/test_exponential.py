"""DDIM, ancestral DDPM, DPM-Solver++ and predictor-corrector against exact Gaussian-mixture fields."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflow import data, integrators, marginals, metrics, sampling, schedulers
from jflow.integrators import uniform_grid

GM = marginals.GaussianMixture(jnp.array([[-2.0, 0.0], [2.0, 1.0]]), jnp.array([0.3, 0.5]), jnp.array([0.4, 0.6]))
SCHEDS = {"linear": schedulers.LinearScheduler(), "cosine": schedulers.CosineScheduler()}


def _exact(sched, gm, parameterization):
    return lambda x, t: marginals.marginal_field(sched, gm, x, t, parameterization)


def _errors(solve, ref, steps):
    return np.array([float(jnp.abs(solve(n) - ref).max()) for n in steps])


@pytest.mark.parametrize("name", sorted(SCHEDS))
def test_orders_ddim_one_dpm_solver_pp_two(name, x64):
    """Error vs the exact probability-flow solution halves (DDIM) / quarters (2M) as steps double."""
    sched = SCHEDS[name]
    x0 = jax.random.normal(jax.random.PRNGKey(0), (32, 2), jnp.float64)
    a, b = 0.05, 0.95
    ref = integrators.odeint(_exact(sched, GM, "velocity"), x0, uniform_grid(1500, a, b, dtype=jnp.float64), method="rk4")
    data_fn = _exact(sched, GM, "data")
    steps = (20, 40, 80)
    ddim = _errors(lambda n: sampling.ddim(data_fn, sched, "data", x0, uniform_grid(n, a, b, dtype=jnp.float64)), ref, steps)
    dpm = _errors(lambda n: sampling.dpm_solver_pp(data_fn, sched, "data", x0, uniform_grid(n, a, b, dtype=jnp.float64)), ref, steps)
    slope = lambda e: np.log2(e[:-1] / e[1:])  # noqa: E731
    assert np.all(np.abs(slope(ddim) - 1.0) < 0.25), ddim
    assert np.all(np.abs(slope(dpm)[-1] - 2.0) < 0.3) and np.all(dpm < ddim), dpm


@pytest.mark.parametrize("parameterization", ["velocity", "noise", "data", "score"])
def test_ddim_equals_first_order_dpm_solver_pp(parameterization, x64):
    sched = schedulers.VPScheduler()
    fn = _exact(sched, GM, parameterization)
    x0 = jax.random.normal(jax.random.PRNGKey(1), (8, 2), jnp.float64)
    grid = uniform_grid(7, 0.02, 0.98, dtype=jnp.float64)
    np.testing.assert_allclose(
        sampling.ddim(fn, sched, parameterization, x0, grid),
        sampling.dpm_solver_pp(fn, sched, parameterization, x0, grid, order=1), rtol=1e-9, atol=1e-9,
    )


def test_ddim_on_the_condot_path_is_euler_on_the_velocity(x64):
    """For alpha = t, beta = 1 - t the exponential integrator's first order step is exactly Euler."""
    sched = SCHEDS["linear"]
    x0 = jax.random.normal(jax.random.PRNGKey(2), (8, 2), jnp.float64)
    grid = uniform_grid(9, dtype=jnp.float64)  # from t = 0: fine for a velocity model
    velocity = _exact(sched, GM, "velocity")
    np.testing.assert_allclose(
        sampling.ddim(velocity, sched, "velocity", x0, grid), integrators.odeint(velocity, x0, grid), atol=1e-12
    )


def test_ancestral_step_samples_the_gaussian_posterior(x64):
    """One step t -> s of ddpm_ancestral has the mean and variance of q(x_s | x_t, z_hat) (closed form)."""
    sched = schedulers.VPScheduler()
    t, s = 0.3, 0.5
    x_t = jnp.full((20000, 1), 0.7, jnp.float64)
    z_hat = 1.3
    out = sampling.ddpm_ancestral(lambda x, tt: jnp.full_like(x, z_hat), sched, "data", x_t,
                                  jnp.array([t, s], jnp.float64), key=jax.random.PRNGKey(3))
    (a_t, b_t), (a_s, b_s) = sched(jnp.float64(t)), sched(jnp.float64(s))
    a_ts = a_t / a_s
    var_ts = b_t**2 - a_ts**2 * b_s**2
    mean = a_s * var_ts / b_t**2 * z_hat + a_ts * b_s**2 / b_t**2 * 0.7
    var = b_s**2 * var_ts / b_t**2
    assert abs(float(out.mean()) - float(mean)) < 4 * np.sqrt(float(var) / 20000)
    assert abs(float(out.var()) / float(var) - 1.0) < 0.05


@pytest.fixture(scope="module")
def mixture_setup():
    gm = data.symmetric_mixture(nmodes=3, std=0.5, scale=3.0)
    x0 = jax.random.normal(jax.random.PRNGKey(4), (1500, 2))
    ref = gm.sample(jax.random.PRNGKey(5), 1500)
    floor = float(metrics.energy_distance(gm.sample(jax.random.PRNGKey(6), 1500), ref))
    return gm, x0, ref, floor


@pytest.mark.parametrize("sampler", ["ddpm_ancestral", "predictor_corrector", "ddim_eta"])
def test_stochastic_samplers_reach_the_mixture_from_its_exact_score(sampler, mixture_setup):
    gm, x0, ref, floor = mixture_setup
    sched = SCHEDS["linear"]
    score = _exact(sched, gm, "score")
    grid = uniform_grid(60, 1e-3, 1.0)
    key = jax.random.PRNGKey(7)
    run = {
        "ddpm_ancestral": lambda: sampling.ddpm_ancestral(score, sched, "score", x0, grid, key=key),
        "predictor_corrector": lambda: sampling.predictor_corrector(score, sched, "score", x0, grid, key=key, snr=0.05),
        "ddim_eta": lambda: sampling.ddim(score, sched, "score", x0, grid, eta=0.5, key=key),
    }[sampler]
    x = jax.jit(run)()
    assert float(metrics.energy_distance(x, ref)) < 3 * floor + 0.01


def test_reverse_diffusion_coefficient_closed_form():
    """CondOT: g_t^2 = 2 beta^2 (d/dt) log(alpha/beta) = 2 (1 - t)/t."""
    from jflow.predictor_corrector import reverse_diffusion_coefficient

    t = jnp.array([0.1, 0.4, 0.8])
    np.testing.assert_allclose(reverse_diffusion_coefficient(SCHEDS["linear"], t) ** 2, 2 * (1 - t) / t, rtol=1e-5)


def test_samplers_refuse_bad_options():
    sched, x0 = SCHEDS["linear"], jnp.zeros((2, 2))
    score = _exact(sched, GM, "score")
    with pytest.raises(ValueError, match="alpha_t = 0.*uniform_grid\\(n, t0=1e-3\\)"):
        sampling.ddim(score, sched, "score", x0, uniform_grid(4))
    with pytest.raises(ValueError, match="eta must be a scalar in \\[0, 1\\]"):
        sampling.ddim(score, sched, "score", x0, uniform_grid(4, 0.1, 1.0), eta=2.0)
    with pytest.raises(ValueError, match="eta > 0 draws fresh noise"):
        sampling.ddim(score, sched, "score", x0, uniform_grid(4, 0.1, 1.0), eta=0.5)
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        sampling.dpm_solver_pp(score, sched, "score", x0, uniform_grid(4, 0.1, 1.0), order=3)
    with pytest.raises(ValueError, match="unknown parameterization 'eps'"):
        sampling.dpm_solver_pp(score, sched, "eps", x0, uniform_grid(4, 0.1, 1.0))
    with pytest.raises(ValueError, match="increase strictly"):
        sampling.ddim(score, sched, "score", x0, uniform_grid(4, 1.0, 0.1))
    with pytest.raises(ValueError, match="unknown predictor 'heun'"):
        sampling.predictor_corrector(score, sched, "score", x0, uniform_grid(4, 0.1, 1.0), key=jax.random.PRNGKey(0), predictor="heun")
    with pytest.raises(ValueError, match="reverse drift divides by alpha_t"):
        sampling.predictor_corrector(_exact(sched, GM, "velocity"), sched, "velocity", x0, uniform_grid(4), key=jax.random.PRNGKey(0))


@pytest.mark.parametrize("sampler", ["ddim", "dpm_solver_pp", "predictor_corrector"])
def test_bfloat16_states_are_sampled_in_float32_and_returned_in_bfloat16(sampler):
    # in bfloat16 a 300-point grid has repeated times and small steps round away; the samplers
    # integrate in float32 (as odeint does), so the bf16 run is the float32 run rounded once
    sched = schedulers.CosineScheduler()
    x0 = jax.random.normal(jax.random.PRNGKey(3), (16, 2)).astype(jnp.bfloat16)
    seen = []

    def score(x, t):
        seen.append((x.dtype, t.dtype))
        return marginals.marginal_field(sched, GM, x, t, "score")

    grid = uniform_grid(300, 0.05, 0.95)
    run = {
        "ddim": lambda x: sampling.ddim(score, sched, "score", x, grid),
        "dpm_solver_pp": lambda x: sampling.dpm_solver_pp(score, sched, "score", x, grid),
        "predictor_corrector": lambda x: sampling.predictor_corrector(score, sched, "score", x, grid, key=jax.random.PRNGKey(0)),
    }[sampler]
    low = run(x0)
    assert low.dtype == jnp.bfloat16 and set(seen) == {(jnp.dtype(jnp.float32),) * 2}
    np.testing.assert_array_equal(np.asarray(low, np.float32), np.asarray(run(x0.astype(jnp.float32)).astype(jnp.bfloat16), np.float32))
