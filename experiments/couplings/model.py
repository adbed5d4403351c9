r"""The network of Tong et al.'s 2-D experiments as two pure functions (no flax module).

torchcfm's ``MLP(dim, w=64, time_varying=True)`` (``torchcfm/models/models.py``) maps the
concatenation :math:`[x, t]` through ``depth`` = 3 hidden layers of width ``w`` with SELU,
then a linear layer to :math:`\mathbb R^d`:

.. math:: u^\theta_t(x) = W_4\,\mathrm{selu}(W_3\,\mathrm{selu}(W_2\,\mathrm{selu}(W_1 [x, t] + b_1) + b_2) + b_3) + b_4.

The jflow residual FiLM :class:`jflow.models.MLP` is a different network; this one is kept
here so that the reproduction matches the paper's model, and so that torchcfm's trained
weights load into it unchanged (``python -m benchmarks.couplings_torchcfm`` evaluates both with the
same code). Parameters are a tuple of ``{"w": (fan_in, fan_out), "b": (fan_out,)}``
(``w`` is torch's ``weight.T``), initialised like ``torch.nn.Linear``: weights and biases
uniform on :math:`[-1/\sqrt{\text{fan\_in}}, 1/\sqrt{\text{fan\_in}}]`.
"""
from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["init_params", "stack_params", "apply"]


def init_params(seed, dim: int = 2, width: int = 64, depth: int = 3) -> Tuple[dict, ...]:
    """Float32 numpy parameters, torch's default ``Linear`` initialisation, from ``default_rng(seed)``.

    ``seed`` is anything ``numpy.random.default_rng`` takes (e.g. ``[base_seed, run]``); the
    same seed gives the same network to every method and to the torchcfm benchmark.
    """
    rng = np.random.default_rng(seed)
    sizes = [dim + 1] + [width] * depth + [dim]
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / np.sqrt(fan_in)
        params.append({"w": rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32),
                       "b": rng.uniform(-bound, bound, (fan_out,)).astype(np.float32)})
    return tuple(params)


def stack_params(per_run) -> Tuple[dict, ...]:
    """Stack the parameters of several runs on a new leading axis (the ``vmap`` axis over seeds)."""
    return jax.tree.map(lambda *leaves: np.stack(leaves), *per_run)


def apply(params, x, t, y=None):
    """``u_t(x)`` for ``x`` (B, d) and flow time ``t`` (scalar or (B,), 0 source, 1 target); ``y`` unused."""
    del y
    x = jnp.asarray(x)
    t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
    h = jnp.concatenate([x, t[:, None]], axis=-1)
    for layer in params[:-1]:
        h = jax.nn.selu(h @ layer["w"] + layer["b"])
    return h @ params[-1]["w"] + params[-1]["b"]
