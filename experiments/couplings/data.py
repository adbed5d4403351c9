r"""The 2-D distributions and source -> target pairs of Tong et al. (2023), as numpy arrays.

The samplers reproduce ``torchcfm.utils`` (torchcfm 1.0.7) exactly in law, so that numbers
are comparable with the published ones and with ``python -m benchmarks.couplings_torchcfm``, which
trains torchcfm's matchers on the *same arrays* (generated here, once, in numpy):

- ``normal``: :math:`\mathcal N(0, I_2)`.
- ``8gaussians``: ``sample_8gaussians(n) = eight_normal_sample(n, 2, scale=5, var=0.1)``: a
  centre drawn uniformly among the 8 unit vectors at multiples of 45 degrees, times 5, plus
  Gaussian noise. torchcfm passes ``sqrt(var) * I`` as the *covariance*, so the noise std is
  :math:`0.1^{1/4} \approx 0.562` (not :math:`\sqrt{0.1}`).
- ``moons``: ``sample_moons(n) = 3 * generate_moons(n, noise=0.2) - 1`` (torchdyn): ``n // 2``
  points *evenly spaced* on the upper half circle :math:`(\cos s, \sin s)`, the rest evenly
  spaced on the lower one :math:`(1 - \cos s, 0.5 - \sin s)`, :math:`s \in [0, \pi]`, each point
  shifted by one uniform draw :math:`U[0, 0.2)` added to *both* coordinates.

Every array is a deterministic function of ``(seed, run, pair, step)`` (numpy's
``default_rng`` seeded with that tuple), so all methods of a run, the torchcfm benchmark and a
rerun see exactly the same training batches, and evaluation sets never overlap them.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

__all__ = ["DISTRIBUTIONS", "PAIRS", "sample", "pair_batch", "training_batch", "eval_sets"]

_H = 1.0 / np.sqrt(2.0)
#: The centres of torchcfm's ``eight_normal_sample`` (before ``scale``), in its order.
EIGHT_CENTRES = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (_H, _H), (_H, -_H), (-_H, _H), (-_H, -_H)])


def _normal(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal((n, 2))


def _eight_gaussians(rng: np.random.Generator, n: int, scale: float = 5.0, var: float = 0.1) -> np.ndarray:
    """torchcfm ``sample_8gaussians``: ``scale * c_k + N(0, sqrt(var) I)``, ``k`` uniform over 8 centres."""
    k = rng.integers(0, 8, n)
    return scale * EIGHT_CENTRES[k] + var**0.25 * rng.standard_normal((n, 2))


def _moons(rng: np.random.Generator, n: int, noise: float = 0.2) -> np.ndarray:
    """torchcfm ``sample_moons``: torchdyn's evenly spaced half circles, a uniform diagonal shift, ``3 x - 1``."""
    n_out = n // 2
    s_out, s_in = np.linspace(0.0, np.pi, n_out), np.linspace(0.0, np.pi, n - n_out)
    x = np.concatenate([np.cos(s_out), 1.0 - np.cos(s_in)])
    y = np.concatenate([np.sin(s_out), 0.5 - np.sin(s_in)])
    points = np.stack([x, y], axis=1) + rng.random((n, 1)) * noise
    return 3.0 * points - 1.0


DISTRIBUTIONS = {"normal": _normal, "8gaussians": _eight_gaussians, "moons": _moons}

#: pair name -> (source, target); the order fixes each pair's random stream (append only).
PAIRS: Dict[str, Tuple[str, str]] = {
    "normal-8gaussians": ("normal", "8gaussians"),
    "normal-moons": ("normal", "moons"),
    "8gaussians-moons": ("8gaussians", "moons"),
}
_PAIR_INDEX = {name: i for i, name in enumerate(PAIRS)}
_EVAL_STREAM = 1 << 40  # step index of the evaluation sets: far beyond any training step


def sample(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` float32 points ``(n, 2)`` of distribution ``name`` (a key of ``DISTRIBUTIONS``)."""
    if name not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {name!r}; choose from {sorted(DISTRIBUTIONS)}")
    return DISTRIBUTIONS[name](rng, int(n)).astype(np.float32)


def _rng(pair: str, seed: int, run: int, step: int) -> np.random.Generator:
    if pair not in PAIRS:
        raise ValueError(f"unknown pair {pair!r}; choose from {list(PAIRS)}")
    return np.random.default_rng([seed, run, _PAIR_INDEX[pair], step])


def pair_batch(pair: str, seed: int, run: int, step: int, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """Training batch ``(x0, x1)`` of update ``step`` of run ``run``: ``n`` source and ``n`` target points.

    Independent draws (the product coupling); a coupling may re-pair them in the loss.
    """
    rng = _rng(pair, seed, run, step)
    source, target = PAIRS[pair]
    return sample(source, rng, n), sample(target, rng, n)


def training_batch(pair: str, seed: int, runs: int, step: int, n: int) -> Dict[str, np.ndarray]:
    """``{"x": x1, "x0": x0}`` of update ``step`` for ``runs`` runs at once (leaves ``(runs, n, 2)``)."""
    x0, x1 = zip(*(pair_batch(pair, seed, r, step, n) for r in range(runs)))
    return {"x": np.stack(x1), "x0": np.stack(x0)}


def eval_sets(pair: str, seed: int, n: int) -> Dict[str, np.ndarray]:
    """Held-out arrays of a pair, shared by every method and seed (so comparisons are paired).

    ``x0``: ``n`` source points (the ODE start points); ``target``: ``n`` target points (the
    reference of every W2); ``target_2``: ``n`` more target points (the sampling floor of W2:
    ``W2(target_2, target)``).
    """
    rng = _rng(pair, seed, 0, _EVAL_STREAM)
    source, target = PAIRS[pair]
    return {"x0": sample(source, rng, n), "target": sample(target, rng, n), "target_2": sample(target, rng, n)}
