"""Post-hoc schedule change: the exact mixture field of path A, moved to path B, is the exact
field of path B (all four parameterisations, float64); closed-form inverse log-SNR equals the
bisection; the time-change derivatives equal autodiff; clamping outside A's SNR range; jit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflow import marginals as M
from jflow import paths as P
from jflow import schedule_change as SC
from jflow import schedulers as S

SCHEDULERS = {name: S.get(name) for name in ("linear", "cosine", "sqrt", "linear_vp", "vp")}
SCHEDULERS["poly3"] = S.PolynomialScheduler(3.0)
SCHEDULERS["custom"] = S.CustomScheduler(lambda t: t * t, lambda t: 1.0 - t)  # no closed-form inverse: bisection
T = np.array([0.1, 0.35, 0.6, 0.85])
_rng = np.random.default_rng(0)
X = _rng.normal(size=(4, 2))
MIX = dict(means=_rng.normal(size=(3, 2)), stds=np.array([0.5, 0.8, 1.2]), weights=np.array([0.3, 0.2, 0.5]))
PAIRS = [("linear", "cosine"), ("cosine", "linear"), ("linear", "vp"), ("vp", "cosine"), ("cosine", "vp"),
         ("sqrt", "linear_vp"), ("poly3", "custom"), ("custom", "linear")]


@pytest.mark.parametrize("source,target", PAIRS)
def test_changed_field_equals_exact_field_of_new_path(source, target, x64):
    gm = M.GaussianMixture(**MIX)
    a, b = SCHEDULERS[source], SCHEDULERS[target]
    t = jnp.asarray(T)
    for p in P.PARAMETERIZATIONS:
        moved = SC.change_scheduler(lambda x, r: M.marginal_field(a, gm, x, r, p), a, b, p)  # noqa: B023
        np.testing.assert_allclose(moved(X, t), M.marginal_field(b, gm, X, t, p), rtol=1e-10, atol=1e-12, err_msg=p)
    # a scalar t (as the samplers pass it)
    moved = SC.change_scheduler(lambda x, r: M.marginal_velocity(a, gm, x, r), a, b, "velocity")
    np.testing.assert_allclose(moved(X, 0.6), M.marginal_velocity(b, gm, X, 0.6), rtol=1e-10)


def test_closed_form_inverse_log_snr_equals_bisection(x64):
    t = jnp.linspace(0.0, 1.0, 21)
    for name, sched in SCHEDULERS.items():
        lam = SC.log_snr(sched, t)
        closed = SC.time_of_log_snr(sched, lam)
        np.testing.assert_allclose(SC._bisect(sched, lam), closed, atol=1e-12, err_msg=name)
        inside = (t > 0) & (t < 1) if name != "vp" else t < 1  # VP: alpha_0 > 0, log-SNR finite at 0
        np.testing.assert_allclose(closed[inside], t[inside], atol=1e-12, err_msg=name)
    assert np.isnan(SC._bisect(SCHEDULERS["linear"], jnp.asarray([jnp.nan, 0.0]))[0])


def test_time_change_derivatives_equal_autodiff(x64):
    t = jnp.asarray(T)
    for source, target in PAIRS:
        if source == "custom":  # bisection: r carries no autodiff derivative (time_change gives it)
            continue
        a, b = SCHEDULERS[source], SCHEDULERS[target]
        change = SC.time_change(t, a, b)

        def r_and_log_s(s):
            c = SC.time_change(s, a, b)  # noqa: B023
            return c.r, jnp.log(c.scale)

        _, (d_r, d_log_s) = jax.jvp(r_and_log_s, (t,), (jnp.ones_like(t),))
        np.testing.assert_allclose(change.d_r, d_r, rtol=1e-8, err_msg=f"{source}->{target}")
        np.testing.assert_allclose(change.d_log_scale, d_log_s, rtol=1e-8, atol=1e-12)
        # same SNR at matched times and x^B = s x^A: alpha_B = s alpha_A(r), beta_B = s beta_A(r)
        np.testing.assert_allclose(np.stack(b(t)), change.scale * np.stack(a(change.r)), rtol=1e-12)


def test_outside_the_snr_range_time_is_clamped(x64):
    vp, linear = SCHEDULERS["vp"], SCHEDULERS["linear"]
    t = jnp.asarray([0.0, 1e-3])  # linear SNR below VP's smallest (alpha_0 = 6.6e-3)
    change = SC.time_change(t, vp, linear)
    np.testing.assert_allclose(change.r, 0.0, atol=1e-15)
    np.testing.assert_array_equal(change.d_r, 0.0)
    alpha0, beta0 = vp(0.0)
    np.testing.assert_allclose(change.scale, np.sqrt((t**2 + (1 - t) ** 2) / (alpha0**2 + beta0**2)), rtol=1e-12)
    # endpoints of same-range paths are finite, including the velocity's coefficients
    ends = SC.time_change(jnp.asarray([0.0, 1.0]), SCHEDULERS["cosine"], linear)
    np.testing.assert_allclose(ends.r, [0.0, 1.0], atol=1e-15)
    np.testing.assert_allclose(ends.d_r, 2 / np.pi, rtol=1e-12)  # tan(pi r / 2) = t / (1 - t)


def test_change_scheduler_under_jit_equals_eager():
    gm = M.GaussianMixture(**MIX)
    a, b = SCHEDULERS["linear"], SCHEDULERS["custom"]
    moved = SC.change_scheduler(lambda x, r: M.marginal_velocity(a, gm, x, r), a, b, "velocity")
    x, t = jnp.asarray(X, jnp.float32), jnp.asarray(T, jnp.float32)
    out = jax.jit(moved)(x, t)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, moved(x, t), rtol=2e-4, atol=1e-5)


def test_bad_arguments_raise():
    a, b = SCHEDULERS["linear"], SCHEDULERS["cosine"]
    with pytest.raises(ValueError, match="unknown parameterization 'eps'"):
        SC.change_scheduler(lambda x, t: x, a, b, "eps")
    with pytest.raises(ValueError, match="fn must be a field"):
        SC.change_scheduler(None, a, b, "noise")
    with pytest.raises(ValueError, match=r"t must lie in \[0.0, 1.0\]"):
        SC.change_scheduler(lambda x, t: x, a, b, "noise")(jnp.asarray(X), 1.5)
    with pytest.raises(ValueError, match=r"t must lie in"):
        SC.match_time(-0.1, a, b)
