r"""Exponential moving average (EMA) of parameters, with warm-up.

With decay :math:`\mu` the EMA after update :math:`n` (``step = n``, counting from 0) is

.. math:: \bar\theta_{n+1} = \mu_n \bar\theta_n + (1 - \mu_n)\,\theta_{n+1},
          \qquad \mu_n = \min\!\Big(\mu, \frac{1 + n}{10 + n}\Big)

with warm-up (``warmup=True``), or :math:`\mu_n = \mu` without. The warm-up keeps the
early EMA from being dominated by the random initialisation (as in the EMA of Adam-era
diffusion code bases).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["ema_decay_at", "ema_update"]


def ema_decay_at(decay, step, *, warmup: bool = True) -> jax.Array:
    r"""Decay used at update ``step``: :math:`\min(\mu, (1 + n)/(10 + n))` with warm-up, else :math:`\mu`."""
    decay = jnp.asarray(decay, jnp.float32)
    if not warmup:
        return decay
    n = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + n) / (10.0 + n))


def ema_update(ema_params: Any, params: Any, decay) -> Any:
    r""":math:`\bar\theta \leftarrow \mu \bar\theta + (1 - \mu)\theta` leafwise; keeps each EMA leaf's dtype."""
    decay = jnp.asarray(decay, jnp.float32)

    def one(e, p):
        return (decay * e + (1.0 - decay) * p.astype(e.dtype)).astype(e.dtype)

    return jax.tree.map(one, ema_params, params)
