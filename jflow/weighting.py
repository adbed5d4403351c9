r"""Loss weightings :math:`\lambda(t)` that make losses of different parameterisations comparable.

On a Gaussian path :math:`x_t = \alpha_t z + \beta_t\epsilon` every parameterisation (velocity,
score, noise, data; :mod:`jflow.paths`) is affine in the noise prediction at a fixed
:math:`x_t`, so its squared error is a time-dependent multiple :math:`c_P(t)^2` of the
noise-prediction error (:func:`noise_error_factor`). A named weighting
(:data:`LOSS_WEIGHTINGS`, :func:`loss_weight`) multiplies a model's per-example error so that
the weighted loss *equals* another parameterisation's unweighted loss (e.g. a score model
with ``"noise"`` is trained with DDPM's objective), or min-SNR-:math:`\gamma`.

:func:`jflow.losses.make_loss` takes these names as ``weighting=``.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import as_float, check_choice
from jflow.paths import PARAMETERIZATIONS
from jflow.schedulers import derivatives

Array = jax.Array

LOSS_WEIGHTINGS = ("none", "velocity", "score", "noise", "data", "min_snr")

__all__ = ["LOSS_WEIGHTINGS", "noise_error_factor", "loss_weight", "resolve_weighting", "weigh_errors"]


def noise_error_factor(sched, t, parameterization: str) -> Array:
    r"""The factor :math:`c_P(t)^2` with :math:`\|P^\theta - P\|^2 = c_P(t)^2\,\|\epsilon^\theta - \epsilon\|^2`.

    On a Gaussian path every parameterisation is affine in the noise prediction at a fixed
    :math:`x_t` (:func:`jflow.paths.convert`), so the squared error of any of them is a
    time-dependent multiple of the noise-prediction error:

    ============ ========================================================================
    ``noise``     :math:`1`
    ``score``     :math:`1/\beta_t^2` (:math:`s = -\epsilon/\beta_t`)
    ``data``      :math:`\beta_t^2/\alpha_t^2 = 1/\mathrm{SNR}(t)` (:math:`z = (x - \beta_t\epsilon)/\alpha_t`)
    ``velocity``  :math:`(\dot\beta_t - \dot\alpha_t\beta_t/\alpha_t)^2 = \beta_t^2\dot\lambda_t^2`,
                  :math:`\lambda_t = \log(\alpha_t/\beta_t)` (CondOT: :math:`1/t^2`)
    ============ ========================================================================
    """
    check_choice(parameterization, PARAMETERIZATIONS, "parameterization")
    alpha, beta, d_alpha, d_beta = derivatives(sched, as_float(t))
    if parameterization == "noise":
        return jnp.ones_like(alpha)
    if parameterization == "score":
        return 1.0 / jnp.square(beta)
    if parameterization == "data":
        return jnp.square(beta / alpha)
    return jnp.square(d_beta - d_alpha * beta / alpha)


def loss_weight(name: str, sched, t, parameterization: str, *, snr_gamma=5.0) -> Array:
    r"""Weight :math:`w(t)` on the per-example error of ``parameterization`` for a named weighting.

    The names say what the weighted loss equals, whatever the network predicts (so that
    methods can be compared at the same weighting):

    - ``"none"``: :math:`w = 1`, the parameterisation's own loss (Algorithm 5 as written
      for ``score``, Algorithm 3/4 for ``velocity``).
    - ``"noise"``, ``"score"``, ``"data"``, ``"velocity"``: the unweighted loss of that
      parameterisation, :math:`w = c_{name}^2 / c_P^2` (:func:`noise_error_factor`). E.g. a
      score model with ``"noise"`` has :math:`w = \beta_t^2`:
      :math:`\beta_t^2\|s^\theta + \epsilon/\beta_t\|^2 = \|\epsilon^\theta - \epsilon\|^2` with
      :math:`\epsilon^\theta = -\beta_t s^\theta`, i.e. denoising score matching weighted by
      :math:`\beta_t^2` *is* DDPM noise prediction; ``"data"`` is the noise loss weighted by
      :math:`1/\mathrm{SNR}`.
    - ``"min_snr"`` (Hang et al. 2023, min-SNR-:math:`\gamma`): the data-prediction loss weighted
      by :math:`\min(\mathrm{SNR}_t, \gamma)`, i.e. the noise loss weighted by
      :math:`\min(1, \gamma/\mathrm{SNR}_t)`, with :math:`\mathrm{SNR}_t = \alpha_t^2/\beta_t^2`
      and ``gamma = snr_gamma`` (5 in the paper).

    Infinite where a factor is (e.g. ``"score"`` at :math:`\beta_t = 0`); keep ``t`` inside
    ``(t_min, t_max)`` accordingly.
    """
    check_choice(name, LOSS_WEIGHTINGS, "loss weighting")
    t = as_float(t)
    if name == "none":
        return jnp.ones_like(t)
    own = noise_error_factor(sched, t, parameterization)
    if name == "min_snr":
        alpha, beta = sched(t)
        target = jnp.minimum(1.0, snr_gamma * jnp.square(beta) / jnp.square(alpha))
    else:
        target = noise_error_factor(sched, t, name)
    return target / own


def resolve_weighting(
    weighting: Union[None, str, Callable[[Array], Array]], sched, parameterization: str, snr_gamma=5.0
) -> Optional[Callable[[Array], Array]]:
    """``weighting`` as ``None`` or a callable ``t -> w(t)`` (a name goes through :func:`loss_weight`)."""
    if weighting is None or callable(weighting):
        return weighting
    if not isinstance(weighting, str):
        raise ValueError(f"weighting must be a name in {list(LOSS_WEIGHTINGS)}, a callable lambda(t) or None; got {weighting!r}")
    check_choice(weighting, LOSS_WEIGHTINGS, "loss weighting")
    if weighting == "min_snr" and not (np.ndim(snr_gamma) == 0 and float(snr_gamma) > 0):
        raise ValueError(f"snr_gamma (min-SNR gamma) must be a positive scalar; got {snr_gamma!r}")
    if weighting == "none":
        return None
    return lambda t: loss_weight(weighting, sched, t, parameterization, snr_gamma=snr_gamma)


def weigh_errors(weighting: Optional[Callable[[Array], Array]], t, errors: Array) -> Array:
    """``weighting(t) * errors`` (``errors`` unchanged for ``None``); the weights must be a scalar or one per example."""
    if weighting is None:
        return errors
    w = jnp.asarray(weighting(t))
    try:
        shape = np.broadcast_shapes(w.shape, errors.shape)
    except ValueError:
        shape = None
    if shape != errors.shape:
        raise ValueError(
            f"weighting(t) must return a scalar or an array of shape {errors.shape} (one weight "
            f"per example); got shape {w.shape}"
        )
    return w.astype(errors.dtype) * errors
