"""Tests of jflow.metrics against hand computations, brute force and closed forms."""
import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from jflow import metrics
from jflow.integrators import odeint


def _normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


# --------------------------------------------------------------------------- energy distance and MMD


def test_energy_distance_by_hand():
    x, y = jnp.array([[0.0], [1.0]]), jnp.array([[2.0]])
    # 2 E|X-Y| - E|X-X'| - E|Y-Y'| = 2 * (2 + 1) / 2 - (0 + 1 + 1 + 0) / 4 - 0
    np.testing.assert_allclose(metrics.energy_distance(x, y), 2.5, rtol=1e-6)
    a = jnp.array([[0.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(metrics.energy_distance(a[:1], a[1:]), 2 * 5.0, rtol=1e-6)  # point masses: 2 |c|


def test_energy_and_mmd_zero_for_identical_and_grow_with_shift():
    x = _normal(0, (200, 3))
    assert float(metrics.energy_distance(x, x)) == pytest.approx(0.0, abs=1e-5)
    assert float(metrics.mmd(x, x)) == pytest.approx(0.0, abs=1e-6)
    shifts = [0.25, 0.5, 1.0, 2.0]
    energies = [float(metrics.energy_distance(x, x + s)) for s in shifts]
    mmds = [float(metrics.mmd(x, x + s)) for s in shifts]
    assert energies[0] > 0 and np.all(np.diff(energies) > 0)
    assert mmds[0] > 0 and np.all(np.diff(mmds) > 0)


def test_mmd_by_hand():
    x, y, h = np.array([[0.0], [1.0]]), np.array([[3.0]]), (1.0, 2.0)
    k = lambda a, b: np.mean([np.exp(-(a - b) ** 2 / (2 * s * s)) for s in h])
    kxx = np.mean([k(a, b) for a in x[:, 0] for b in x[:, 0]])
    kxy = np.mean([k(a, b) for a in x[:, 0] for b in y[:, 0]])
    want = kxx + k(3.0, 3.0) - 2 * kxy
    np.testing.assert_allclose(metrics.mmd(jnp.asarray(x), jnp.asarray(y), bandwidths=h), want, rtol=1e-5)
    with pytest.raises(ValueError, match="positive"):
        metrics.mmd(x, y, bandwidths=(1.0, -1.0))


def test_mmd_bandwidths_do_not_recompile():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(a, b, h):
        return metrics.mmd(a, b, bandwidths=h)

    x = _normal(1, (16, 2))
    v1 = f(x, x + 1.0, jnp.array([0.5, 1.0]))
    v2 = f(x, x + 1.0, jnp.array([5.0, 10.0]))
    assert float(v1) != float(v2)
    np.testing.assert_allclose(metrics.median_bandwidth(jnp.array([[0.0], [1.0]]), jnp.array([[3.0]])), 2.0)


# --------------------------------------------------------------------------- Wasserstein


def test_sliced_wasserstein_exact_in_1d():
    key = jax.random.PRNGKey(0)
    x, y = jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [1.0], [2.0]])
    # quantile functions: x = 0 on [0, 1/2), 1 after; y = 0, 1, 2 on thirds -> int (Fx - Fy)^2 = 1/6 + 1/3
    got = metrics.sliced_wasserstein(x, y, key=key, num_projections=4)
    np.testing.assert_allclose(got, math.sqrt(0.5), rtol=1e-6)
    a, b = np.random.default_rng(1).normal(size=5), np.random.default_rng(2).normal(size=7) + 1.0
    # equal-size replication (each point of a 7 times, of b 5 times) has the same W2: sort and match
    ref = np.mean((np.sort(np.repeat(a, 7)) - np.sort(np.repeat(b, 5))) ** 2)
    got = metrics.sliced_wasserstein(jnp.asarray(a[:, None]), jnp.asarray(b[:, None]), key=key)
    np.testing.assert_allclose(got, math.sqrt(ref), rtol=1e-5)


def test_sliced_wasserstein_shift_and_identity():
    key = jax.random.PRNGKey(1)
    x = _normal(3, (256, 3))
    c = jnp.array([1.0, 2.0, 2.0])  # |c| = 3: SW2 = |c| / sqrt(d) = sqrt(3) in expectation over directions
    got = metrics.sliced_wasserstein(x, x + c, key=key, num_projections=4000)
    np.testing.assert_allclose(got, math.sqrt(3.0), rtol=0.03)
    assert float(metrics.sliced_wasserstein(x, x, key=key)) == pytest.approx(0.0, abs=1e-6)


def test_wasserstein2_brute_force():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    best = min(np.mean(np.sum((x - y[list(p)]) ** 2, 1)) for p in itertools.permutations(range(6)))
    np.testing.assert_allclose(metrics.wasserstein2(x, y), math.sqrt(best), rtol=1e-10)
    assert metrics.wasserstein2(x, x) == 0.0
    with pytest.raises(ValueError, match="equal sample sizes"):
        metrics.wasserstein2(x, y[:5])


def test_wasserstein2_gaussians_closed_form(x64):
    rng = np.random.default_rng(5)
    m1, s1, m2, s2 = np.array([0.0, 1.0]), 1.0, np.array([2.0, -1.0]), 0.5
    closed = math.sqrt(np.sum((m1 - m2) ** 2) + 2 * (s1 - s2) ** 2)  # isotropic 2-D Gaussians
    x = m1 + s1 * rng.normal(size=(300, 2))
    # the Monge map T(x) = m2 + (s2 / s1)(x - m1) is optimal; shuffled, the assignment must recover it
    tx = m2 + (s2 / s1) * (x - m1)
    exact = math.sqrt(np.mean(np.sum((x - tx) ** 2, 1)))
    np.testing.assert_allclose(metrics.wasserstein2(x, tx[rng.permutation(300)]), exact, rtol=1e-9)
    np.testing.assert_allclose(exact, closed, rtol=0.05)
    # independent 1-D samples: W2^2 = (m1 - m2)^2 + (s1 - s2)^2 = 4.25
    a, b = rng.normal(size=(400, 1)), 2.0 + 1.5 * rng.normal(size=(400, 1))
    np.testing.assert_allclose(metrics.wasserstein2(a, b), math.sqrt(4.25), rtol=0.06)


def test_two_sample_input_errors():
    x = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="trailing shape"):
        metrics.energy_distance(x, jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="batch axis"):
        metrics.mmd(jnp.zeros(4), x)
    with pytest.raises(ValueError, match="NaN"):
        metrics.energy_distance(x.at[0, 0].set(jnp.nan), x)
    assert metrics.energy_distance(x, x).dtype == jnp.float32


# --------------------------------------------------------------------------- flow diagnostics


def test_negative_log_likelihood_of_linear_flow(x64):
    a = 0.3  # u_t(x) = a x moves N(0, I) at t=0 to N(0, e^{2a} I) at t=1
    x = jnp.asarray(np.random.default_rng(6).normal(size=(5, 2)))
    ts = jnp.linspace(1.0, 0.0, 9)
    got = metrics.negative_log_likelihood(lambda y, t: a * y, x, ts, method="rk4")
    var = math.exp(2 * a)
    # -log N(x; 0, var I_2) = |x|^2 / (2 var) + (d / 2) log(2 pi var) with d = 2
    want = np.mean(0.5 * np.sum(np.asarray(x) ** 2, 1) / var + math.log(2 * math.pi * var))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    per_dim = metrics.negative_log_likelihood(lambda y, t: a * y, x, ts, method="rk4", per_dim=True)
    np.testing.assert_allclose(per_dim, want / 2, rtol=1e-6)


def test_path_straightness_closed_forms():
    ts = jnp.array([0.0, 0.1, 0.35, 0.5, 0.9, 1.0])  # non-uniform grid
    x0, x1 = _normal(7, (4, 3)), _normal(8, (4, 3))
    line = x0[None] + ts[:, None, None] * (x1 - x0)[None]
    s = metrics.path_straightness(line, ts)
    disp = float(jnp.mean(jnp.sum((x1 - x0) ** 2, -1)))
    np.testing.assert_allclose([s.kinetic_energy, s.displacement, s.ratio], [disp, disp, 1.0], rtol=1e-5)
    assert float(s.deviation) == pytest.approx(0.0, abs=1e-4)

    n = 20  # half circle through n chords of angle pi/n on a uniform grid: energy n^2 (2 sin(pi/2n))^2
    grid = jnp.linspace(0.0, 1.0, n + 1)
    circle = jnp.stack([jnp.cos(jnp.pi * grid), jnp.sin(jnp.pi * grid)], -1)[:, None]
    energy = n**2 * (2 * math.sin(math.pi / (2 * n))) ** 2
    s = metrics.path_straightness(circle, grid)
    want = [energy, 4.0, energy - 4.0]
    np.testing.assert_allclose([s.kinetic_energy, s.displacement, s.deviation], want, rtol=1e-5)
    s_rev = metrics.path_straightness(circle[::-1], grid[::-1])  # a decreasing grid (sampling 1 -> 0)
    np.testing.assert_allclose(s_rev.deviation, energy - 4.0, rtol=1e-5)

    fine = jnp.linspace(0.0, 1.0, 401)  # straight but accelerating: x_t = t^2 c, energy 4/3 |c|^2
    s = metrics.path_straightness((fine**2)[:, None, None] * jnp.ones((1, 1, 2)), fine)
    np.testing.assert_allclose([s.kinetic_energy, s.deviation, s.ratio], [8 / 3, 2 / 3, 0.75], rtol=1e-3)
    with pytest.raises(ValueError, match="monotone|increasing"):
        metrics.path_straightness(line, ts.at[2].set(0.05))


def test_path_straightness_of_odeint_trajectory():
    ts = jnp.linspace(0.0, 1.0, 11)
    x0 = _normal(9, (8, 2))
    traj = odeint(lambda x, t: jnp.ones_like(x) * 2.0, x0, ts, trajectory=True)  # constant velocity
    chex.assert_shape(traj, (11, 8, 2))
    s = metrics.path_straightness(traj, ts)
    np.testing.assert_allclose([s.kinetic_energy, s.ratio], [8.0, 1.0], rtol=1e-5)


# --------------------------------------------------------------------------- images


def test_frechet_distance_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([0.5, 2.0, 1.5])
    got = metrics.frechet_distance_from_statistics(mu1, np.diag(s1**2), mu2, np.diag(s2**2))
    np.testing.assert_allclose(got, np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2), rtol=1e-12)

    rng = np.random.default_rng(10)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    c1, c2 = a @ a.T + 0.1 * np.eye(4), b @ b.T  # non-commuting covariances
    want = 4.0 + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)  # |m1 - m2|^2 = 4
    got = metrics.frechet_distance_from_statistics(np.zeros(4), c1, np.ones(4), c2)
    np.testing.assert_allclose(got, want, rtol=1e-8)
    singular = np.diag([1.0, 0.0, 0.0, 0.0])
    same = metrics.frechet_distance_from_statistics(np.zeros(4), singular, np.zeros(4), singular)
    assert same == pytest.approx(0.0, abs=1e-12)


def test_frechet_distance_of_features():
    f = np.random.default_rng(11).normal(size=(500, 6))
    assert metrics.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-9)
    shift = np.arange(6.0) / 4
    np.testing.assert_allclose(metrics.frechet_distance(f, f + shift), np.sum(shift**2), rtol=1e-9)
    mu, cov = metrics.feature_statistics(f)
    np.testing.assert_allclose(cov, np.cov(f.T))
    with pytest.raises(ValueError, match="shapes"):
        metrics.frechet_distance(f, f[:, :5])


def test_classifier_accuracy():
    x = jnp.array([[-2.0], [-1.0], [1.0], [2.0]])
    classify = lambda v: jnp.concatenate([-v, v], axis=1)  # class 1 iff v > 0
    labels = jnp.array([0, 1, 1, 1])
    assert float(metrics.classifier_accuracy(classify, x, labels)) == 0.75
    assert float(metrics.classifier_accuracy(classify, x, labels, batch_size=3)) == 0.75
    with pytest.raises(ValueError, match="labels"):
        metrics.classifier_accuracy(classify, x, labels[:3])


# --------------------------------------------------------------------------- NaN, half precision, degenerate inputs

_KEY = jax.random.PRNGKey(0)
_TS = jnp.array([0.0, 0.5, 1.0])


def _classify(v):
    return jnp.concatenate([-v[:, :1], v[:, :1]], axis=1)  # class 1 iff v[:, 0] > 0


# each metric as a function of one (4, 2) sample set (NaN goes into it), returning a pytree of floats
_METRICS = {
    "energy_distance": lambda x: metrics.energy_distance(x, jnp.zeros((3, 2))),
    "mmd": lambda x: metrics.mmd(jnp.zeros((3, 2)), x),
    "sliced_wasserstein": lambda x: metrics.sliced_wasserstein(x, x + 1.0, key=_KEY, num_projections=4),
    "median_bandwidth": lambda x: metrics.median_bandwidth(x, jnp.ones((2, 2))),
    "path_straightness": lambda x: metrics.path_straightness(jnp.stack([x, 2.0 * x, 3.0 * x]), _TS),
    "negative_log_likelihood": lambda x: metrics.negative_log_likelihood(lambda y, t: 0.1 * y, x, _TS[::-1]),
    "classifier_accuracy": lambda x: metrics.classifier_accuracy(_classify, x, jnp.array([0, 1, 1, 0])),
}


@pytest.mark.parametrize("name", sorted(_METRICS))
def test_metric_of_nan_samples_is_nan_under_jit_and_vmap_and_raises_eagerly(name):
    fn = _METRICS[name]
    clean = jnp.array([[0.5, 1.0], [-1.0, 0.2], [2.0, -0.3], [-0.7, -1.1]])
    bad = clean.at[1, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="NaN"):
        fn(bad)
    both = jax.vmap(fn)(jnp.stack([clean, bad, clean.at[2, 1].set(jnp.inf)]))  # vmap traces the values
    for leaf in jax.tree_util.tree_leaves(both):
        assert np.isfinite(leaf[0]) and np.isnan(leaf[1]) and np.isnan(leaf[2]), (name, leaf)
    for leaf in jax.tree_util.tree_leaves(jax.jit(fn)(bad)):
        assert np.isnan(leaf), (name, leaf)


def test_host_metrics_refuse_a_trace_and_nan_statistics():
    with pytest.raises(ValueError, match="host"):
        jax.jit(metrics.wasserstein2)(jnp.zeros((3, 2)), jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="host"):
        jax.jit(metrics.frechet_distance)(jnp.zeros((3, 2)), jnp.ones((3, 2)))
    eye = np.eye(2)
    with pytest.raises(ValueError, match="sigma2 contains NaN"):
        metrics.frechet_distance_from_statistics(np.zeros(2), eye, np.zeros(2), eye * np.nan)


def test_half_precision_samples_are_accumulated_in_float32():
    # pairwise squared norms of these points (~1e5) overflow float16 (max 65504)
    x = jnp.round(_normal(12, (64, 8)) * 60.0)  # integers: exact in float16, so y - x is exactly 30
    y = x + 30.0
    for metric in (metrics.energy_distance, lambda a, b: metrics.mmd(a, b, bandwidths=(100.0, 300.0))):
        got = metric(x.astype(jnp.float16), y.astype(jnp.float16))
        assert got.dtype == jnp.float32 and float(got) > 0
        np.testing.assert_allclose(got, metric(x, y), rtol=1e-6)  # the same values in float32 arithmetic
    traj = jnp.stack([x, y]).astype(jnp.float16)
    s = metrics.path_straightness(traj, jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(s.kinetic_energy, 8 * 30.0**2, rtol=1e-6)  # |y - x|^2 = 8 * 30^2, no overflow


def test_degenerate_inputs_raise():
    u = lambda y, t: y
    with pytest.raises(ValueError, match="at least one example"):
        metrics.negative_log_likelihood(u, jnp.zeros((0, 2)), _TS[::-1])
    with pytest.raises(ValueError, match="at least one sample"):
        metrics.classifier_accuracy(_classify, jnp.zeros((0, 2)), jnp.zeros((0,), int))
    with pytest.raises(ValueError, match="N >= 1 trajectories"):
        metrics.path_straightness(jnp.zeros((3, 0, 2)), _TS)
    with pytest.raises(ValueError, match="at least one value per sample"):
        metrics.energy_distance(jnp.zeros((3, 0)), jnp.zeros((3, 0)))


def test_classifier_accuracy_labels_outside_the_classes():
    x = jnp.array([[-2.0], [-1.0], [1.0], [2.0]])
    classify = lambda v: jnp.concatenate([-v, v], axis=1)  # two classes
    for labels in (jnp.array([0, 1, 2, 1]), jnp.array([0, -1, 1, 1])):
        with pytest.raises(ValueError, match=r"in \[0, 2\)"):
            metrics.classifier_accuracy(classify, x, labels)
        assert np.isnan(jax.jit(lambda a, b: metrics.classifier_accuracy(classify, a, b))(x, labels))
    with pytest.raises(ValueError, match="NaN or inf logits"):
        metrics.classifier_accuracy(lambda v: jnp.full((v.shape[0], 2), jnp.nan), x, jnp.array([0, 1, 1, 1]))
    # numpy integers are accepted where a Python int is expected
    got = metrics.classifier_accuracy(classify, x, jnp.array([0, 1, 1, 1]), batch_size=np.int64(3))
    assert float(got) == 0.75
    a = metrics.sliced_wasserstein(x, x + 1.0, key=_KEY, num_projections=np.int32(2))
    np.testing.assert_allclose(a, 1.0, rtol=1e-6)  # in 1-D every direction is +-1: exactly the shift
