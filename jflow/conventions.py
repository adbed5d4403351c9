r"""Time conventions of other libraries as Gaussian paths, to load their models into flow time.

jflow uses flow time (``t = 0`` noise, ``t = 1`` data, :math:`x_t = \alpha_t z + \beta_t\epsilon`).
Score / noise models trained elsewhere use another time variable :math:`\tau` and often another
scale. Each class below describes such a convention as a Gaussian path in its own time,
:math:`x_\tau = a_\tau z + b_\tau \epsilon` (called like a scheduler: ``path(tau) -> (a, b)``,
with ``derivatives``, ``domain`` and a closed-form ``time_of_log_snr``), so that
:func:`jflow.schedule_change.change_scheduler` moves a model between it and any jflow
scheduler by matching the log-SNR :math:`\lambda = \log(a^2/b^2)` and rescaling
(:math:`x^{\rm flow}_t = s(t)\, x_{\tau(t)}`), and :func:`jflow.schedule_change.match_time`
converts times both ways:

- :class:`DiffusionTime` (score SDEs): a flow scheduler in diffusion time :math:`\tau = T(1 - t)`,
  data at 0, noise at ``T``: :math:`(a, b)_\tau = (\alpha, \beta)_{1 - \tau/T}`; inverse
  :math:`\tau = T(1 - \lambda_{\rm sched}^{-1}(\lambda))`.
- :class:`VESigma` (EDM, NCSN): :math:`x = z + \sigma\epsilon` with time :math:`\tau = \sigma`;
  inverse :math:`\sigma = e^{-\lambda/2}`.
- :class:`VESDE` (score_sde VE): :math:`x = z + \sigma(\tau)\epsilon`,
  :math:`\sigma(\tau) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^\tau`; inverse
  :math:`\tau = \log(e^{-\lambda/2}/\sigma_{\min}) / \log(\sigma_{\max}/\sigma_{\min})`.
- :class:`DDPM` (Ho et al. 2020): :math:`x_n = \sqrt{\bar\alpha_n} z + \sqrt{1 - \bar\alpha_n}\epsilon`,
  :math:`\bar\alpha_n = \prod_{i \le n}(1 - \beta_i)`, step ``n`` in ``0..N-1``; inverse by
  interpolating the step's log-SNR :math:`\lambda_n = \log(\bar\alpha_n/(1 - \bar\alpha_n))`.

Example: a score_sde VP score model ``score(x, tau)`` sampled with jflow's flow samplers,
``change_scheduler(score, DiffusionTime(VPScheduler()), VPScheduler(), "score")`` (a pure time
reversal, ``s = 1``), or along the cosine path with ``CosineScheduler()``; a VE model
``denoise(x, sigma)`` becomes ``change_scheduler(denoise, VESigma(), LinearScheduler(), "data")``,
i.e. :math:`\hat z(x, t) = D(x/t, (1-t)/t)` (:math:`s = \alpha_t`, :math:`\sigma = \beta_t/\alpha_t`).
Outside the convention's SNR range its time is clamped to the nearest end (VE at
:math:`\sigma_{\max}`: then :math:`s = \sqrt{(\alpha_t^2 + \beta_t^2)/(1 + \sigma_{\max}^2)}`, which maps
:math:`\mathcal N(0, I)` at ``t = 0`` onto VE's prior :math:`\approx \mathcal N(0, \sigma_{\max}^2 I)`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import as_float, check_positive_int, frozen_pytree, is_concrete
from jflow.schedule_change import time_of_log_snr
from jflow.schedulers import derivatives

Array = jax.Array

__all__ = ["DiffusionTime", "VESigma", "VESDE", "DDPM"]


def _check_sigmas(sigma_min, sigma_max):
    if is_concrete(sigma_min) and is_concrete(sigma_max):
        if not 0 < float(np.min(sigma_min)) < float(np.min(sigma_max)):
            raise ValueError(f"need 0 < sigma_min < sigma_max; got sigma_min={sigma_min}, sigma_max={sigma_max}")


@frozen_pytree
class DiffusionTime:
    r"""A flow-time scheduler in diffusion time :math:`\tau = T(1 - t)`: data at :math:`\tau = 0`, noise at ``T``.

    :math:`a_\tau = \alpha_{1 - \tau/T}`, :math:`b_\tau = \beta_{1 - \tau/T}`,
    :math:`\frac{d}{d\tau} = -\frac1T \frac{d}{dt}`. ``DiffusionTime(VPScheduler(b0, b1))`` is the VP SDE
    of score_sde (:math:`a_\tau = e^{-\frac12\int_0^\tau\beta}`, :math:`\beta(\tau) = b_0 + \tau(b_1 - b_0)`).
    A velocity in this time is :math:`dx/d\tau = -T\, u_t`.
    """

    sched: Any
    T: float = 1.0

    @property
    def domain(self):
        return (0.0, self.T)

    def to_flow_time(self, tau) -> Array:
        """:math:`t = 1 - \\tau/T`."""
        return 1.0 - as_float(tau) / self.T

    def from_flow_time(self, t) -> Array:
        """:math:`\\tau = T(1 - t)`."""
        return self.T * (1.0 - as_float(t))

    def __call__(self, tau):
        return self.sched(self.to_flow_time(tau))

    def derivatives(self, tau):
        alpha, beta, d_alpha, d_beta = derivatives(self.sched, self.to_flow_time(tau))
        return alpha, beta, -d_alpha / self.T, -d_beta / self.T

    def time_of_log_snr(self, lam):
        return self.from_flow_time(time_of_log_snr(self.sched, lam))


@frozen_pytree
class VESigma:
    r"""Variance exploding path with time :math:`\tau = \sigma`: :math:`x_\sigma = z + \sigma\epsilon` (EDM, NCSN).

    :math:`(a, b) = (1, \sigma)`, :math:`\lambda = -2\log\sigma`, domain
    :math:`[\sigma_{\min}, \sigma_{\max}]` (EDM's defaults 0.002 and 80). Relative to a flow
    scheduler, :math:`\sigma(t) = \beta_t/\alpha_t` and :math:`s = \alpha_t`. A velocity in
    this time is :math:`dx/d\sigma = \hat\epsilon` (EDM's probability-flow ODE).
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0

    def __post_init__(self):
        _check_sigmas(self.sigma_min, self.sigma_max)

    @property
    def domain(self):
        return (self.sigma_min, self.sigma_max)

    def __call__(self, sigma):
        sigma = as_float(sigma)
        return jnp.ones_like(sigma), sigma

    def derivatives(self, sigma):
        sigma = as_float(sigma)
        return jnp.ones_like(sigma), sigma, jnp.zeros_like(sigma), jnp.ones_like(sigma)

    def time_of_log_snr(self, lam):
        return jnp.clip(jnp.exp(-0.5 * as_float(lam)), self.sigma_min, self.sigma_max)


@frozen_pytree
class VESDE:
    r"""VE SDE of score_sde in its time :math:`\tau \in [0, 1]`: :math:`x_\tau = z + \sigma(\tau)\epsilon`,
    :math:`\sigma(\tau) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^\tau` (their defaults 0.01 and 50).

    :math:`\dot\sigma = \sigma\log(\sigma_{\max}/\sigma_{\min})`;
    :math:`\tau = \log(\sigma/\sigma_{\min})/\log(\sigma_{\max}/\sigma_{\min})`
    with :math:`\sigma = e^{-\lambda/2}`.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def __post_init__(self):
        _check_sigmas(self.sigma_min, self.sigma_max)

    domain = (0.0, 1.0)

    def _rate(self):
        return jnp.log(jnp.asarray(self.sigma_max) / self.sigma_min)

    def __call__(self, tau):
        tau = as_float(tau)
        return jnp.ones_like(tau), (self.sigma_min * jnp.exp(tau * self._rate())).astype(tau.dtype)

    def derivatives(self, tau):
        one, sigma = self(tau)
        return one, sigma, jnp.zeros_like(sigma), (sigma * self._rate()).astype(sigma.dtype)

    def time_of_log_snr(self, lam):
        lam = as_float(lam)
        tau = (-0.5 * lam - jnp.log(jnp.asarray(self.sigma_min, lam.dtype))) / self._rate().astype(lam.dtype)
        return jnp.clip(tau, 0.0, 1.0)


@frozen_pytree
@dataclasses.dataclass(frozen=True, eq=False)
class DDPM:
    r"""Discrete DDPM steps as a path in the (continuous) step index ``n`` in ``[0, N-1]``.

    From betas :math:`\beta_0..\beta_{N-1}`: :math:`\bar\alpha_n = \prod_{i=0}^n (1 - \beta_i)` (``alphas_cumprod``),
    :math:`x_n = \sqrt{\bar\alpha_n}\, z + \sqrt{1 - \bar\alpha_n}\,\epsilon` (Ho et al. 2020, eq. 4; step 0 is
    the first noising step, as in diffusers). Between integer steps the log-SNR
    :math:`\lambda_n = \log(\bar\alpha_n / (1 - \bar\alpha_n))` is interpolated linearly, with
    :math:`a = \sqrt{\mathrm{sigmoid}(\lambda)}`, :math:`b = \sqrt{\mathrm{sigmoid}(-\lambda)}`
    (variance preserving), so a fractional step is the continuous index of a flow time
    (``match_time``) and an integer step reproduces :math:`\bar\alpha_n` exactly. A model that
    only accepts integer steps should round ``n`` (exact on the grid ``match_time(arange(N), ddpm, sched)``).
    """

    alphas_cumprod: Array

    def __post_init__(self):
        ac = as_float(self.alphas_cumprod)
        if ac.ndim != 1 or ac.shape[0] < 2:
            raise ValueError(f"alphas_cumprod must have shape (N,) with N >= 2 steps; got {ac.shape}")
        values = np.asarray(ac) if is_concrete(ac) else None
        if values is not None and not (np.all(np.diff(values) < 0) and 0 < values[-1] and values[0] < 1):
            raise ValueError("alphas_cumprod must decrease strictly within (0, 1) (betas in (0, 1))")
        object.__setattr__(self, "alphas_cumprod", ac)

    @classmethod
    def from_betas(cls, betas) -> "DDPM":
        """:math:`\\bar\\alpha_n = \\prod_{i \\le n}(1 - \\beta_i)` (``jnp.cumprod``)."""
        return cls(jnp.cumprod(1.0 - as_float(betas)))

    @classmethod
    def linear(cls, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "DDPM":
        """Ho et al.'s linear betas, ``linspace(beta_start, beta_end, num_steps)``."""
        check_positive_int(num_steps, "num_steps", minimum=2)
        return cls.from_betas(jnp.linspace(beta_start, beta_end, num_steps))

    @property
    def num_steps(self) -> int:
        return self.alphas_cumprod.shape[0]

    @property
    def domain(self):
        return (0.0, float(self.num_steps - 1))

    def _log_snrs(self, dtype):
        ac = self.alphas_cumprod.astype(dtype)
        return jnp.log(ac) - jnp.log1p(-ac)

    def _lam(self, n):
        n = as_float(n)
        lams = self._log_snrs(n.dtype)
        k = jnp.clip(jnp.floor(n).astype(jnp.int32), 0, self.num_steps - 2)
        slope = lams[k + 1] - lams[k]
        return lams[k] + (n - k) * slope, slope

    def __call__(self, n):
        lam, _ = self._lam(n)
        return jnp.sqrt(jax.nn.sigmoid(lam)), jnp.sqrt(jax.nn.sigmoid(-lam))

    def derivatives(self, n):
        lam, slope = self._lam(n)
        a, b = jnp.sqrt(jax.nn.sigmoid(lam)), jnp.sqrt(jax.nn.sigmoid(-lam))
        return a, b, 0.5 * a * b * b * slope, -0.5 * b * a * a * slope  # a^2 = sigmoid(lam)

    def time_of_log_snr(self, lam):
        lam = as_float(lam)
        lams = self._log_snrs(lam.dtype)  # decreasing in n: interpolate on -lam
        return jnp.interp(-lam, -lams, jnp.arange(self.num_steps, dtype=lam.dtype))
