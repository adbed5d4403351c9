"""Flow diagnostics: held-out negative log-likelihood and path straightness (see :mod:`jflow.metrics`)."""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import is_concrete
from jflow.metrics._common import Array, at_least_f32, check_finite, nan_unless_finite

__all__ = ["negative_log_likelihood", "PathStraightness", "path_straightness"]


def negative_log_likelihood(u: Callable, x, ts, *, per_dim: bool = False, **kwargs) -> Array:
    r"""Mean negative log-likelihood :math:`-\frac1B\sum_b \log p_1(x_b)` of held-out data under a flow (nats).

    Thin wrapper of :func:`jflow.likelihood.log_likelihood` (instantaneous change of
    variables, :math:`\log p_1(x) = \log p_0(X_0) - \int_0^1 \operatorname{div} u_t(X_t) dt`):
    ``u(x, t, *args)``, ``ts`` a decreasing grid from 1 to 0, keyword arguments
    (``method``, ``divergence``, ``key``, ``args``, ...) passed through. ``per_dim=True``
    divides by the data dimension ``d``. For bits per dimension of quantised images use
    :func:`jflow.likelihood.bits_per_dim`. ``x`` needs at least one example (the mean of
    none is undefined); under ``jit`` a non-finite ``x`` or log-likelihood gives NaN.
    """
    from jflow.likelihood import log_likelihood

    x = at_least_f32(x)
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(
            f"x must have shape (B, ...) with at least one example (the NLL of an empty set is undefined); "
            f"got shape {tuple(x.shape)}"
        )
    check_finite("x", x)
    ll = log_likelihood(u, x, ts, **kwargs)
    nll = nan_unless_finite(-jnp.mean(ll), x, ll)
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
    traj = at_least_f32(trajectory)
    if traj.ndim < 3 or traj.size == 0:
        raise ValueError(
            f"trajectory must have shape (T, N, ...) with T grid points and N >= 1 trajectories; got {tuple(traj.shape)}"
        )
    check_finite("trajectory", traj)
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
    return nan_unless_finite(PathStraightness(energy, displacement, deviation, ratio), traj, ts)
