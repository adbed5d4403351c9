r"""The four training objectives compared by Tong et al. (2023), built from jflow's couplings and paths.

Each is :func:`jflow.losses.make_loss` on the batch ``{"x": x1, "x0": x0}`` (source samples
``x0`` in the place of ``eps``), regressing the network on a conditional velocity:

- ``I-CFM`` (independent CFM): pairs as drawn; torchcfm's constant-width path
  :math:`x_t = t x_1 + (1-t) x_0 + \sigma\xi`, target :math:`x_1 - x_0`
  (``paths.constant_noise(sigma)``; Tong et al. eqs. 14-15).
- ``OT-CFM``: the same path on the minibatch exact optimal-transport pairs
  (``couplings.exact_ot``, Tong et al. Algorithm 2 / eq. 17).
- ``SB-CFM``: pairs from the entropic OT plan with :math:`\varepsilon = 2\sigma_{SB}^2`
  (``couplings.schrodinger_bridge``) and the Brownian-bridge path
  :math:`x_t = t x_1 + (1-t) x_0 + \sigma_{SB}\sqrt{t(1-t)}\,\xi`, target
  :math:`x_1 - x_0 + \frac{1-2t}{2t(1-t)}(x_t - t x_1 - (1-t) x_0)` (eqs. 20-21).
- ``FM`` (Lipman et al. 2023, eqs. 20-21 there): only from :math:`\mathcal N(0, I)`; the
  Gaussian path :math:`x_t = t x_1 + (1 - (1-\sigma_{min}) t)\,\epsilon`, target
  :math:`x_1 - (1-\sigma_{min})\epsilon` (equal to torchcfm's
  :math:`(x_1 - (1-\sigma_{min}) x_t)/(1 - (1-\sigma_{min}) t)`), i.e. the scheduler
  :math:`\alpha_t = t,\ \beta_t = 1 - (1-\sigma_{min}) t`, whose :math:`\beta_1 = \sigma_{min} \ne 0`.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax.numpy as jnp

from jflow import couplings, paths
from jflow.losses import make_loss
from jflow.schedulers import CustomScheduler, LinearScheduler

from experiments.couplings import model

__all__ = ["METHODS", "GAUSSIAN_SOURCE_ONLY", "lipman_scheduler", "make_method_loss"]

#: method name -> one-line description (the table's legend).
METHODS = {
    "I-CFM": "independent pairs, constant sigma",
    "OT-CFM": "exact minibatch OT pairs, constant sigma",
    "SB-CFM": "entropic OT pairs (eps = 2 sb_sigma^2), Brownian bridge",
    "FM": "Lipman's Gaussian path with sigma_min (source N(0, I) only)",
}
#: methods whose path needs a standard normal source.
GAUSSIAN_SOURCE_ONLY = frozenset({"FM"})


def lipman_scheduler(sigma_min: float) -> CustomScheduler:
    r""":math:`\alpha_t = t,\ \beta_t = 1 - (1-\sigma_{min}) t` (Lipman et al.'s OT path; ``check=False``:
    :math:`\beta_1 = \sigma_{min}`, the data end keeps a Gaussian of width :math:`\sigma_{min}`)."""
    shrink = 1.0 - float(sigma_min)
    return CustomScheduler(
        lambda t: t, lambda t: 1.0 - shrink * t,
        lambda t: jnp.ones_like(t), lambda t: -shrink * jnp.ones_like(t), check=False,
    )


def make_method_loss(name: str, *, sigma: float, sb_sigma: float) -> Callable:
    """``loss(params, {"x": x1, "x0": x0}, key) -> (loss, metrics)`` of method ``name`` (a key of ``METHODS``).

    ``sigma`` is the constant path width of I-CFM / OT-CFM and ``sigma_min`` of FM;
    ``sb_sigma`` the Brownian-bridge diffusion of SB-CFM. Metrics as in ``make_loss``
    (``target_sq_norm`` is the batch mean of the squared target).
    """
    common = dict(time_bins=0)
    if name == "I-CFM":
        return make_loss(model.apply, LinearScheduler(), path_noise=paths.constant_noise(sigma), **common)
    if name == "OT-CFM":
        return make_loss(model.apply, LinearScheduler(), coupling=couplings.exact_ot,
                         path_noise=paths.constant_noise(sigma), **common)
    if name == "SB-CFM":
        return make_loss(model.apply, LinearScheduler(),
                         coupling=functools.partial(couplings.schrodinger_bridge, sigma=sb_sigma),
                         path_noise=paths.brownian_bridge_noise(sb_sigma), **common)
    if name == "FM":
        return make_loss(model.apply, lipman_scheduler(sigma), **common)
    raise ValueError(f"unknown method {name!r}; choose from {list(METHODS)}")
