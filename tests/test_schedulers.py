"""Schedulers: boundary values, closed-form values and derivatives (vs autodiff), shapes,
dtypes, pytree / static-argument behaviour, custom schedulers and the name registry."""
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflow import schedulers as S

T_INTERIOR = np.array([0.05, 0.2, 1 / 3, 0.5, 0.7, 0.9, 0.97])


def _vp_reference(t, beta_min=0.1, beta_max=20.0):
    s = 1.0 - t
    big_t = beta_min * s + 0.5 * (beta_max - beta_min) * s * s
    return np.exp(-0.5 * big_t), np.sqrt(1.0 - np.exp(-big_t))


# Independent numpy formulas of DESIGN.md section 3: name -> (scheduler, t -> (alpha, beta)).
REFERENCE = {
    "linear": (S.LinearScheduler(), lambda t: (t, 1 - t)),
    "cosine": (S.CosineScheduler(), lambda t: (np.sin(np.pi * t / 2), np.cos(np.pi * t / 2))),
    "poly2": (S.PolynomialScheduler(2.0), lambda t: (t**2, 1 - t**2)),
    "poly0.5": (S.PolynomialScheduler(0.5), lambda t: (t**0.5, 1 - t**0.5)),
    "sqrt": (S.SqrtScheduler(), lambda t: (t, np.sqrt(1 - t))),
    "linear_vp": (S.LinearVPScheduler(), lambda t: (t, np.sqrt(1 - t**2))),
    "vp": (S.VPScheduler(), _vp_reference),
    "vp_custom": (S.VPScheduler(beta_min=0.5, beta_max=5.0), lambda t: _vp_reference(t, 0.5, 5.0)),
}
EXACT_ENDPOINTS = [k for k in REFERENCE if not k.startswith("vp")]


@pytest.mark.parametrize("name", EXACT_ENDPOINTS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_boundary_values_exact(name, dtype, x64):
    sched = REFERENCE[name][0]
    alpha, beta = sched(jnp.array([0.0, 1.0], dtype))
    np.testing.assert_array_equal(np.asarray(alpha), [0.0, 1.0])
    np.testing.assert_array_equal(np.asarray(beta), [1.0, 0.0])
    assert S.check_boundary(sched) == []


def test_vp_endpoints_closed_form(x64):
    # alpha_0 = exp(-T(1)/2), T(1) = beta_min + (beta_max - beta_min)/2 = 10.05 for the defaults.
    sched = S.VPScheduler()
    alpha, beta = sched(jnp.array([0.0, 1.0], jnp.float64))
    np.testing.assert_allclose(alpha, [math.exp(-10.05 / 2), 1.0], rtol=1e-14)
    np.testing.assert_allclose(beta, [math.sqrt(1 - math.exp(-10.05)), 0.0], rtol=1e-14, atol=0)
    assert 6.5e-3 < float(alpha[0]) < 6.7e-3  # the value the docstring states
    # beta_0 = sqrt(1 - e^{-10.05}) is 1 - 2.2e-5: both noise-end conditions are approximate
    problems = S.check_boundary(sched)
    assert [p.split(" (")[0] for p in problems] == ["alpha_0 = 0", "beta_0 = 1"]


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_values_match_closed_form(name, x64):
    sched, reference = REFERENCE[name]
    alpha, beta = sched(jnp.asarray(T_INTERIOR))
    ref_alpha, ref_beta = reference(T_INTERIOR)
    np.testing.assert_allclose(alpha, ref_alpha, rtol=1e-13)
    np.testing.assert_allclose(beta, ref_beta, rtol=1e-13)


@functools.partial(jax.jit, static_argnums=0)  # static: see test_tree_structure_distinguishes_schedulers
def _derivatives_and_autodiff(sched, t):
    """Closed forms next to reverse-mode autodiff of ``alpha_beta`` (one compile per scheduler)."""
    grad_alpha = jax.vmap(jax.grad(lambda s: sched(s)[0]))(t)
    grad_beta = jax.vmap(jax.grad(lambda s: sched(s)[1]))(t)
    return S.derivatives(sched, t), sched(t), (grad_alpha, grad_beta)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_derivatives_equal_autodiff(name, x64):
    """Closed-form d_alpha, d_beta equal reverse-mode autodiff of alpha_beta, elementwise."""
    sched, reference = REFERENCE[name]
    (alpha, beta, d_alpha, d_beta), (alpha2, beta2), (grad_alpha, grad_beta) = _derivatives_and_autodiff(
        sched, jnp.asarray(T_INTERIOR)
    )
    np.testing.assert_allclose(d_alpha, grad_alpha, rtol=1e-12)
    np.testing.assert_allclose(d_beta, grad_beta, rtol=1e-12)
    np.testing.assert_allclose(alpha, alpha2, rtol=1e-15)
    np.testing.assert_allclose(beta, beta2, rtol=1e-15)
    # Also against a central finite difference of the independent numpy formula.
    h = 1e-6
    fd = [(p - m) / (2 * h) for p, m in zip(reference(T_INTERIOR + h), reference(T_INTERIOR - h))]
    np.testing.assert_allclose(d_alpha, fd[0], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(d_beta, fd[1], rtol=1e-6, atol=1e-8)


def test_derivative_closed_forms_at_known_points(x64):
    t = jnp.asarray([0.0, 1.0])
    _, _, da, db = S.derivatives(S.CosineScheduler(), t)
    np.testing.assert_allclose(da, [np.pi / 2, 0.0], atol=1e-15)
    np.testing.assert_allclose(db, [0.0, -np.pi / 2], atol=1e-15)
    _, _, da, db = S.derivatives(S.PolynomialScheduler(3.0), jnp.asarray([0.5]))
    np.testing.assert_allclose([da[0], db[0]], [0.75, -0.75], rtol=1e-15)
    _, _, da, db = S.derivatives(S.SqrtScheduler(), jnp.asarray([0.75, 1.0]))
    np.testing.assert_allclose(da, [1.0, 1.0])
    assert float(db[0]) == pytest.approx(-1.0) and float(db[1]) == -np.inf  # -1 / (2 sqrt(1 - t))


def test_derivatives_of_a_plain_callable_use_jvp(x64):
    t = jnp.asarray([0.25, 0.5, 1.0])
    alpha, beta, da, db = S.derivatives(lambda s: (s**3, 1 - s**3), t)
    np.testing.assert_allclose(alpha, t**3)
    np.testing.assert_allclose(beta, 1 - t**3)
    np.testing.assert_allclose(da, 3 * t**2)
    np.testing.assert_allclose(db, -3 * t**2)


def test_derivatives_are_named(x64):
    t = jnp.asarray([0.25, 0.5])
    for sched in (S.PolynomialScheduler(3.0), lambda s: (s**3, 1 - s**3)):  # closed form and jvp
        d = S.derivatives(sched, t)
        assert isinstance(d, S.Derivatives) and d._fields == ("alpha", "beta", "d_alpha", "d_beta")
        np.testing.assert_allclose(d.alpha, t**3)
        np.testing.assert_allclose(d.beta, 1 - t**3)
        np.testing.assert_allclose(d.d_alpha, 3 * t**2)
        np.testing.assert_allclose(d.d_beta, -3 * t**2)
    d = jax.jit(S.derivatives, static_argnums=0)(S.LinearScheduler(), t)  # a pytree through jit
    assert isinstance(d, S.Derivatives) and np.all(np.asarray(d.d_beta) == -1.0)


SHAPE_SCHEDULERS = ("cosine", "poly2", "vp")


def test_elementwise_over_shapes():
    for shape in [(), (3,), (2, 3), (2, 1, 4)]:  # shapes by abstract evaluation (no compilation)
        for name in SHAPE_SCHEDULERS:
            spec = jax.ShapeDtypeStruct(shape, jnp.float32)
            out = jax.eval_shape(lambda t: S.derivatives(REFERENCE[name][0], t), spec)
            assert [v.shape for v in out] == [shape] * 4
    t = np.random.default_rng(0).uniform(0.05, 0.95, size=(2, 1, 4)).astype(np.float32)
    for name in SHAPE_SCHEDULERS:
        sched, reference = REFERENCE[name]
        alpha, beta, d_alpha, d_beta = S.derivatives(sched, t)
        ref_alpha, ref_beta = reference(t.astype(np.float64))
        np.testing.assert_allclose(alpha, ref_alpha, rtol=2e-6)
        np.testing.assert_allclose(beta, ref_beta, rtol=2e-6)
        h, t64 = 1e-6, t.astype(np.float64)  # central differences of the numpy formula
        fd = [(p - m) / (2 * h) for p, m in zip(reference(t64 + h), reference(t64 - h))]
        np.testing.assert_allclose(d_alpha, fd[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(d_beta, fd[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_dtype_preserved(name, x64):
    """Abstract evaluation (no compilation): output dtype == input float dtype, also under x64."""
    sched = REFERENCE[name][0]
    for dtype in (jnp.float16, jnp.float32, jnp.float64):
        t = jax.ShapeDtypeStruct((2,), dtype)
        assert [v.dtype for v in jax.eval_shape(sched, t)] == [dtype] * 2
        assert [v.dtype for v in jax.eval_shape(lambda s: S.derivatives(sched, s), t)] == [dtype] * 4
    # integers and Python numbers become the default float (float64 under x64)
    assert jax.eval_shape(sched, jax.ShapeDtypeStruct((2,), jnp.int32))[0].dtype == jnp.float64
    assert jax.eval_shape(lambda: S.derivatives(sched, 0.5))[2].dtype == jnp.float64


def test_hashable_equal_and_static_jit_argument():
    assert S.LinearScheduler() == S.LinearScheduler() == S.CondOTScheduler()
    assert S.PolynomialScheduler(2.0) == S.PolynomialScheduler(2.0)
    assert hash(S.PolynomialScheduler(2.0)) == hash(S.PolynomialScheduler(2.0))
    assert S.PolynomialScheduler(2.0) != S.PolynomialScheduler(3.0)
    assert S.VPScheduler() == S.VPScheduler(0.1, 20.0) != S.VPScheduler(0.2, 20.0)
    assert S.CosineScheduler() != S.LinearScheduler()
    assert len({S.CosineScheduler(), S.CosineScheduler(), S.SqrtScheduler()}) == 2

    @jax.jit
    @chex.assert_max_traces(n=2)
    def alpha_at(sched, t):
        return sched(t)[0]

    static = jax.jit(lambda sched, t: sched(t)[0], static_argnums=0)
    t = jnp.asarray([0.5])
    # as a pytree argument, n is a traced leaf: changing its value does not retrace
    np.testing.assert_allclose(alpha_at(S.PolynomialScheduler(2.0), t), [0.25])
    np.testing.assert_allclose(alpha_at(S.PolynomialScheduler(3.0), t), [0.125])
    np.testing.assert_allclose(alpha_at(S.CosineScheduler(), t), [np.sin(np.pi / 4)], rtol=1e-6)
    with pytest.raises(AssertionError):  # a third structure would be a third trace
        alpha_at(S.VPScheduler(), t)
    # as a static argument, equal schedulers share the compiled function
    np.testing.assert_allclose(static(S.PolynomialScheduler(2.0), t), [0.25])
    np.testing.assert_allclose(static(S.PolynomialScheduler(2.0), t), [0.25])
    assert static._cache_size() == 1
    np.testing.assert_allclose(static(S.PolynomialScheduler(4.0), t), [0.0625])
    assert static._cache_size() == 2


def test_vmap_over_polynomial_exponent():
    n = jnp.asarray([0.5, 1.0, 2.0, 3.0])
    t = jnp.asarray([0.2, 0.6])
    alpha, beta, d_alpha, d_beta = jax.vmap(lambda s: S.derivatives(s, t))(S.PolynomialScheduler(n))
    chex.assert_shape([alpha, beta, d_alpha, d_beta], (4, 2))
    np.testing.assert_allclose(alpha, t[None] ** n[:, None], rtol=1e-6)
    np.testing.assert_allclose(beta, 1 - t[None] ** n[:, None], rtol=1e-6)
    np.testing.assert_allclose(d_alpha, n[:, None] * t[None] ** (n[:, None] - 1), rtol=1e-5)
    np.testing.assert_allclose(d_beta, -d_alpha, rtol=1e-6)


def test_tree_operations_do_not_revalidate():
    shapes = jax.tree.map(jnp.shape, S.VPScheduler())
    assert shapes.beta_min == () and shapes.beta_max == ()
    spec = jax.tree.map(lambda _: 0, S.PolynomialScheduler(2.0))  # in_axes spec built by a tree op
    out = jax.vmap(lambda s: s(0.5)[0], in_axes=(spec,))(S.PolynomialScheduler(jnp.asarray([1.0, 2.0])))
    np.testing.assert_allclose(out, [0.5, 0.25])


def test_tree_structure_distinguishes_schedulers():
    schedulers = (S.LinearScheduler(), S.CosineScheduler(), S.SqrtScheduler())
    structures = [jax.tree_util.tree_structure(s) for s in schedulers]
    assert structures[0] != structures[1] and structures[1] != structures[2]


def test_construct_inside_jit():
    out = jax.jit(lambda t: S.PolynomialScheduler(2.0)(t)[0] + S.VPScheduler()(t)[0])(jnp.asarray(1.0))
    np.testing.assert_allclose(out, 2.0)


def test_custom_scheduler_from_two_functions(x64):
    def alpha_fn(t):
        return jnp.sin(0.5 * jnp.pi * t) ** 2

    def beta_fn(t):
        return 1 - t

    sched = S.CustomScheduler(alpha_fn, beta_fn)
    t = jnp.asarray(T_INTERIOR)
    alpha, beta, d_alpha, d_beta = S.derivatives(sched, t)
    np.testing.assert_allclose(alpha, np.sin(np.pi * T_INTERIOR / 2) ** 2, rtol=1e-14)
    np.testing.assert_allclose(beta, 1 - T_INTERIOR, rtol=1e-14)
    # d/dt sin^2(pi t / 2) = (pi / 2) sin(pi t)
    np.testing.assert_allclose(d_alpha, 0.5 * np.pi * np.sin(np.pi * T_INTERIOR), rtol=1e-12)
    np.testing.assert_allclose(d_beta, -np.ones_like(T_INTERIOR))
    assert S.CustomScheduler(alpha_fn, beta_fn) == sched
    assert hash(S.CustomScheduler(alpha_fn, beta_fn)) == hash(sched)
    assert S.CustomScheduler(alpha_fn, lambda t: 1 - t) != sched
    # given derivative functions are used as they are
    fake = S.CustomScheduler(alpha_fn, beta_fn, lambda t: 7 * jnp.ones_like(t), lambda t: -3 * jnp.ones_like(t))
    np.testing.assert_array_equal(S.derivatives(fake, t)[2:], [np.full(7, 7.0), np.full(7, -3.0)])
    # float32 in, float32 out (also for the user's functions returning float64 under x64)
    assert all(v.dtype == jnp.float32 for v in S.derivatives(sched, t.astype(jnp.float32)))


@pytest.mark.parametrize(
    "alpha_fn, beta_fn, violated",
    [
        (lambda t: t, lambda t: 1 - 0.5 * t, "beta_1 = 0"),
        (lambda t: 0.5 + 0.5 * t, lambda t: 1 - t, "alpha_0 = 0"),
        (lambda t: 0.9 * t, lambda t: 1 - t, "alpha_1 = 1"),
        (lambda t: t, lambda t: 0.5 - 0.5 * t, "beta_0 = 1"),
        (lambda t: t, lambda t: jnp.sqrt(t - 1), "beta_0 = 1"),  # NaN at t = 0
    ],
)
def test_custom_scheduler_boundary_errors(alpha_fn, beta_fn, violated):
    with pytest.raises(ValueError, match=violated):
        S.CustomScheduler(alpha_fn, beta_fn)
    S.CustomScheduler(alpha_fn, beta_fn, check=False)  # opting out is allowed


def test_custom_scheduler_needs_both_derivatives():
    with pytest.raises(ValueError, match="both d_alpha_fn and d_beta_fn"):
        S.CustomScheduler(lambda t: t, lambda t: 1 - t, d_alpha_fn=lambda t: jnp.ones_like(t))


def test_get_by_name():
    assert S.get("linear") == S.LinearScheduler() == S.get("condot")
    assert S.get("cosine") == S.CosineScheduler()
    assert S.get("polynomial", n=3.0) == S.PolynomialScheduler(3.0)
    assert S.get("sqrt") == S.SqrtScheduler()
    assert S.get("linear_vp") == S.LinearVPScheduler()
    assert S.get("vp", beta_min=0.2, beta_max=10.0) == S.VPScheduler(0.2, 10.0)
    for name in S.NAMES:
        assert isinstance(S.get(name), S.Scheduler)


def test_get_errors():
    with pytest.raises(ValueError, match="unknown scheduler 'ddpm'.*cosine"):
        S.get("ddpm")
    with pytest.raises(ValueError, match="bad parameters"):
        S.get("cosine", n=2)


def test_invalid_parameters():
    for n in (0.0, -1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="finite exponent n > 0"):
            S.PolynomialScheduler(n)
    bad = [(5.0, 1.0), (-0.1, 20.0), (0.1, np.inf), (0.1, np.nan), (np.nan, 20.0), (0.1, -1.0), (0.0, 0.0), (np.inf, np.inf)]
    for lo, hi in bad:
        with pytest.raises(ValueError, match="finite 0 <= beta_min <= beta_max"):
            S.VPScheduler(beta_min=lo, beta_max=hi)
    with pytest.raises(ValueError, match="finite"):
        S.VPScheduler(beta_min=jnp.array([0.1, 0.1]), beta_max=jnp.array([20.0, jnp.inf]))  # a batch for vmap


def test_numpy_and_jax_scalar_parameters():
    t = jnp.linspace(0.0, 1.0, 5)
    ref_vp, ref_poly = S.VPScheduler(0.1, 20.0)(t), S.PolynomialScheduler(3.0)(t)
    for cast in (np.float32, np.float64, jnp.float32):
        np.testing.assert_allclose(S.VPScheduler(cast(0.1), cast(20.0))(t), ref_vp, rtol=1e-6)
        np.testing.assert_allclose(S.PolynomialScheduler(cast(3.0))(t), ref_poly, rtol=1e-6)
