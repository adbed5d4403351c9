r"""Toy 2-D (and 3-D) data distributions as pure JAX samplers.

Every distribution is an immutable pytree with

- ``sample(key, n) -> x`` of shape ``(n, dim)``, and, where a natural class exists,
- ``sample_with_labels(key, n) -> (x, y)`` with integer labels ``y`` of shape ``(n,)``
  (``num_classes`` says how many), for class-conditional toy runs (guidance).

``n`` is a Python ``int`` (it fixes the output shape); the float parameters (``noise``,
``scale``, ...) are pytree leaves, so ``jax.jit(lambda d, k: d.sample(k, 512))`` compiles
once and re-runs for any parameter values. Samples are i.i.d.: labels are drawn uniformly
over the classes, not split evenly. Outputs use the default float dtype (float32, or
float64 under ``jax_enable_x64``).

The two Gaussian mixtures are :class:`jflow.marginals.GaussianMixture` objects, so their
exact marginal densities, velocities and scores (``jflow.marginals``) are available.
Support and scale (noise-free support; labels in brackets):

- ``symmetric_mixture``: the labs' mixture, ``nmodes`` (5) modes N(m_k, std^2 I) with
  m_k = scale (cos 2 pi k/nmodes, sin 2 pi k/nmodes), scale 10, std 1; mean 0 (component).
- ``eight_gaussians``: 8 modes at multiples of 45 degrees on the circle of radius 4,
  std 0.5; mean 0 (component).
- ``moons``: two unit half circles times ``scale`` (1), inside
  ``scale * [-1.5, 1.5] x [-0.75, 0.75]``; mean exactly 0 (which moon).
- ``circles``: circles of radius ``scale`` (1) and ``factor * scale`` (0.5); mean 0
  (which circle).
- ``checkerboard``: uniform on the black cells of a ``num_cells`` x ``num_cells`` (4 x 4)
  board covering ``[-scale, scale]^2`` ([-2, 2]^2); mean 0.
- ``spirals``: ``n_arms`` (2) spiral arms in the disc of radius ``scale`` (2); mean 0
  (which arm).
- ``swiss_roll``: 2-D roll with radius in ``[scale/3, scale]`` (scale 2), plus a height in
  ``[-scale, scale]`` when ``dim=3``; not centred.

``jflow.data.get_toy(name, **params)`` builds any of them by name.

**Same names, other distributions elsewhere.** torchcfm's and flow_matching's examples
use toy sets with these names but other parameters (their exact definitions and the
presets that reproduce them are in :mod:`jflow.data.peers`): torchcfm's 8 Gaussians have
radius 5 and per-coordinate std ``0.1 ** 0.25 = 0.562`` (here 4 and 0.5); its moons are
``3 x`` scikit-learn's moons ``- 1`` with a uniform shift along the diagonal instead of
Gaussian noise (here centred, Gaussian noise 0.05); flow_matching's checkerboard covers
``[-2/0.45, 2/0.45]^2 = [-4.44, 4.44]^2`` (here ``[-2, 2]^2``) and its moons are
scikit-learn's, uncentred, with noise 0.15. Numbers (losses, metrics) compare across
libraries only on the same preset.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import check_positive_int, check_scalar_in, frozen_pytree
from jflow.marginals import GaussianMixture

Array = jax.Array

__all__ = [
    "symmetric_mixture",
    "eight_gaussians",
    "Moons",
    "Circles",
    "Checkerboard",
    "Spirals",
    "SwissRoll",
]


# --------------------------------------------------------------------------- helpers


def _check_n(n) -> int:
    """``n`` as a positive Python int (it fixes the output shape, so it must be static)."""
    return check_positive_int(
        n, "n (number of samples)", why="it fixes the output shape; under jit, close over n or mark it static"
    )


def _float():
    return jnp.result_type(float)


def _labels(key, n: int, num_classes: int) -> Array:
    return jax.random.randint(key, (n,), 0, num_classes, dtype=jnp.int32)


def _unit(angle: Array) -> Array:
    return jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)


# --------------------------------------------------------------------------- Gaussian mixtures


def symmetric_mixture(nmodes: int = 5, std: float = 1.0, scale: float = 10.0) -> GaussianMixture:
    r"""The labs' symmetric 2-D Gaussian mixture (``GaussianMixture.symmetric_2D``), default 5 modes.

    :math:`p = \frac{1}{K}\sum_{k=0}^{K-1} \mathcal N(m_k, \mathrm{std}^2 I_2)` with
    :math:`m_k = \mathrm{scale}\,(\cos\frac{2\pi k}{K}, \sin\frac{2\pi k}{K})`: equal weights,
    modes on the circle of radius ``scale`` (first one on the positive x axis); the mean is
    0 for ``K >= 2``. Labels of ``sample_with_labels`` are the component ``k``.
    """
    check_positive_int(nmodes, "nmodes")
    check_scalar_in(std, "std", lo=0.0, lo_open=False)
    check_scalar_in(scale, "scale", lo=0.0, lo_open=False)
    dtype = _float()
    angles = 2 * jnp.pi * jnp.arange(nmodes, dtype=dtype) / nmodes
    means = scale * _unit(angles)
    stds = jnp.full((nmodes,), std, dtype)
    weights = jnp.full((nmodes,), 1.0 / nmodes, dtype)
    return GaussianMixture(means.astype(dtype), stds, weights)


def eight_gaussians(radius: float = 4.0, std: float = 0.5) -> GaussianMixture:
    r"""The "8 Gaussians" benchmark, a :class:`GaussianMixture` with eight equal-weight modes.

    :math:`\frac18\sum_{k=0}^{7}\mathcal N\big(r(\cos\frac{\pi k}{4}, \sin\frac{\pi k}{4}), \mathrm{std}^2 I_2\big)`
    with ``r = radius``: modes on the circle of radius 4 (default) at multiples of 45 degrees; mean 0.
    Labels are the component ``k``. torchcfm's ``sample_8gaussians`` is
    ``eight_gaussians(radius=5.0, std=0.1 ** 0.25)`` (:func:`jflow.data.peers.torchcfm_eight_gaussians`).
    """
    return symmetric_mixture(8, std=std, scale=radius)


# --------------------------------------------------------------------------- other toys


@frozen_pytree(meta=("centred",))
class Moons:
    r"""Two interleaving half circles ("moons"), centred so that the mean is exactly 0.

    Label 0 (upper moon): :math:`(\cos\theta - \tfrac12, \sin\theta - \tfrac14)`, label 1
    (lower moon): the point reflection :math:`(\tfrac12 - \cos\theta, \tfrac14 - \sin\theta)`,
    :math:`\theta \sim U[0, \pi]`; i.e. scikit-learn's ``make_moons`` shifted by
    :math:`-(\tfrac12, \tfrac14)`. Then :math:`x = \mathrm{scale}\,(\text{point} + \mathrm{noise}\,\epsilon)`.
    Noise-free support: upper unit half circle centred at ``scale * (-1/2, -1/4)`` and lower
    one centred at ``scale * (1/2, 1/4)``; the set lies in ``scale * [-1.5, 1.5] x [-0.75, 0.75]``.

    ``centred=False`` keeps scikit-learn's position (mean ``scale * (1/2, 1/4)``):
    ``Moons(noise=0.15, centred=False)`` is the ``make_moons(n, noise=0.15)`` of
    flow_matching's example (:func:`jflow.data.peers.flow_matching_moons`), with
    :math:`\theta` i.i.d. where scikit-learn spaces it evenly. Not torchcfm's moons
    (:func:`jflow.data.peers.torchcfm_moons`).
    """

    noise: float = 0.05
    scale: float = 1.0
    centred: bool = True

    dim = 2
    num_classes = 2

    def __post_init__(self):
        check_scalar_in(self.noise, "noise", lo=0.0, lo_open=False)
        check_scalar_in(self.scale, "scale", lo=0.0, lo_open=True)
        if not isinstance(self.centred, (bool, np.bool_)):
            raise ValueError(f"centred must be True or False; got {self.centred!r}")

    def sample_with_labels(self, key: Array, n: int) -> tuple[Array, Array]:
        """``(x, y)``: ``(n, 2)`` points and ``(n,)`` int32 moon index (0 upper, 1 lower)."""
        n = _check_n(n)
        k_y, k_t, k_e = jax.random.split(key, 3)
        y = _labels(k_y, n, 2)
        theta = jax.random.uniform(k_t, (n,), _float(), 0.0, jnp.pi)
        sign = (1 - 2 * y).astype(_float())[:, None]
        clean = sign * (_unit(theta) - jnp.array([0.5, 0.25], _float()))
        if not self.centred:
            clean = clean + jnp.array([0.5, 0.25], _float())
        x = self.scale * (clean + self.noise * jax.random.normal(k_e, (n, 2), _float()))
        return x, y

    def sample(self, key: Array, n: int) -> Array:
        """``(n, 2)`` samples."""
        return self.sample_with_labels(key, n)[0]


@frozen_pytree()
class Circles:
    r"""Two concentric circles: label 0 radius ``scale``, label 1 radius ``factor * scale``.

    :math:`x = \mathrm{scale}\,(r_y(\cos\theta, \sin\theta) + \mathrm{noise}\,\epsilon)`,
    :math:`\theta \sim U[0, 2\pi)`, :math:`r_0 = 1, r_1 = \mathrm{factor}` (scikit-learn's
    ``make_circles`` convention); mean 0, noise-free support the two circles.
    """

    factor: float = 0.5
    noise: float = 0.05
    scale: float = 1.0

    dim = 2
    num_classes = 2

    def __post_init__(self):
        check_scalar_in(self.factor, "factor", lo=0.0, lo_open=True, hi=1.0, hi_open=True)
        check_scalar_in(self.noise, "noise", lo=0.0, lo_open=False)
        check_scalar_in(self.scale, "scale", lo=0.0, lo_open=True)

    def sample_with_labels(self, key: Array, n: int) -> tuple[Array, Array]:
        """``(x, y)``: ``(n, 2)`` points and ``(n,)`` int32 circle index (0 outer, 1 inner)."""
        n = _check_n(n)
        k_y, k_t, k_e = jax.random.split(key, 3)
        y = _labels(k_y, n, 2)
        theta = jax.random.uniform(k_t, (n,), _float(), 0.0, 2 * jnp.pi)
        radius = jnp.where(y == 0, 1.0, self.factor).astype(_float())[:, None]
        x = self.scale * (radius * _unit(theta) + self.noise * jax.random.normal(k_e, (n, 2), _float()))
        return x, y

    def sample(self, key: Array, n: int) -> Array:
        """``(n, 2)`` samples."""
        return self.sample_with_labels(key, n)[0]


@frozen_pytree(meta=("num_cells",))
class Checkerboard:
    r"""Uniform density on the black cells of a checkerboard covering ``[-scale, scale]^2``.

    The square is cut into ``num_cells x num_cells`` equal cells; cell (row ``i`` from the
    bottom, column ``j`` from the left) is black when ``i + j`` is even, so the bottom-left
    cell is black. ``num_cells`` must be even: every row then has ``num_cells / 2`` black
    cells, the board is symmetric under ``x -> -x`` (the mean is 0) and each black cell has
    probability ``2 / num_cells^2``. Default: 4 x 4 cells on ``[-2, 2]^2``. The checkerboard
    of flow_matching's examples is ``Checkerboard(scale=2 / 0.45)``
    (:func:`jflow.data.peers.flow_matching_checkerboard`).
    """

    num_cells: int = 4
    scale: float = 2.0

    dim = 2

    def __post_init__(self):
        check_positive_int(self.num_cells, "num_cells", minimum=2)
        if self.num_cells % 2:
            raise ValueError(f"num_cells must be even (equal black cells per row); got {self.num_cells}")
        check_scalar_in(self.scale, "scale", lo=0.0, lo_open=True)

    def sample(self, key: Array, n: int) -> Array:
        """``(n, 2)`` samples, uniform on the black cells."""
        n = _check_n(n)
        c = self.num_cells
        k_row, k_col, k_u = jax.random.split(key, 3)
        row = jax.random.randint(k_row, (n,), 0, c)
        col = 2 * jax.random.randint(k_col, (n,), 0, c // 2) + row % 2
        cell = jnp.stack([col, row], axis=-1).astype(_float())
        u = jax.random.uniform(k_u, (n, 2), _float())
        return self.scale * ((cell + u) * (2.0 / c) - 1.0)


@frozen_pytree(meta=("n_arms",))
class Spirals:
    r"""``n_arms`` interleaved Archimedean spirals inside the disc of radius ``scale``.

    Arm ``k`` (the label): radius :math:`r = \sqrt{s}`, :math:`s \sim U[0, 1]` (about uniform
    along the arc), angle :math:`\theta = 2\pi\,\mathrm{turns}\,r + 2\pi k / n_{arms}`;
    :math:`x = \mathrm{scale}\,(r(\cos\theta, \sin\theta) + \mathrm{noise}\,\epsilon)`.
    The arms are rotations of each other, so the mean is 0 for ``n_arms >= 2``.
    """

    n_arms: int = 2
    turns: float = 1.0
    noise: float = 0.03
    scale: float = 2.0

    dim = 2

    @property
    def num_classes(self) -> int:
        return self.n_arms

    def __post_init__(self):
        check_positive_int(self.n_arms, "n_arms")
        check_scalar_in(self.turns, "turns", lo=0.0, lo_open=True)
        check_scalar_in(self.noise, "noise", lo=0.0, lo_open=False)
        check_scalar_in(self.scale, "scale", lo=0.0, lo_open=True)

    def sample_with_labels(self, key: Array, n: int) -> tuple[Array, Array]:
        """``(x, y)``: ``(n, 2)`` points and ``(n,)`` int32 arm index."""
        n = _check_n(n)
        k_y, k_s, k_e = jax.random.split(key, 3)
        y = _labels(k_y, n, self.n_arms)
        r = jnp.sqrt(jax.random.uniform(k_s, (n,), _float()))
        theta = 2 * jnp.pi * (self.turns * r + y.astype(_float()) / self.n_arms)
        x = self.scale * (r[:, None] * _unit(theta) + self.noise * jax.random.normal(k_e, (n, 2), _float()))
        return x, y

    def sample(self, key: Array, n: int) -> Array:
        """``(n, 2)`` samples."""
        return self.sample_with_labels(key, n)[0]


@frozen_pytree(meta=("dim",))
class SwissRoll:
    r"""Swiss roll: :math:`t \sim U[\tfrac32\pi, \tfrac92\pi]`, point :math:`\frac{t}{4.5\pi}(\cos t, \sin t)`.

    The radius :math:`t / 4.5\pi` runs over ``[1/3, 1]`` (1.25 turns), then
    :math:`x = \mathrm{scale}\,(\text{point} + \mathrm{noise}\,\epsilon)`; ``dim=3`` appends
    a height coordinate uniform on ``[-1, 1]`` (before scaling), as scikit-learn's
    ``make_swiss_roll`` with its axes reordered to ``(x, y, height)``. Not centred.
    """

    noise: float = 0.02
    scale: float = 2.0
    dim: int = 2

    def __post_init__(self):
        if self.dim not in (2, 3):
            raise ValueError(f"dim must be 2 (the roll) or 3 (roll x height); got {self.dim!r}")
        check_scalar_in(self.noise, "noise", lo=0.0, lo_open=False)
        check_scalar_in(self.scale, "scale", lo=0.0, lo_open=True)

    def sample(self, key: Array, n: int) -> Array:
        """``(n, dim)`` samples."""
        n = _check_n(n)
        k_t, k_h, k_e = jax.random.split(key, 3)
        t = 1.5 * jnp.pi * (1.0 + 2.0 * jax.random.uniform(k_t, (n,), _float()))
        clean = (t / (4.5 * jnp.pi))[:, None] * _unit(t)
        if self.dim == 3:
            height = jax.random.uniform(k_h, (n, 1), _float(), -1.0, 1.0)
            clean = jnp.concatenate([clean, height], axis=-1)
        return self.scale * (clean + self.noise * jax.random.normal(k_e, (n, self.dim), _float()))
