"""Two-sample distances: energy distance, MMD, sliced and exact Wasserstein-2 (see :mod:`jflow.metrics`)."""
from __future__ import annotations

from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import check_positive_int, is_concrete
from jflow.metrics._common import Array, host_array, nan_unless_finite, pair

__all__ = ["DEFAULT_BANDWIDTHS", "energy_distance", "median_bandwidth", "mmd", "sliced_wasserstein", "wasserstein2"]

DEFAULT_BANDWIDTHS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def _sq_dists(a: Array, b: Array) -> Array:
    """``(N, M)`` squared Euclidean distances, clipped at 0 (the expansion can round below 0)."""
    sq = jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2.0 * a @ b.T
    return jnp.maximum(sq, 0.0)


def _dists(a: Array, b: Array) -> Array:
    """``(N, M)`` Euclidean distances with a finite gradient at 0 (``sqrt`` is guarded)."""
    sq = _sq_dists(a, b)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def energy_distance(x, y) -> Array:
    r"""Squared energy distance :math:`D^2(P, Q) = 2E\|X - Y\| - E\|X - X'\| - E\|Y - Y'\|` of two samples.

    V-statistic over all pairs (including ``i = j``): :math:`\frac{2}{NM}\sum_{ij}\|x_i - y_j\|
    - \frac{1}{N^2}\sum_{ij}\|x_i - x_j\| - \frac{1}{M^2}\sum_{ij}\|y_i - y_j\|`. It is the
    energy distance between the two empirical distributions, so it is >= 0 and exactly 0
    when the samples are equal (Szekely and Rizzo). For a shift ``y = x + c`` of a point
    mass it is ``2 ||c||``. ``x``: ``(N, ...)``, ``y``: ``(M, ...)``; returns a scalar.
    """
    return _energy(*pair(x, y))


@jax.jit
def _energy(x: Array, y: Array) -> Array:
    value = 2.0 * jnp.mean(_dists(x, y)) - jnp.mean(_dists(x, x)) - jnp.mean(_dists(y, y))
    return nan_unless_finite(value, x, y)


def median_bandwidth(x, y) -> Array:
    """Median heuristic: the median Euclidean distance between the pooled points (``i != j``)."""
    x, y = pair(x, y)
    if x.shape[0] + y.shape[0] < 2:
        raise ValueError("median_bandwidth needs at least two points in total")
    return _median_bandwidth(x, y)


@jax.jit
def _median_bandwidth(x: Array, y: Array) -> Array:
    z = jnp.concatenate([x, y])
    d = _dists(z, z)[jnp.triu_indices(z.shape[0], k=1)]
    return nan_unless_finite(jnp.median(d), x, y)


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
    x, y = pair(x, y)
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

    return nan_unless_finite(mean_kernel(x, x) + mean_kernel(y, y) - 2.0 * mean_kernel(x, y), x, y, h)


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
    x, y = pair(x, y)
    num_projections = check_positive_int(num_projections, "num_projections", why="it fixes a shape")
    return _sliced(x, y, key, num_projections)


@partial(jax.jit, static_argnums=3)
def _sliced(x: Array, y: Array, key: Array, num_projections: int) -> Array:
    theta = jax.random.normal(key, (num_projections, x.shape[1]), x.dtype)
    theta = theta / jnp.linalg.norm(theta, axis=1, keepdims=True)
    w2 = jax.vmap(_w2_squared_1d)(theta @ x.T, theta @ y.T)
    return nan_unless_finite(jnp.sqrt(jnp.mean(w2)), x, y)


def wasserstein2(x, y) -> float:
    r"""Exact Wasserstein-2 distance between two equal-size empirical distributions (host, float64).

    :math:`W_2^2 = \min_\pi \frac1N \sum_i \|x_i - y_{\pi(i)}\|^2` over permutations: with
    equal uniform weights an optimal coupling is a permutation (Birkhoff), found by
    ``scipy.optimize.linear_sum_assignment`` on the ``N x N`` cost matrix on the host
    (numpy, O(N^3) time: use N up to a few thousand). Not jittable. Returns a Python float.
    """
    from scipy.optimize import linear_sum_assignment

    a, b = (host_array(v, name, "wasserstein2") for v, name in ((x, "x"), (y, "y")))
    for name, v in (("x", a), ("y", b)):
        if v.ndim < 2 or v.shape[0] < 1 or v.size == 0:
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
