"""The labs' MLP vector field in flax, shared by the benchmarks.

``[x, t] -> (Dense(width) -> SiLU) x depth -> Dense(d)``: the model of the MIT 6.S184 labs
(``t`` concatenated to ``x``), which ``bench_peers.py`` also writes in PyTorch.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class LabMLP(nn.Module):
    """The labs' MLP field: ``[x, t] -> (Dense(width) -> SiLU) x depth -> Dense(d)``."""

    width: int
    depth: int = 4

    @nn.compact
    def __call__(self, x, t, y=None):
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
        h = jnp.concatenate([x, t[:, None]], axis=-1)
        for i in range(self.depth):
            h = nn.silu(nn.Dense(self.width, name=f"hidden_{i}")(h))
        return nn.Dense(x.shape[-1], name="out")(h)
