r"""Sample-quality metrics: two-sample distances, likelihood, path straightness, image metrics.

Two-sample metrics compare samples ``x`` of shape ``(N, ...)`` and ``y`` of shape
``(M, ...)`` (trailing axes are flattened to vectors of dimension ``d``):

- :func:`energy_distance` and :func:`mmd` (RBF kernel mix): V-statistics, so they are
  exactly 0 for identical samples and >= 0 always; jittable; O(N M) memory.
- :func:`sliced_wasserstein`: sliced Wasserstein-2 with random directions from an explicit
  ``key``; exact 1-D transport along each direction (also for ``N != M``); jittable.
- :func:`wasserstein2`: exact Wasserstein-2 between two equal-size samples by optimal
  assignment on the host (``scipy.optimize.linear_sum_assignment``, O(N^3): small N).

Flow diagnostics: :func:`negative_log_likelihood` (held-out NLL through
:func:`jflow.likelihood.log_likelihood`) and :func:`path_straightness` (of sampled
trajectories, e.g. ``odeint(..., trajectory=True)``).

Images: :func:`frechet_distance` between two feature sets (features of a classifier,
passed in as arrays; host float64 math) and :func:`classifier_accuracy` of a classifier
function on generated samples of requested classes.

Float inputs keep their dtype (float32 in, float32 out); the host metrics return Python
floats.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import as_float, is_concrete

Array = jax.Array

__all__ = [
    "energy_distance",
    "mmd",
    "DEFAULT_BANDWIDTHS",
    "median_bandwidth",
    "sliced_wasserstein",
    "wasserstein2",
    "negative_log_likelihood",
    "PathStraightness",
    "path_straightness",
    "feature_statistics",
    "frechet_distance_from_statistics",
    "frechet_distance",
    "classifier_accuracy",
]

DEFAULT_BANDWIDTHS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


# --------------------------------------------------------------------------- helpers


@jax.jit
def _all_finite(a: Array) -> Array:
    return jnp.all(jnp.isfinite(a))


def _check_finite(name: str, a) -> None:
    if is_concrete(a) and not bool(_all_finite(a)):
        raise ValueError(f"{name} contains NaN or inf; metrics need finite samples")


def _as_vectors(x, name: str) -> Array:
    x = as_float(x)
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(
            f"{name} must have shape (N, ...) with a batch axis first and N >= 1; got shape {tuple(x.shape)} "
            f"(a single 1-D sample set of N values: {name}[:, None])"
        )
    _check_finite(name, x)
    return x.reshape(x.shape[0], -1)


def _pair(x, y) -> tuple[Array, Array]:
    x, y = _as_vectors(x, "x"), _as_vectors(y, "y")
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(
            f"x and y must have the same trailing shape; got x: {x.shape} and y: {y.shape} after flattening"
        )
    dtype = jnp.result_type(x, y)
    return x.astype(dtype), y.astype(dtype)


def _sq_dists(a: Array, b: Array) -> Array:
    """``(N, M)`` squared Euclidean distances, clipped at 0 (the expansion can round below 0)."""
    sq = jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2.0 * a @ b.T
    return jnp.maximum(sq, 0.0)


def _dists(a: Array, b: Array) -> Array:
    """``(N, M)`` Euclidean distances with a finite gradient at 0 (``sqrt`` is guarded)."""
    sq = _sq_dists(a, b)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


# --------------------------------------------------------------------------- two-sample metrics


def energy_distance(x, y) -> Array:
    r"""Squared energy distance :math:`D^2(P, Q) = 2E\|X - Y\| - E\|X - X'\| - E\|Y - Y'\|` of two samples.

    V-statistic over all pairs (including ``i = j``): :math:`\frac{2}{NM}\sum_{ij}\|x_i - y_j\|
    - \frac{1}{N^2}\sum_{ij}\|x_i - x_j\| - \frac{1}{M^2}\sum_{ij}\|y_i - y_j\|`. It is the
    energy distance between the two empirical distributions, so it is >= 0 and exactly 0
    when the samples are equal (Szekely and Rizzo). For a shift ``y = x + c`` of a point
    mass it is ``2 ||c||``. ``x``: ``(N, ...)``, ``y``: ``(M, ...)``; returns a scalar.
    """
    return _energy(*_pair(x, y))


@jax.jit
def _energy(x: Array, y: Array) -> Array:
    return 2.0 * jnp.mean(_dists(x, y)) - jnp.mean(_dists(x, x)) - jnp.mean(_dists(y, y))


def median_bandwidth(x, y) -> Array:
    """Median heuristic: the median Euclidean distance between the pooled points (``i != j``)."""
    x, y = _pair(x, y)
    z = jnp.concatenate([x, y])
    n = z.shape[0]
    if n < 2:
        raise ValueError("median_bandwidth needs at least two points in total")
    d = _dists(z, z)[jnp.triu_indices(n, k=1)]
    return jnp.median(d)


def mmd(x, y, *, bandwidths: Sequence[float] | Array = DEFAULT_BANDWIDTHS) -> Array:
    r"""Squared maximum mean discrepancy with a mixture of RBF kernels (biased V-statistic).

    .. math:: \mathrm{MMD}^2 = \frac{1}{N^2}\sum_{ij} k(x_i, x_j) + \frac{1}{M^2}\sum_{ij} k(y_i, y_j)
              - \frac{2}{NM}\sum_{ij} k(x_i, y_j), \qquad
              k(a, b) = \frac{1}{L}\sum_{l=1}^{L} \exp\Big(-\frac{\|a - b\|^2}{2 h_l^2}\Big).

    A sum of characteristic kernels, so it separates distributions at every bandwidth scale
    ``h_l``; it is >= 0 and exactly 0 for identical samples. ``bandwidths`` (positive,
    array-like; an array argument does not recompile when its values change) default
    :data:`DEFAULT_BANDWIDTHS`, meant for data of unit scale; for other scales multiply by
    :func:`median_bandwidth`. Returns a scalar.
    """
    x, y = _pair(x, y)
    h = jnp.asarray(bandwidths, dtype=x.dtype).reshape(-1)
    if h.shape[0] < 1:
        raise ValueError("bandwidths must hold at least one positive value")
    if is_concrete(h) and not bool(jnp.all(h > 0)):
        raise ValueError(f"bandwidths must be positive; got {np.asarray(h)}")
    return _mmd(x, y, h)


@jax.jit
def _mmd(x: Array, y: Array, h: Array) -> Array:
    inv = 1.0 / (2.0 * h * h)

    def mean_kernel(a, b):
        return jnp.mean(jnp.exp(-_sq_dists(a, b)[None] * inv[:, None, None]))

    return mean_kernel(x, x) + mean_kernel(y, y) - 2.0 * mean_kernel(x, y)


def _w2_squared_1d(a: Array, b: Array) -> Array:
    r"""Exact :math:`W_2^2` between two 1-D empirical distributions (sizes may differ).

    :math:`W_2^2 = \int_0^1 (F^{-1}(u) - G^{-1}(u))^2 du` with piecewise-constant quantile
    functions; the integrand is constant between consecutive breakpoints
    :math:`\{i/N\} \cup \{j/M\}`, evaluated at each interval's midpoint.
    """
    n, m = a.shape[0], b.shape[0]
    a, b = jnp.sort(a), jnp.sort(b)
    levels = jnp.sort(jnp.concatenate([jnp.arange(1, n + 1) / n, jnp.arange(1, m + 1) / m])).astype(a.dtype)
    widths = jnp.diff(levels, prepend=jnp.zeros((1,), a.dtype))
    mid = levels - 0.5 * widths
    ia = jnp.clip(jnp.floor(mid * n).astype(jnp.int32), 0, n - 1)
    ib = jnp.clip(jnp.floor(mid * m).astype(jnp.int32), 0, m - 1)
    return jnp.sum(widths * (a[ia] - b[ib]) ** 2)


def sliced_wasserstein(x, y, *, key: Array, num_projections: int = 128) -> Array:
    r"""Sliced Wasserstein-2 distance :math:`\big(E_{\theta}\, W_2^2(\theta^\top X, \theta^\top Y)\big)^{1/2}`.

    :math:`\theta` uniform on the unit sphere (``num_projections`` directions drawn from
    ``key``; the estimate is Monte Carlo in :math:`\theta`), and each 1-D :math:`W_2^2` is
    exact between the projected empirical distributions (sorting; unequal ``N``, ``M``
    allowed). For a shift ``y = x + c``, :math:`E_\theta(\theta^\top c)^2 = \|c\|^2/d`,
    so the value is :math:`\|c\|/\sqrt d`. Returns a scalar (0 for identical samples).
    """
    x, y = _pair(x, y)
    if not isinstance(num_projections, int) or num_projections < 1:
        raise ValueError(f"num_projections must be a positive int; got {num_projections!r}")
    return _sliced(x, y, key, num_projections)


@partial(jax.jit, static_argnums=3)
def _sliced(x: Array, y: Array, key: Array, num_projections: int) -> Array:
    theta = jax.random.normal(key, (num_projections, x.shape[1]), x.dtype)
    theta = theta / jnp.linalg.norm(theta, axis=1, keepdims=True)
    w2 = jax.vmap(_w2_squared_1d)(theta @ x.T, theta @ y.T)
    return jnp.sqrt(jnp.mean(w2))


def wasserstein2(x, y) -> float:
    r"""Exact Wasserstein-2 distance between two equal-size empirical distributions (host, float64).

    :math:`W_2^2 = \min_\pi \frac1N \sum_i \|x_i - y_{\pi(i)}\|^2` over permutations: with
    equal uniform weights an optimal coupling is a permutation (Birkhoff), found by
    ``scipy.optimize.linear_sum_assignment`` on the ``N x N`` cost matrix on the host
    (numpy, O(N^3) time: use N up to a few thousand). Not jittable. Returns a Python float.
    """
    from scipy.optimize import linear_sum_assignment

    a, b = (np.asarray(v, np.float64) for v in (x, y))
    for name, v in (("x", a), ("y", b)):
        if v.ndim < 2 or v.shape[0] < 1:
            raise ValueError(f"{name} must have shape (N, ...) with a batch axis first; got shape {v.shape}")
        if not np.isfinite(v).all():
            raise ValueError(f"{name} contains NaN or inf; metrics need finite samples")
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x and y must have the same trailing shape; got {np.shape(x)} and {np.shape(y)}")
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"wasserstein2 needs equal sample sizes (optimal assignment); got N={a.shape[0]} and M={b.shape[0]}. "
            "Subsample the larger set, or use sliced_wasserstein."
        )
    cost = np.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))


# --------------------------------------------------------------------------- flow diagnostics


def negative_log_likelihood(u: Callable, x, ts, *, per_dim: bool = False, **kwargs) -> Array:
    r"""Mean negative log-likelihood :math:`-\frac1B\sum_b \log p_1(x_b)` of held-out data under a flow (nats).

    Thin wrapper of :func:`jflow.likelihood.log_likelihood` (instantaneous change of
    variables, :math:`\log p_1(x) = \log p_0(X_0) - \int_0^1 \operatorname{div} u_t(X_t) dt`):
    ``u(x, t, *args)``, ``ts`` a decreasing grid from 1 to 0, keyword arguments
    (``method``, ``divergence``, ``key``, ``args``, ...) passed through. ``per_dim=True``
    divides by the data dimension ``d``. For bits per dimension of quantised images use
    :func:`jflow.likelihood.bits_per_dim`.
    """
    from jflow.likelihood import log_likelihood

    x = as_float(x)
    _check_finite("x", x)
    nll = -jnp.mean(log_likelihood(u, x, ts, **kwargs))
    if per_dim:
        nll = nll / math.prod(x.shape[1:])
    return nll


class PathStraightness(NamedTuple):
    """Straightness of trajectories (means over the ``N`` trajectories), see :func:`path_straightness`."""

    kinetic_energy: Array  # E int ||dx/dt||^2 dt over the time span
    displacement: Array  # E ||x_end - x_start||^2 / (time span)
    deviation: Array  # kinetic_energy - displacement = E int ||dx/dt - (x_end - x_start)/span||^2 dt >= 0
    ratio: Array  # displacement / kinetic_energy in [0, 1]; 1 = straight at constant speed


def path_straightness(trajectory, ts) -> PathStraightness:
    r"""How far trajectories are from straight constant-speed lines (rectified-flow straightness).

    For a path :math:`x_t` on :math:`[t_0, t_1]` (span :math:`L = |t_1 - t_0|`),
    :math:`S = \int \|\dot x_t - (x_{t_1} - x_{t_0})/L\|^2 dt = \int\|\dot x_t\|^2 dt -
    \|x_{t_1} - x_{t_0}\|^2 / L \ge 0` (Cauchy-Schwarz), zero exactly for straight lines
    traversed at constant speed (Liu et al. 2022). From a discrete trajectory (the
    piecewise-linear path through the grid points, whose energy is exact)
    :math:`\int\|\dot x\|^2 dt = \sum_k \|x_{k+1} - x_k\|^2 / |t_{k+1} - t_k|`.

    Args:
      trajectory: ``(T, N, ...)`` states at the grid times (e.g. ``odeint(u, x0, ts,
        trajectory=True)``), trailing axes flattened.
      ts: ``(T,)`` strictly monotone (increasing or decreasing) grid.

    Returns:
      :class:`PathStraightness` (kinetic energy, displacement, deviation ``S`` and the ratio
      displacement / energy in ``[0, 1]``), each a scalar mean over the ``N`` trajectories.
    """
    traj = as_float(trajectory)
    if traj.ndim < 3:
        raise ValueError(f"trajectory must have shape (T, N, ...) with T grid points; got {tuple(traj.shape)}")
    _check_finite("trajectory", traj)
    ts = jnp.asarray(ts, traj.dtype)
    if ts.shape != traj.shape[:1] or ts.shape[0] < 2:
        raise ValueError(
            f"ts must have shape (T,) = ({traj.shape[0]},) with T >= 2 to match trajectory; got {tuple(ts.shape)}"
        )
    if is_concrete(ts):
        d = np.diff(np.asarray(ts))
        if not (np.all(d > 0) or np.all(d < 0)):
            raise ValueError("ts must be strictly increasing or strictly decreasing")
    return _straightness(traj, ts)


@jax.jit
def _straightness(traj: Array, ts: Array) -> PathStraightness:
    dt = jnp.abs(jnp.diff(ts))
    flat = traj.reshape(traj.shape[0], traj.shape[1], -1)
    steps = jnp.sum(jnp.diff(flat, axis=0) ** 2, axis=-1)  # (T-1, N)
    energy = jnp.mean(jnp.sum(steps / dt[:, None], axis=0))
    displacement = jnp.mean(jnp.sum((flat[-1] - flat[0]) ** 2, axis=-1)) / jnp.sum(dt)
    deviation = jnp.maximum(energy - displacement, 0.0)
    ratio = jnp.where(energy > 0, displacement / jnp.where(energy > 0, energy, 1.0), 1.0)
    return PathStraightness(energy, displacement, deviation, ratio)


# --------------------------------------------------------------------------- images


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of ``(N, D)`` features, float64 on the host."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape (N, D) with N >= 2; got {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or inf")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root by ``eigh`` (negative round-off eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh(0.5 * (a + a.T))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance_from_statistics(mu1, sigma1, mu2, sigma2) -> float:
    r"""Frechet distance between two Gaussians given their means and covariances.

    .. math:: \|\mu_1 - \mu_2\|^2 + \operatorname{tr}\big(\Sigma_1 + \Sigma_2
              - 2(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2})^{1/2}\big),

    the squared W2 distance between :math:`\mathcal N(\mu_1, \Sigma_1)` and
    :math:`\mathcal N(\mu_2, \Sigma_2)` (the FID formula). Computed on the host in float64
    with symmetric eigendecompositions (``tr (\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2})^{1/2}``
    equals ``tr (\Sigma_1\Sigma_2)^{1/2}`` but stays real and stable for singular
    covariances). Returns a Python float (clipped at 0).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    dim = mu1.shape[0] if mu1.ndim == 1 else -1
    if mu1.ndim != 1 or mu2.shape != (dim,) or s1.shape != (dim, dim) or s2.shape != (dim, dim):
        raise ValueError(
            f"need mu1, mu2 of shape (D,) and sigma1, sigma2 of shape (D, D); got {mu1.shape}, {mu2.shape}, "
            f"{s1.shape}, {s2.shape}"
        )
    root1 = _psd_sqrt(s1)
    middle = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh(0.5 * (middle + middle.T))
    tr_cross = np.sum(np.sqrt(np.clip(eig, 0.0, None)))
    value = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * tr_cross
    return float(max(value, 0.0))


def frechet_distance(features1, features2) -> float:
    """Frechet distance between two ``(N, D)`` feature sets (Gaussian fits by :func:`feature_statistics`).

    With features of a classifier trained on the data set (penultimate layer), this is the
    FID-style image metric; state the classifier and the sample counts with the number
    (the value is biased upwards for small ``N``).
    """
    f1, f2 = np.asarray(features1), np.asarray(features2)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"features must have shapes (N, D) and (M, D); got {f1.shape} and {f2.shape}")
    return frechet_distance_from_statistics(*feature_statistics(f1), *feature_statistics(f2))


def classifier_accuracy(classify: Callable, x, labels, *, batch_size: Optional[int] = None) -> Array:
    r"""Fraction of samples ``x`` that ``classify`` assigns to their requested class ``labels``.

    ``classify(x_batch) -> logits (B, num_classes)`` (e.g. ``lambda x: model.apply(params,
    x)``); accuracy :math:`\frac1N\sum_i [\arg\max_c \text{logits}_{ic} = y_i]`. With samples
    generated for class ``y_i`` (guidance, Algorithm 8) this measures how well the guidance
    works. ``batch_size`` evaluates in chunks (the last one may be smaller). Returns a
    float32 scalar.
    """
    x = jnp.asarray(x)
    labels = jnp.asarray(labels)
    if x.ndim < 1 or labels.shape != x.shape[:1] or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"labels must be integers of shape (N,) = ({x.shape[0] if x.ndim else '?'},); got dtype "
            f"{labels.dtype} and shape {tuple(labels.shape)}"
        )
    n = x.shape[0]
    step = n if batch_size is None else int(batch_size)
    if step < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    correct = []
    for start in range(0, n, step):
        logits = jnp.asarray(classify(x[start : start + step]))
        if logits.ndim != 2 or logits.shape[0] != min(step, n - start):
            raise ValueError(f"classify must return logits of shape (B, num_classes); got {tuple(logits.shape)}")
        correct.append(_num_correct(logits, labels[start : start + step]))
    return (sum(correct) / n).astype(jnp.float32)


@jax.jit
def _num_correct(logits: Array, labels: Array) -> Array:
    return jnp.sum(jnp.argmax(logits, axis=-1) == labels)
