r"""Toy sets of other flow-matching code bases, reproduced, so that numbers compare across libraries.

jflow's toy sets (:mod:`jflow.data.toy`) share names with those of torchcfm
(atong01/conditional-flow-matching, ``torchcfm/utils.py``, v1.0.7) and of the examples of
facebookresearch/flow_matching, but not their parameters. The presets below reproduce the
peers' distributions exactly (not their random streams):

==============================  ======================================================  ===================================
preset                          peer definition                                         jflow equivalent
==============================  ======================================================  ===================================
``torchcfm_eight_gaussians``    ``sample_8gaussians(n) = eight_normal_sample(n, 2,      ``eight_gaussians(radius=5,
                                scale=5, var=0.1)``: centres ``5 (cos, sin)(k pi/4)``,  std=0.1 ** 0.25)``
                                noise ``MultivariateNormal(0, sqrt(var) I)``, whose
                                2nd argument is the *covariance*: std ``0.1**0.25``
                                ``= 0.562`` per coordinate (not ``sqrt(0.1) = 0.316``)
``torchcfm_moons``              ``sample_moons(n) = 3 generate_moons(n, noise=0.2) - 1``  ``TorchdynMoons(noise=0.2,
                                (torchdyn): scikit-learn's moon points plus one         scale=3, shift=-1)``
                                ``U[0, 0.2)`` number added to *both* coordinates
``flow_matching_checkerboard``  ``2d_flow_matching.ipynb``: ``x1 ~ U[-2, 2)``,          ``Checkerboard(num_cells=4,
                                ``x2 ~ U[0, 1) - 2 Bernoulli(1/2) + (floor(x1) mod 2)``,  scale=2 / 0.45)``
                                both ``/ 0.45``: the 8 black cells of a 4 x 4 board
                                on ``[-4.44, 4.44]^2``, bottom-left cell black
``flow_matching_moons``         ``standalone_flow_matching.ipynb``: scikit-learn         ``Moons(noise=0.15,
                                ``make_moons(n, noise=0.15)``, not centred              centred=False)``
==============================  ======================================================  ===================================

The one difference left: where a peer spaces the moon angle evenly (``linspace(0, pi,
n // 2)``, exactly half the points per moon), jflow draws angle and label i.i.d.; the
distributions agree, a batch's empirical one differs by sampling noise.
"""
from __future__ import annotations

import jax

from jflow._checks import check_positive_int, check_scalar_in, frozen_pytree
from jflow.data.toy import Checkerboard, Moons, eight_gaussians
from jflow.marginals import GaussianMixture

__all__ = [
    "TorchdynMoons",
    "torchcfm_eight_gaussians",
    "torchcfm_moons",
    "flow_matching_checkerboard",
    "flow_matching_moons",
]


@frozen_pytree()
class TorchdynMoons:
    r"""torchdyn's ``generate_moons``: scikit-learn's moons shifted along the diagonal by uniform noise.

    Label 0: :math:`p = (\cos\theta, \sin\theta)`, label 1: :math:`p = (1 - \cos\theta,
    \tfrac12 - \sin\theta)`, :math:`\theta \sim U[0, \pi]`; then
    :math:`x = \mathrm{scale}\,(p + u\,(1, 1)) + \mathrm{shift}` with one
    :math:`u \sim U[0, \mathrm{noise})` per point. Mean
    :math:`\mathrm{scale}\,(\tfrac12 + \tfrac{\mathrm{noise}}2, \tfrac14 + \tfrac{\mathrm{noise}}2) + \mathrm{shift}`;
    support: :math:`x_1 \in \mathrm{scale}\,[-1, 2 + \mathrm{noise}] + \mathrm{shift}`,
    :math:`x_2 \in \mathrm{scale}\,[-\tfrac12, 1 + \mathrm{noise}] + \mathrm{shift}`.
    Defaults are torchdyn's (``noise=1e-4``, no scale or shift); torchcfm's moons are
    :func:`torchcfm_moons`.
    """

    noise: float = 1e-4
    scale: float = 1.0
    shift: float = 0.0

    dim = 2
    num_classes = 2

    def __post_init__(self):
        check_scalar_in(self.noise, "noise", lo=0.0)
        check_scalar_in(self.scale, "scale", lo=0.0, lo_open=True)
        check_scalar_in(self.shift, "shift", lo=-float("inf"))

    def sample_with_labels(self, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        """``(x, y)``: ``(n, 2)`` points and ``(n,)`` int32 moon index (0 upper, 1 lower)."""
        n = check_positive_int(n, "n (number of samples)", why="it fixes the output shape")
        k_moons, k_u = jax.random.split(key)
        points, y = Moons(noise=0.0, centred=False).sample_with_labels(k_moons, n)
        u = self.noise * jax.random.uniform(k_u, (n, 1), points.dtype)
        return self.scale * (points + u) + self.shift, y

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """``(n, 2)`` samples."""
        return self.sample_with_labels(key, n)[0]


def torchcfm_eight_gaussians() -> GaussianMixture:
    """torchcfm's ``sample_8gaussians``: 8 equal modes at radius 5, per-coordinate std ``0.1 ** 0.25``."""
    return eight_gaussians(radius=5.0, std=0.1 ** 0.25)


def torchcfm_moons() -> TorchdynMoons:
    """torchcfm's ``sample_moons``: ``3 * generate_moons(n, noise=0.2) - 1`` (mean ``(0.8, 0.05)``)."""
    return TorchdynMoons(noise=0.2, scale=3.0, shift=-1.0)


def flow_matching_checkerboard() -> Checkerboard:
    """flow_matching's example checkerboard: 4 x 4 cells on ``[-2/0.45, 2/0.45]^2``."""
    return Checkerboard(num_cells=4, scale=2.0 / 0.45)


def flow_matching_moons(noise: float = 0.15) -> Moons:
    """flow_matching's example moons: scikit-learn's ``make_moons(n, noise)``, not centred
    (``noise=0.15`` in ``standalone_flow_matching.ipynb``, 0.1 and 0.05 in other examples)."""
    return Moons(noise=noise, centred=False)
