r"""Evaluation of trained flows (all seeds at once): sample quality, few-step quality, solver cost, path energy.

For a flow :math:`u^\theta` started from held-out source points :math:`x_0^{(i)}` (the
same points for every method and seed, so comparisons are paired):

- **reference solution**: RK4 with ``ref_steps`` uniform steps (Algorithm 1's grid), taken as
  the exact ODE flow; ``w2_ode`` is its exact :math:`W_2` to held-out target data
  (:func:`jflow.metrics.wasserstein2`, optimal assignment).
- **few-step quality**: Euler (Algorithm 1) with ``n`` uniform steps; ``w2_euler_n`` is its
  :math:`W_2` to the same data (``n = 20`` is the setting of Shi et al. 2023, Table 2),
  ``err_euler_n`` the RMS distance of its end points to the reference solution's.
- **solver cost**, two columns:

  - ``dopri5_nfe``: the number of evaluations of :math:`u^\theta` by
    :func:`jflow.integrators.odeint_adaptive` (Dormand-Prince 5(4), PI step-size control)
    from :math:`x_0` at :math:`t = 0` to :math:`t = 1` with ``rtol = atol = adaptive_tol``,
    all held-out points one system (one step-size sequence, the local error norm
    :math:`\sqrt{\mathrm{mean}\,(e / (atol + rtol\max(|x|, |x_{new}|)))^2}` over every
    element, as torchdiffeq's ``odeint`` on a batch): :math:`\mathrm{NFE} = 2 + 6 \cdot
    (\text{attempted steps})`, the 2 being the first evaluation and Hairer's initial-step
    heuristic (first-same-as-last: 6 new evaluations per step). ``w2_dopri5`` is the
    :math:`W_2` of its end points to the held-out target, ``err_dopri5`` their RMS distance to
    the reference solution's (how exact the reference is). All three are ``None`` for a seed
    whose solve ran out of ``adaptive_max_steps`` attempted steps (its state is NaN).
  - ``euler_steps_to_tol`` (fixed-step): the fewest Euler steps among ``euler_steps`` whose
    end points are within ``euler_tol`` (RMS, data units) of the reference; ``None`` when
    none is.
- **path energy and straightness** of the reference trajectories
  (:func:`jflow.metrics.path_straightness`): the kinetic energy
  :math:`\mathrm{PE} = \mathbb E\int_0^1\|u_t(x_t)\|^2 dt` (exact for the piecewise-linear path
  through the grid points), the deviation from straight constant-speed lines
  :math:`S = \mathrm{PE} - \mathbb E\|x_1 - x_0\|^2 \ge 0`, and Tong et al.'s normalised path energy
  :math:`\mathrm{NPE} = |\mathrm{PE} - W_2^2(q_0, q_1)| / W_2^2(q_0, q_1)` (Section 5.1), with
  :math:`W_2^2(q_0, q_1)` the exact squared :math:`W_2` between the held-out source and target
  samples. An optimal (OT) flow has :math:`S = 0` and :math:`\mathrm{NPE} \approx 0`.
"""
from __future__ import annotations

import functools
from typing import Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from jflow.integrators import odeint, odeint_adaptive, uniform_grid
from jflow.metrics import path_straightness, wasserstein2

from experiments.couplings import model

__all__ = ["solve", "solve_adaptive", "euler_steps_to_tolerance", "normalised_path_energy", "evaluate"]


def _velocity(x, t, params):
    return model.apply(params, x, t)


@functools.lru_cache(maxsize=None)
def _solver(method: str, trajectory: bool):
    """Jitted ``(params (R, ...), x0 (N, d), ts) -> (R, [T,] N, d)``: one ODE solve per seed, vmapped."""

    def one(params, x0, ts):
        return odeint(_velocity, x0, ts, method=method, trajectory=trajectory, args=(params,))

    return jax.jit(jax.vmap(one, in_axes=(0, None, None)))


def solve(params, x0, n_steps: int, *, method: str = "euler", trajectory: bool = False) -> np.ndarray:
    """Integrate the flow of every seed from ``x0`` over ``uniform_grid(n_steps)`` (t = 0 source to 1 target)."""
    return np.asarray(_solver(method, trajectory)(params, x0, uniform_grid(n_steps, dtype=np.float32)))


@functools.lru_cache(maxsize=None)
def _adaptive_solver(method: str, max_steps: int):
    """Jitted ``(params (R, ...), x0 (N, d), tol) -> (x1 (R, N, d), nfe (R,))``: one adaptive solve per seed,
    vmapped (the batched ``while_loop`` stops updating a seed once its own solve has reached t = 1)."""

    def one(params, x0, tol):
        return odeint_adaptive(_velocity, x0, 0.0, 1.0, method=method, rtol=tol, atol=tol, max_steps=max_steps,
                               args=(params,))

    return jax.jit(jax.vmap(one, in_axes=(0, None, None)))


def solve_adaptive(params, x0, tol: float, *, method: str = "dopri5",
                   max_steps: int = 4096) -> Tuple[np.ndarray, np.ndarray]:
    """Integrate the flow of every seed from ``x0`` (t = 0) to t = 1 with :func:`jflow.integrators.odeint_adaptive`
    at ``rtol = atol = tol``; return the end points ``(R, N, d)`` (NaN for a seed that ran out of
    ``max_steps``) and the number of evaluations of the network per seed, ``(R,)`` int32."""
    x1, nfe = _adaptive_solver(method, max_steps)(params, np.asarray(x0, np.float32), np.float32(tol))
    return np.asarray(x1), np.asarray(nfe)


def euler_steps_to_tolerance(errors: Dict[int, np.ndarray], tol: float) -> List[Optional[int]]:
    """Per seed, the fewest steps ``n`` (keys of ``errors``, each an ``(R,)`` array of end-point
    errors) with ``errors[n] <= tol``; ``None`` for a seed that no ``n`` satisfies."""
    steps = sorted(errors)
    runs = len(errors[steps[0]])
    return [next((n for n in steps if errors[n][r] <= tol), None) for r in range(runs)]


def _rms(a, b) -> np.ndarray:
    """RMS over points of the distance between end points ``a`` and ``b`` (``(..., N, d)`` -> ``(...)``)."""
    return np.sqrt(np.mean(np.sum((a - b) ** 2, axis=-1), axis=-1))


def normalised_path_energy(energy: float, w2_squared: float) -> float:
    r"""Tong et al.'s NPE :math:`|\mathrm{PE} - W_2^2| / W_2^2` (0 for the dynamic OT flow)."""
    return abs(float(energy) - float(w2_squared)) / float(w2_squared)


def evaluate(params, sets: Dict[str, np.ndarray], *, ref_steps: int, euler_steps: Sequence[int],
             w2_steps: Sequence[int], euler_tol: float, adaptive_tol: float = 1e-5,
             adaptive_max_steps: int = 4096) -> Tuple[List[dict], dict]:
    """Evaluate the stacked parameters of ``R`` seeds on a pair's held-out ``sets`` (:func:`data.eval_sets`).

    Returns one metrics dict per seed and a dict of pair-level facts: ``w2_source_target``
    (:math:`W_2(q_0, q_1)` of the held-out samples), ``w2_floor`` (:math:`W_2` between two
    target samples, the sampling floor of every ``w2_*``) and ``trajectory`` (the reference
    trajectories of seed 0, ``(ref_steps + 1, N, d)``, for figures).
    """
    x0, target = sets["x0"], sets["target"]
    ts = np.asarray(uniform_grid(ref_steps, dtype=np.float32))
    traj = solve(params, x0, ref_steps, method="rk4", trajectory=True)
    reference = traj[:, -1]
    runs = reference.shape[0]
    w2_st = wasserstein2(x0, target)
    errors, w2 = {}, {}
    for n in sorted(set(euler_steps)):
        end = solve(params, x0, n)
        errors[n] = _rms(end, reference)
        if n in w2_steps:
            w2[n] = [wasserstein2(end[r], target) for r in range(runs)]
    to_tol = euler_steps_to_tolerance(errors, euler_tol)
    adaptive_end, nfe = solve_adaptive(params, x0, adaptive_tol, max_steps=adaptive_max_steps)
    rows = []
    for r in range(runs):
        ps = path_straightness(traj[r], ts)
        row = {"w2_ode": wasserstein2(reference[r], target)}
        row.update({f"w2_euler_{n}": w2[n][r] for n in sorted(w2)})
        row.update({f"err_euler_{n}": float(errors[n][r]) for n in sorted(errors)})
        finished = bool(np.all(np.isfinite(adaptive_end[r])))
        row.update(dopri5_nfe=int(nfe[r]) if finished else None,
                   w2_dopri5=wasserstein2(adaptive_end[r], target) if finished else None,
                   err_dopri5=float(_rms(adaptive_end[r], reference[r])) if finished else None)
        row.update(euler_steps_to_tol=to_tol[r], path_energy=float(ps.kinetic_energy),
                   npe=normalised_path_energy(ps.kinetic_energy, w2_st**2),
                   straightness=float(ps.deviation), straight_ratio=float(ps.ratio))
        rows.append(row)
    facts = {"w2_source_target": w2_st, "w2_floor": wasserstein2(sets["target_2"], target), "trajectory": traj[0]}
    return rows, facts
