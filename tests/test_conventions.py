"""Time conventions (diffusion time, VE sigma, VE SDE, DDPM steps): round trips to and from flow
time in float64, derivatives vs autodiff, and the closed-form check that a score / noise model
of a Gaussian mixture written in each convention, adapted, is jflow's exact flow-time field."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflow import conventions as CV
from jflow import marginals as M
from jflow import schedulers as S
from jflow.schedule_change import change_scheduler, match_time, time_change

T = np.array([0.3, 0.5, 0.7, 0.9])  # inside every convention's SNR range below
_rng = np.random.default_rng(1)
X = _rng.normal(size=(4, 2))
MEANS, STDS, WEIGHTS = _rng.normal(size=(3, 2)), np.array([0.5, 0.8, 1.2]), np.array([0.3, 0.2, 0.5])
CONVENTIONS = {
    "diffusion_vp": CV.DiffusionTime(S.VPScheduler(), T=1.0),
    "diffusion_cosine": CV.DiffusionTime(S.CosineScheduler(), T=1000.0),
    "ve_sigma": CV.VESigma(),
    "ve_sde": CV.VESDE(),
    "ddpm": CV.DDPM.linear(),
}
FLOW = {"linear": S.LinearScheduler(), "cosine": S.CosineScheduler(), "vp": S.VPScheduler()}


def _mixture_fields(a, b, x):
    """Score and noise of sum_k w_k N(a m_k, (a^2 s_k^2 + b^2) I), written out (not the library)."""
    a, b = a[:, None, None], b[:, None, None]
    var = a**2 * STDS[None, :, None] ** 2 + b**2  # (B, K, 1)
    diff = x[:, None, :] - a * MEANS[None]
    logits = np.log(WEIGHTS) - 0.5 * (diff**2).sum(-1) / var[..., 0] - np.log(var[..., 0])  # d = 2
    post = np.exp(logits - logits.max(1, keepdims=True))
    score = -np.einsum("bk,bkd->bd", post / post.sum(1, keepdims=True), diff / var)
    return {"score": score, "noise": -b[:, 0] * score}


@pytest.mark.parametrize("name", sorted(CONVENTIONS))
def test_adapted_mixture_model_equals_flow_time_marginal(name, x64):
    conv, gm = CONVENTIONS[name], M.GaussianMixture(MEANS, STDS, WEIGHTS)

    def model(p):
        return lambda x, tau: jnp.asarray(_mixture_fields(*(np.asarray(v) for v in conv(tau)), np.asarray(x))[p])

    for sched_name, sched in FLOW.items():
        t = jnp.asarray(T)
        for p in ("score", "noise"):
            adapted = change_scheduler(model(p), conv, sched, p)
            np.testing.assert_allclose(
                adapted(X, t), M.marginal_field(sched, gm, X, t, p), rtol=1e-10, atol=1e-12,
                err_msg=f"{name} -> {sched_name} ({p})",
            )
    # and back: a flow-time model exported to the convention's own time
    sched, tau = FLOW["linear"], match_time(T, FLOW["linear"], conv)
    for p in ("score", "noise"):
        exported = change_scheduler(lambda x, t: M.marginal_field(sched, gm, x, t, p), sched, conv, p)  # noqa: B023
        expected = _mixture_fields(*(np.asarray(v) for v in conv(tau)), X)[p]
        np.testing.assert_allclose(exported(X, tau), expected, rtol=1e-10, atol=1e-12, err_msg=f"{name} <- linear")


@pytest.mark.parametrize("name", sorted(CONVENTIONS))
def test_times_round_trip_and_derivatives_match_autodiff(name, x64):
    conv = CONVENTIONS[name]
    for sched in FLOW.values():
        tau = match_time(T, sched, conv)
        np.testing.assert_allclose(match_time(tau, conv, sched), T, rtol=1e-12, err_msg=name)
    lo, hi = conv.domain
    tau = jnp.asarray(lo + (hi - lo) * np.array([0.1, 0.37, 0.62, 0.9]))
    values, tangents = jax.jvp(conv, (tau,), (jnp.ones_like(tau),))
    a, b, da, db = conv.derivatives(tau)
    np.testing.assert_allclose(np.stack([a, b, da, db]), np.stack([*values, *tangents]), rtol=1e-12, err_msg=name)


def test_diffusion_time_is_a_time_reversal(x64):
    conv, vp = CONVENTIONS["diffusion_cosine"], S.VPScheduler()
    np.testing.assert_allclose(match_time(T, FLOW["cosine"], conv), 1000.0 * (1 - T), rtol=1e-12)
    np.testing.assert_allclose(conv.to_flow_time(conv.from_flow_time(T)), T, rtol=1e-15)
    change = time_change(jnp.asarray(T), CV.DiffusionTime(vp, T=2.0), vp)
    np.testing.assert_allclose(change.r, 2.0 * (1 - T), rtol=1e-12)
    np.testing.assert_allclose(change.d_r, -2.0, rtol=1e-12)
    np.testing.assert_allclose(change.scale, 1.0, rtol=1e-12)
    np.testing.assert_allclose(change.d_log_scale, 0.0, atol=1e-12)


def test_ddpm_steps(x64):
    betas = np.linspace(1e-4, 0.02, 1000)
    ddpm = CV.DDPM.from_betas(betas)
    steps = np.arange(0, 1000, 111.0)
    a, b = ddpm(steps)
    np.testing.assert_allclose(a**2, np.cumprod(1 - betas)[steps.astype(int)], rtol=1e-12)
    np.testing.assert_allclose(a**2 + b**2, 1.0, rtol=1e-12)
    # continuous <-> discrete index: flow times of the integer steps map back to integers
    grid = match_time(steps, ddpm, FLOW["cosine"])
    np.testing.assert_allclose(match_time(grid, FLOW["cosine"], ddpm), steps, atol=1e-9)
    # the continuum limit: step n of N linear betas is diffusion time (n + 1) / N of VP(N b_0, N b_1)
    np.testing.assert_allclose(match_time(steps, ddpm, S.VPScheduler(0.1, 20.0)), 1 - (steps + 1) / 1000, atol=5e-3)


def test_ve_prior_at_flow_time_zero(x64):
    ve = CV.VESigma(sigma_min=0.002, sigma_max=80.0)
    change = time_change(jnp.asarray([0.0, 0.5]), ve, FLOW["linear"])
    np.testing.assert_allclose(change.r, [80.0, 1.0], rtol=1e-12)  # clamped to sigma_max; beta/alpha at 1/2
    np.testing.assert_allclose(change.scale, [1 / np.sqrt(1 + 80.0**2), 0.5], rtol=1e-12)  # x_VE = x_flow / s


def test_bad_conventions_raise():
    with pytest.raises(ValueError, match="need 0 < sigma_min < sigma_max"):
        CV.VESigma(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="alphas_cumprod must decrease strictly"):
        CV.DDPM(jnp.asarray([0.9, 0.95, 0.5]))
    with pytest.raises(ValueError, match=r"alphas_cumprod must have shape \(N,\)"):
        CV.DDPM(jnp.asarray([0.5]))
    with pytest.raises(ValueError, match=r"t must lie in the domain \[0.0, 999.0\] of DDPM"):
        match_time(1000.0, CV.DDPM.linear(), FLOW["linear"])
