"""The 2-D toy sets of the PyTorch libraries' examples, in numpy, so that every library sees the same arrays.

Each generator is ``gen(rng, n) -> (n, 2) float32`` with ``rng`` a ``numpy.random.Generator``,
and follows its source line by line (these are the definitions a user comparing numbers
across libraries meets, not jflow's own ``jflow.data`` toy sets):

- :func:`checkerboard`: ``inf_train_gen`` of flow_matching's ``examples/2d_flow_matching.ipynb``.
- :func:`eight_gaussians`: ``torchcfm.utils.sample_8gaussians``, i.e.
  ``eight_normal_sample(n, 2, scale=5, var=0.1)``; that function builds its noise as
  ``MultivariateNormal(0, sqrt(var) * I)``, so the covariance is ``sqrt(0.1) I`` and each
  coordinate's standard deviation ``0.1 ** 0.25 = 0.562`` (not ``sqrt(0.1)``).
- :func:`moons`: ``torchcfm.utils.sample_moons``, i.e. torchdyn's ``generate_moons(n, noise=0.2)``
  scaled by 3 and shifted by -1. torchdyn places the points *evenly* along the two half
  circles (``linspace``, no shuffle) and adds one ``Unif[0, 0.2)`` draw per point to both
  coordinates (an ``(n, 1)`` array broadcast), so the "noise" is a shift along the diagonal.
"""
from __future__ import annotations

import numpy as np

__all__ = ["checkerboard", "eight_gaussians", "moons", "TOY_SETS", "EIGHT_CENTERS"]

# torchcfm.utils.eight_normal_sample's centers, in its order (before the scale of 5)
EIGHT_CENTERS = np.array(
    [(1, 0), (-1, 0), (0, 1), (0, -1),
     (1 / np.sqrt(2), 1 / np.sqrt(2)), (1 / np.sqrt(2), -1 / np.sqrt(2)),
     (-1 / np.sqrt(2), 1 / np.sqrt(2)), (-1 / np.sqrt(2), -1 / np.sqrt(2))]
)


def checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    """flow_matching's checkerboard: 8 unit squares of a 4 x 4 board on [-2, 2]^2, scaled by 1 / 0.45."""
    x1 = rng.random(n) * 4 - 2
    x2 = rng.random(n) - rng.integers(0, 2, size=n) * 2 + np.floor(x1) % 2
    return (np.stack([x1, x2], axis=1) / 0.45).astype(np.float32)


def eight_gaussians(rng: np.random.Generator, n: int) -> np.ndarray:
    """torchcfm's 8 gaussians: modes at radius 5, each coordinate's std ``0.1 ** 0.25``."""
    noise = rng.standard_normal((n, 2)) * 0.1**0.25
    return (5.0 * EIGHT_CENTERS[rng.integers(0, 8, size=n)] + noise).astype(np.float32)


def moons(rng: np.random.Generator, n: int) -> np.ndarray:
    """torchcfm's two moons: torchdyn's evenly spaced half circles plus a diagonal ``Unif[0, 0.2)`` shift, ``* 3 - 1``."""
    n_out = n // 2
    n_in = n - n_out
    outer = np.stack([np.cos(np.linspace(0, np.pi, n_out)), np.sin(np.linspace(0, np.pi, n_out))], axis=1)
    inner = np.stack([1 - np.cos(np.linspace(0, np.pi, n_in)), 1 - np.sin(np.linspace(0, np.pi, n_in)) - 0.5], axis=1)
    x = np.concatenate([outer, inner]) + rng.random((n, 1)) * 0.2
    return (x * 3 - 1).astype(np.float32)


TOY_SETS = {"checkerboard": checkerboard, "8gaussians": eight_gaussians, "moons": moons}
