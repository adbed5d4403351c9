r"""Samplers built on :mod:`jflow.integrators`: flow ODE, SDE extension trick, Langevin, OU, and, re-exported here,
classifier-free guidance (:mod:`jflow.guidance`), the diffusion samplers of :mod:`jflow.exponential` (DDIM, ancestral
DDPM, DPM-Solver++) and :mod:`jflow.predictor_corrector`.

Flow time: ``t = 0`` is noise (``p_init``), ``t = 1`` is data (``p_data``). Vector fields,
scores and drifts are called ``f(x, t, *args)`` with a scalar ``t`` (the integrators'
convention); ``args`` carries values such as network parameters, labels or the guidance
scale, so changing them does not recompile a jitted sampler. :func:`as_field` makes a
model's ``apply(params, x, t, y)`` such a field; :func:`as_velocity` / :func:`as_score`
convert a network of any parameterisation (all three live in :mod:`jflow.fields`).

Singular times. Fields obtained by conversion are undefined at one end of ``[0, 1]``:
every score, and a velocity built from a data prediction, is singular at ``t = 1``
(:math:`\beta_1 = 0`); a velocity built from a score or noise prediction is singular at
``t = 0`` (:math:`\alpha_0 = 0`). Every method evaluates the field at ``ts[0]``; Euler,
Euler-Maruyama and midpoint (which uses ``t + h/2``) never evaluate it at ``ts[-1]``, Heun
and RK4 do (:func:`jflow.fields.evaluation_times`). Outside ``jit``, :func:`sample_ode` and
:func:`sample_sde` raise ``ValueError`` (with the grid to use) when a concrete grid would
evaluate a converted field where it is singular; under ``jit`` with a traced grid (or a
grid built inside the jitted function) they cannot check, and the samples are NaN. Start at
``t0 = eps`` for fields singular at 0, and end at ``1 - eps`` with Heun/RK4 for fields
singular at 1: e.g. ``uniform_grid(n, t0=1e-3)``, ``power_grid(n, 2.0, 1e-3, 1 - 1e-3)`` or
``edm_grid(n)``.
"""
from __future__ import annotations

from typing import Callable, Union

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import as_float, check_positive_int, is_concrete
from jflow.exponential import ddim, ddpm_ancestral, dpm_solver_pp
from jflow.fields import as_field, as_score, as_velocity, check_grid
from jflow.guidance import classifier_free_guidance
from jflow.integrators import odeint, sdeint
from jflow.predictor_corrector import predictor_corrector

Array = jax.Array

__all__ = [
    "sample_ode",
    "sample_sde",
    "as_field",
    "sde_extension_drift",
    "as_velocity",
    "as_score",
    "langevin",
    "ou_process",
    "ou_marginal",
    "classifier_free_guidance",
    "ddim",
    "ddpm_ancestral",
    "dpm_solver_pp",
    "predictor_corrector",
]


def _check_unit_grid(ts):
    """Samplers of a probability path live on flow time [0, 1]; raise for concrete grids outside it."""
    if is_concrete(ts):
        values = np.asarray(ts)  # host-side: a concrete grid captured inside jit is not traced
        if values.size and (np.isnan(values).any() or values.min() < 0.0 or values.max() > 1.0):
            raise ValueError(
                "ts must lie in [0, 1] (flow time: t=0 is noise, t=1 is data); got values in "
                f"[{float(values.min())}, {float(values.max())}]"
            )
    return ts


def sample_ode(u: Callable, x0, ts, *, method: str = "euler", trajectory: bool = False, args: tuple = ()):
    r"""Flow sampling (Algorithm 1): integrate :math:`\frac{d}{dt}X_t = u_t(X_t)` from ``X_0 = x0``.

    Algorithm 1 draws :math:`X_0 \sim p_{\rm init}` and repeats :math:`X_{t+h} = X_t + h u_t(X_t)`
    (``method="euler"``, ``ts = uniform_grid(n)``). ``x0`` is any sample of ``p_init``:
    ``jax.random.normal(key, (n, d))`` for the default N(0, I), or samples of another
    distribution for a flow trained by bridging (:func:`jflow.paths.bridge`). Any
    ``method`` and grid of :func:`jflow.integrators.odeint` work; ``ts`` must lie in [0, 1].
    Returns ``X_{ts[-1]}`` (or the trajectory).

    A field converted from a score, noise or data model (:func:`as_velocity`) is singular
    at one end of ``[0, 1]``: outside ``jit`` a concrete grid on which ``method`` would
    evaluate it there raises ``ValueError`` naming the grid to use (e.g.
    ``uniform_grid(n, t0=1e-3)`` for a noise model); under ``jit`` with a traced grid the
    samples come out NaN (module docstring).
    """
    _check_fields(ts, method, x0, "sample_ode", u=u)
    return odeint(u, x0, ts, method=method, trajectory=trajectory, args=args)


_ALTERNATIVES = ", or a sampler that handles that end (jflow.sampling.ddim / dpm_solver_pp)"


def _check_fields(ts, method, x0, caller, **fields):
    """``check_grid`` for each named field, in the state's float dtype (after the unit-interval check)."""
    _check_unit_grid(ts)
    leaves = jax.tree_util.tree_leaves(x0)
    dtype = jnp.result_type(*leaves) if leaves else jnp.result_type(float)
    for name, field in fields.items():
        check_grid(field, ts, method, dtype, caller=caller, name=name, alternatives=_ALTERNATIVES)


def _sigma_fn(sigma):
    if callable(sigma):
        return sigma
    value = as_float(sigma)
    return lambda t, *args: value


def sde_extension_drift(u: Callable, score: Callable, sigma: Union[float, Array, Callable]) -> Callable:
    r"""The drift of the SDE extension trick: :math:`u_t(x) + \frac{\sigma_t^2}{2}\nabla\log p_t(x)`.

    For any diffusion coefficient :math:`\sigma_t \ge 0` the SDE
    :math:`dX_t = [u_t(X_t) + \frac{\sigma_t^2}{2}\nabla\log p_t(X_t)]dt + \sigma_t dW_t`
    has the same marginals :math:`p_t` as the ODE of :math:`u_t` (lecture 2, "SDE
    extension trick", via the Fokker-Planck equation). ``sigma`` is a float, array or
    callable ``sigma(t, *args)``; returns ``drift(x, t, *args)``.
    """
    sig = _sigma_fn(sigma)

    def drift(x, t, *args):
        s = sig(t, *args)
        return u(x, t, *args) + (0.5 * s * s) * score(x, t, *args)

    return drift


def sample_sde(
    u: Callable,
    score: Callable,
    sigma: Union[float, Array, Callable],
    x0: Array,
    ts,
    *,
    key: Array,
    trajectory: bool = False,
    args: tuple = (),
) -> Array:
    r"""Stochastic sampling with the SDE extension trick, by Euler-Maruyama:

    .. math:: X_{t+h} = X_t + h\Big[u_t(X_t) + \frac{\sigma_t^2}{2}\nabla\log p_t(X_t)\Big]
              + \sigma_t\sqrt{h}\,\epsilon_t.

    ``sigma`` is a constant, an array, or a callable ``sigma(t, *args)``; ``sigma = 0``
    gives the Euler flow sampler (the "probability flow ODE"). The drift is evaluated at
    the left point of each step, so a grid ending at ``t = 1`` never evaluates the score
    where it is singular; a grid starting at ``t = 0`` needs ``u`` finite at 0 (start at
    ``eps`` if ``u`` was converted from a score or noise model: outside ``jit`` a concrete
    grid that starts there raises ``ValueError``; under ``jit`` the samples are NaN).
    ``x0`` is a sample of ``p_init`` (N(0, I) for Gaussian paths).
    """
    _check_fields(ts, "euler_maruyama", x0, "sample_sde", u=u, score=score)
    drift = sde_extension_drift(u, score, sigma)
    sig = _sigma_fn(sigma)
    return sdeint(drift, sig, x0, ts, key=key, trajectory=trajectory, args=args)


def langevin(
    score: Callable,
    x0: Array,
    *,
    key: Array,
    n_steps: int,
    step_size,
    sigma=1.0,
    trajectory: bool = False,
    args: tuple = (),
) -> Array:
    r"""Langevin dynamics for a static density ``p`` (lecture notes, "Langevin dynamics"):

    .. math:: dX_s = \frac{\sigma^2}{2}\nabla\log p(X_s)\,ds + \sigma\,dW_s,

    simulated by Euler-Maruyama with ``n_steps`` steps of size ``step_size`` (``s`` is
    simulation time, not flow time). ``p`` is stationary (Fokker-Planck: the drift's
    advection cancels the diffusion) and, for a well-behaved ``p``, the law of ``X_s``
    converges to ``p`` from any start (up to an O(step_size) discretisation bias).
    ``score(x, *args)`` takes no time; ``step_size`` and ``sigma`` may be traced arrays.
    For a time-dependent score (a model, :func:`as_score`) at a fixed flow time ``t``,
    pass ``lambda x, *a: score(x, t, *a)``.
    """
    n_steps = check_positive_int(n_steps, "n_steps", why="it fixes the number of scan steps")
    x0 = jnp.asarray(x0)
    work = jnp.promote_types(x0.dtype, jnp.float32)  # sdeint's precision: a bf16 grid would repeat times
    h = as_float(step_size).astype(work)
    if is_concrete(h) and not bool(h > 0):
        raise ValueError(f"step_size must be > 0; got {float(h)}")
    sig = as_float(sigma).astype(work)
    ts = jnp.arange(n_steps + 1, dtype=work) * h

    def drift(x, s, *a):
        return (0.5 * sig * sig) * score(x, *a)

    # the grid is h * (0..n); sdeint validates it only when concrete, so a traced h is fine
    return sdeint(drift, sig, x0, ts, key=key, trajectory=trajectory, args=args)


def _check_nonnegative(value, name: str):
    if is_concrete(value) and not bool(jnp.all(value >= 0)):
        raise ValueError(f"{name} must be >= 0 (finite); got {np.asarray(value)}")
    return value


def ou_process(x0: Array, ts, *, key: Array, theta, sigma, trajectory: bool = False) -> Array:
    r"""The Ornstein-Uhlenbeck process :math:`dX_t = -\theta X_t\,dt + \sigma\,dW_t` (lecture notes 004).

    Simulated with Euler-Maruyama on ``ts`` (any increasing grid, not restricted to
    ``[0, 1]``). For :math:`\theta > 0`, as ``t -> inf`` the law tends to
    :math:`\mathcal N(0, \frac{\sigma^2}{2\theta} I)`; :math:`\theta = 0` is Brownian motion.
    :func:`ou_marginal` gives the exact law at any time. ``theta >= 0`` and ``sigma`` may be
    traced arrays (no recompilation when they change).
    """
    x0 = jnp.asarray(x0)
    work = jnp.promote_types(x0.dtype, jnp.float32)  # sdeint's precision
    th = _check_nonnegative(as_float(theta).astype(work), "theta")
    return sdeint(
        lambda x, t, th_: -th_ * x,
        lambda t, th_: as_float(sigma).astype(work),
        x0,
        ts,
        key=key,
        trajectory=trajectory,
        args=(th,),
    )


def ou_marginal(x0, t, *, theta, sigma):
    r"""Exact law of the OU process at time ``t >= 0`` given :math:`X_0 = x_0`: returns ``(mean, std)``,

    .. math:: X_t \sim \mathcal N\Big(x_0 e^{-\theta t},\; \sigma^2\,\frac{-\operatorname{expm1}(-2\theta t)}{2\theta} I\Big),
              \qquad -\operatorname{expm1}(-2\theta t) = 1 - e^{-2\theta t}.

    ``expm1`` keeps the variance accurate for small :math:`\theta t` (no cancellation in
    :math:`1 - e^{-2\theta t}`), and at ``theta = 0`` the limit is returned exactly:
    Brownian motion, :math:`\mathcal N(x_0, \sigma^2 t I)`. ``t = inf`` gives the stationary
    law :math:`\mathcal N(0, \frac{\sigma^2}{2\theta} I)` for ``theta > 0``. ``theta >= 0`` and
    ``t >= 0`` (checked outside ``jit``); ``std`` is :math:`|\sigma|` times the square root.
    """
    x0 = as_float(x0)
    t, theta, sigma = (as_float(v).astype(x0.dtype) for v in (t, theta, sigma))
    _check_nonnegative(t, "t")
    _check_nonnegative(theta, "theta")
    positive = theta > 0
    safe = jnp.where(positive, theta, 1.0)  # keeps the unused branch (and its gradient) finite
    var_over_sigma2 = jnp.where(positive, -jnp.expm1(-2.0 * safe * t) / (2.0 * safe), t)
    mean = x0 * jnp.exp(-theta * t)
    return mean, jnp.broadcast_to(jnp.abs(sigma) * jnp.sqrt(var_over_sigma2), jnp.shape(mean))
