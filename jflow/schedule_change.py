r"""Post-hoc schedule change: a field learned on one Gaussian path, evaluated on another.

Two Gaussian paths :math:`x^A_r = \alpha^A_r z + \beta^A_r\epsilon` and
:math:`x^B_t = \alpha^B_t z + \beta^B_t\epsilon` with the same signal-to-noise ratio at matched
times are the same process up to a time change and a scale (Kingma et al. 2021, "Variational
diffusion models", Sec. 4; Lipman et al. 2024, "Flow matching guide and code", Sec. 4.8).
With the log-SNR :math:`\lambda_t = \log(\alpha_t^2/\beta_t^2)`,

.. math:: r(t) = \lambda_A^{-1}(\lambda_B(t)), \qquad
          s(t) = \frac{\alpha^B_t}{\alpha^A_{r(t)}} = \frac{\beta^B_t}{\beta^A_{r(t)}}
               = \sqrt{\frac{(\alpha^B_t)^2 + (\beta^B_t)^2}{(\alpha^A_r)^2 + (\beta^A_r)^2}},
          \qquad x^B_t = s(t)\, x^A_{r(t)}

(the last form of ``s`` never divides by zero, at either end). So a model of path A gives one
of path B (:func:`change_scheduler`): ``data`` and ``noise`` predictions are unchanged at
:math:`x/s`, the score scales by :math:`1/s`, and the velocity picks up the time change,

.. math:: u^B_t(x) = \frac{\dot s}{s}\, x + s\,\dot r\; u^A_{r(t)}(x/s), \qquad
          \dot r = \frac{\Delta_B(t)}{s^2 \Delta_A(r)}, \quad \Delta = \dot\alpha\beta - \alpha\dot\beta,
          \quad \frac{\dot s}{s} = \frac{\alpha^B\dot\alpha^B + \beta^B\dot\beta^B}{(\alpha^B)^2 + (\beta^B)^2}
          - \dot r\,\frac{\alpha^A\dot\alpha^A + \beta^A\dot\beta^A}{(\alpha^A)^2 + (\beta^A)^2}

(:math:`\dot r` from :math:`\frac{d}{dt}\frac{\alpha^A_r}{\beta^A_r} = \frac{d}{dt}\frac{\alpha^B_t}{\beta^B_t}`;
finite at both ends for schedulers with finite derivatives).

A *path* here is a jflow scheduler (flow time ``t`` in ``[0, 1]``) or any object with the
same interface in its own time variable: ``path(tau) -> (alpha, beta)``, ``derivatives(tau)``,
``domain = (lo, hi)`` and optionally a closed-form ``time_of_log_snr(lam)``; the
conventions of :mod:`jflow.conventions` (diffusion time, VE sigma, DDPM steps) are such
paths. :math:`\lambda^{-1}` is in closed form for every built-in scheduler and convention,
and a 64-step bisection in ``lax.fori_loop`` otherwise (log-SNR must be monotone; autodiff
does not see through the bisection, :func:`time_change` gives :math:`\dot r` in closed form).

**SNR ranges.** Where :math:`\lambda_B(t)` lies outside path A's range (e.g. ``VPScheduler``
has :math:`\alpha_0 = e^{-T(1)/2} > 0`, so its SNR never reaches 0), ``r`` is clamped to A's
nearest end, :math:`\dot r = 0`, and ``s`` keeps the norm form above: the field there is A's
end field rescaled, an approximation. Everything is exact where the ranges overlap.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import as_float, check_choice, check_time, expand_time, is_concrete
from jflow import schedulers as S
from jflow.paths import PARAMETERIZATIONS

Array = jax.Array

__all__ = ["log_snr", "time_of_log_snr", "match_time", "time_change", "TimeChange", "change_scheduler"]

BISECTION_STEPS = 64


def _domain(path):
    return getattr(path, "domain", (0.0, 1.0))


def _check_path_time(path, t, name="t"):
    """Outside jit: flow time in [0, 1] for a scheduler, the path's ``domain`` for a convention."""
    if not hasattr(path, "domain"):
        return check_time(t, name)
    lo, hi = path.domain
    if is_concrete(t) and is_concrete(lo) and is_concrete(hi):
        values = np.asarray(t)
        if values.size and (np.isnan(values).any() or values.min() < lo or values.max() > hi):
            raise ValueError(
                f"{name} must lie in the domain [{float(lo)}, {float(hi)}] of {type(path).__name__}, "
                f"in that convention's own time; got values in [{values.min()}, {values.max()}]"
            )
    return t


def log_snr(path, t) -> Array:
    r"""Log signal-to-noise ratio :math:`\lambda_t = \log(\alpha_t^2/\beta_t^2) = 2(\log\alpha_t - \log\beta_t)`.

    Increasing in flow time, from :math:`-\infty` (``alpha_0 = 0``) to :math:`+\infty` (``beta_1 = 0``).
    """
    alpha, beta = path(as_float(t))
    return 2.0 * (jnp.log(alpha) - jnp.log(beta))


def _vp_time(sched, lam):
    # alpha^2 / beta^2 = 1 / (e^T - 1)  =>  T = softplus(-lam); T(s) = b0 s + (b1 - b0) s^2 / 2, t = 1 - s.
    b0, b1 = sched.beta_min, sched.beta_max
    big_t = jnp.minimum(jax.nn.softplus(-lam), b0 + 0.5 * (b1 - b0))  # clamp to s <= 1 (VP's SNR range)
    root = b0 + jnp.sqrt(b0 * b0 + 2.0 * (b1 - b0) * big_t)
    return 1.0 - jnp.where(big_t > 0, 2.0 * big_t / jnp.where(big_t > 0, root, 1.0), 0.0)


_INVERSES = {  # closed forms of lambda^{-1} for the built-in schedulers (rho = alpha / beta = e^{lam/2})
    S.LinearScheduler: lambda s, lam: jax.nn.sigmoid(0.5 * lam),  # t / (1 - t) = rho
    S.CosineScheduler: lambda s, lam: jnp.arctan(jnp.exp(0.5 * lam)) * (2.0 / jnp.pi),  # tan(pi t / 2) = rho
    S.PolynomialScheduler: lambda s, lam: jax.nn.sigmoid(0.5 * lam) ** (1.0 / s.n),  # t^n / (1 - t^n) = rho
    S.SqrtScheduler: lambda s, lam: 2.0 / (1.0 + jnp.sqrt(1.0 + 4.0 * jnp.exp(-lam))),  # t^2 = rho^2 (1 - t)
    S.LinearVPScheduler: lambda s, lam: jnp.sqrt(jax.nn.sigmoid(lam)),  # t^2 / (1 - t^2) = rho^2
    S.VPScheduler: _vp_time,
}


def _bisect(path, lam):
    """Time in ``path.domain`` with log-SNR ``lam`` (monotone log-SNR), by bisection; clamps to the domain."""
    lo, hi = (jnp.asarray(v, lam.dtype) for v in _domain(path))
    increasing = log_snr(path, hi) > log_snr(path, lo)

    def body(_, bounds):
        a, b = bounds
        mid = 0.5 * (a + b)
        go_up = (log_snr(path, mid) < lam) == increasing  # the root lies above mid
        return jnp.where(go_up, mid, a), jnp.where(go_up, b, mid)

    a, b = jax.lax.fori_loop(0, BISECTION_STEPS, body, (jnp.full_like(lam, lo), jnp.full_like(lam, hi)))
    return jnp.where(jnp.isnan(lam), jnp.nan, 0.5 * (a + b))


def time_of_log_snr(path, lam) -> Array:
    r"""Inverse log-SNR :math:`\lambda^{-1}`: the time of ``path`` at which :math:`\lambda_t =` ``lam``.

    Closed forms (with :math:`\rho = e^{\lambda/2} = \alpha/\beta`): linear
    :math:`t = \mathrm{sigmoid}(\lambda/2)`; cosine :math:`t = \frac2\pi\arctan\rho`; polynomial
    :math:`t = \mathrm{sigmoid}(\lambda/2)^{1/n}`; sqrt :math:`t = 2/(1 + \sqrt{1 + 4e^{-\lambda}})`;
    linear-VP :math:`t = \sqrt{\mathrm{sigmoid}(\lambda)}`; VP :math:`t = 1 - s` with
    :math:`T(s) = \mathrm{softplus}(-\lambda)` solved for ``s``; a path's own ``time_of_log_snr``
    method; otherwise bisection over ``path.domain``. Values outside the path's SNR range
    are clamped to its domain.
    """
    lam = as_float(lam)
    method = getattr(path, "time_of_log_snr", None)
    if method is not None:
        return method(lam)
    inverse = _INVERSES.get(type(path))
    return inverse(path, lam).astype(lam.dtype) if inverse is not None else _bisect(path, lam)


def match_time(t, path_from, path_to) -> Array:
    r"""The time of ``path_to`` with the log-SNR that ``path_from`` has at ``t``,
    :math:`\lambda_{to}^{-1}(\lambda_{from}(t))`.

    E.g. ``match_time(t, LinearScheduler(), CosineScheduler())`` is
    :math:`\frac2\pi\arctan\frac{t}{1-t}`, and ``match_time(n, DDPM.linear(), sched)`` the flow
    time of DDPM step ``n``. ``t`` in ``path_from``'s time (flow time for schedulers).
    """
    t = _check_path_time(path_from, as_float(t))
    return time_of_log_snr(path_to, log_snr(path_from, t))


class TimeChange(NamedTuple):
    """``r(t)``, ``s(t)``, ``dr/dt`` and ``d log s / dt`` of :func:`time_change` (shape of ``t``)."""

    r: Array
    scale: Array
    d_r: Array
    d_log_scale: Array


def time_change(t, sched_from, sched_to) -> TimeChange:
    r"""Time change :math:`r(t) = \lambda_A^{-1}(\lambda_B(t))` and scale :math:`s(t)` with
    :math:`x^B_t = s(t)\, x^A_{r(t)}`, and their derivatives (module docstring), A = ``sched_from``,
    B = ``sched_to``; ``t`` in B's time. Where B's SNR is outside A's range, ``r`` is clamped
    and :math:`\dot r = 0`.
    """
    t = _check_path_time(sched_to, as_float(t))
    lam = log_snr(sched_to, t)
    r = time_of_log_snr(sched_from, lam)
    a_b, b_b, da_b, db_b = S.derivatives(sched_to, t)
    a_a, b_a, da_a, db_a = S.derivatives(sched_from, r)
    norm_b, norm_a = a_b * a_b + b_b * b_b, a_a * a_a + b_a * b_a
    scale2 = norm_b / norm_a
    lam_ends = jnp.stack([log_snr(sched_from, jnp.asarray(v, t.dtype)) for v in _domain(sched_from)])
    inside = (lam >= jnp.min(lam_ends)) & (lam <= jnp.max(lam_ends))
    d_r = jnp.where(inside, (da_b * b_b - a_b * db_b) / (scale2 * (da_a * b_a - a_a * db_a)), 0.0)
    d_log_scale = (a_b * da_b + b_b * db_b) / norm_b - d_r * (a_a * da_a + b_a * db_a) / norm_a
    return TimeChange(r, jnp.sqrt(scale2), d_r, d_log_scale)


def change_scheduler(fn: Callable, sched_from, sched_to, parameterization: str) -> Callable:
    r"""Wrap a field ``fn(x, r, *args)`` of path ``sched_from`` (A) into ``fn_to(x, t, *args)`` of ``sched_to`` (B).

    With :math:`(r, s, \dot r, \dot s/s)` of :func:`time_change` at ``t``:

    - ``data``: :math:`\hat z^B_t(x) = \hat z^A_r(x/s)`; ``noise``: :math:`\hat\epsilon^B_t(x) = \hat\epsilon^A_r(x/s)`;
    - ``score``: :math:`\nabla\log p^B_t(x) = \frac1s \nabla\log p^A_r(x/s)` (:math:`p^B_t(x) = s^{-d} p^A_r(x/s)`);
    - ``velocity``: :math:`u^B_t(x) = \frac{\dot s}{s} x + s\dot r\, u^A_r(x/s)`.

    So a model trained on scheduler A can be sampled along scheduler B by any jflow sampler
    (e.g. a linear-path velocity model on the cosine path, or a DDPM noise model along a
    flow-time path: :mod:`jflow.conventions`). ``t``: scalar or ``(B,)`` in B's time (flow time
    for a scheduler); ``fn`` receives ``r`` of the same shape, in A's time. Both are jflow
    schedulers or paths of :mod:`jflow.conventions`; ``parameterization`` is the output of ``fn``
    (and of the result).
    """
    check_choice(parameterization, PARAMETERIZATIONS, "parameterization")
    if not callable(fn):
        raise ValueError(f"fn must be a field fn(x, t, *args); got {fn!r}")

    def fn_to(x, t, *args):
        x = as_float(x)
        change = time_change(jnp.asarray(t, x.dtype), sched_from, sched_to)
        scale, d_log_scale, d_r = (expand_time(v, x) for v in (change.scale, change.d_log_scale, change.d_r))
        value = jnp.asarray(fn(x / scale, change.r, *args))
        if parameterization == "score":
            return value / scale
        if parameterization == "velocity":
            return d_log_scale * x + scale * d_r * value
        return value

    return fn_to
