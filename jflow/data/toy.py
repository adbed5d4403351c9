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

``get_toy(name, **params)`` builds any of them by name.
"""
from __future__ import annotations

import inspect
import math
import operator

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import check_choice, frozen_pytree, is_concrete
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
    "TOYS",
    "get_toy",
]


# --------------------------------------------------------------------------- helpers


def _check_n(n) -> int:
    """``n`` as a positive Python int (it fixes the output shape, so it must be static)."""
    try:
        n = operator.index(n)
    except TypeError:
        raise ValueError(
            f"n (number of samples) must be a Python int, it fixes the output shape; got {n!r}. "
            "Under jit, close over n or mark it static."
        ) from None
    if n < 1:
        raise ValueError(f"n (number of samples) must be >= 1; got {n}")
    return n


def _concrete(value):
    """The value as a numpy array when it is known on the host, else ``None`` (tracers, sentinels)."""
    if isinstance(value, (int, float, np.ndarray, np.generic)):
        return np.asarray(value)
    if isinstance(value, jax.Array) and is_concrete(value):
        return np.asarray(value)
    return None


def _check_param(name: str, value, *, lo: float, lo_open: bool, hi: float = math.inf, hi_open: bool = False):
    v = _concrete(value)
    if v is None:
        return
    if v.ndim != 0:
        raise ValueError(f"{name} must be a scalar; got shape {v.shape}")
    bad = np.isnan(v) or (v <= lo if lo_open else v < lo) or (v >= hi if hi_open else v > hi)
    if bad:
        interval = ("(" if lo_open else "[") + f"{lo}, {hi}" + (")" if hi_open else "]")
        raise ValueError(f"{name} must lie in {interval}; got {float(v)}")


def _check_static_int(name: str, value, lo: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
        raise ValueError(f"{name} must be a Python int >= {lo}; got {value!r}")


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
    _check_static_int("nmodes", nmodes, 1)
    _check_param("std", std, lo=0.0, lo_open=False)
    _check_param("scale", scale, lo=0.0, lo_open=False)
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
    Labels are the component ``k``.
    """
    return symmetric_mixture(8, std=std, scale=radius)


# --------------------------------------------------------------------------- other toys


@frozen_pytree()
class Moons:
    r"""Two interleaving half circles ("moons"), centred so that the mean is exactly 0.

    Label 0 (upper moon): :math:`(\cos\theta - \tfrac12, \sin\theta - \tfrac14)`, label 1
    (lower moon): the point reflection :math:`(\tfrac12 - \cos\theta, \tfrac14 - \sin\theta)`,
    :math:`\theta \sim U[0, \pi]`; i.e. scikit-learn's ``make_moons`` shifted by
    :math:`-(\tfrac12, \tfrac14)`. Then :math:`x = \mathrm{scale}\,(\text{point} + \mathrm{noise}\,\epsilon)`.
    Noise-free support: upper unit half circle centred at ``scale * (-1/2, -1/4)`` and lower
    one centred at ``scale * (1/2, 1/4)``; the set lies in ``scale * [-1.5, 1.5] x [-0.75, 0.75]``.
    """

    noise: float = 0.05
    scale: float = 1.0

    dim = 2
    num_classes = 2

    def __post_init__(self):
        _check_param("noise", self.noise, lo=0.0, lo_open=False)
        _check_param("scale", self.scale, lo=0.0, lo_open=True)

    def sample_with_labels(self, key: Array, n: int) -> tuple[Array, Array]:
        """``(x, y)``: ``(n, 2)`` points and ``(n,)`` int32 moon index (0 upper, 1 lower)."""
        n = _check_n(n)
        k_y, k_t, k_e = jax.random.split(key, 3)
        y = _labels(k_y, n, 2)
        theta = jax.random.uniform(k_t, (n,), _float(), 0.0, jnp.pi)
        sign = (1 - 2 * y).astype(_float())[:, None]
        clean = sign * (_unit(theta) - jnp.array([0.5, 0.25], _float()))
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
        _check_param("factor", self.factor, lo=0.0, lo_open=True, hi=1.0, hi_open=True)
        _check_param("noise", self.noise, lo=0.0, lo_open=False)
        _check_param("scale", self.scale, lo=0.0, lo_open=True)

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
    probability ``2 / num_cells^2``. Default: 4 x 4 cells on ``[-2, 2]^2``.
    """

    num_cells: int = 4
    scale: float = 2.0

    dim = 2

    def __post_init__(self):
        _check_static_int("num_cells", self.num_cells, 2)
        if self.num_cells % 2:
            raise ValueError(f"num_cells must be even (equal black cells per row); got {self.num_cells}")
        _check_param("scale", self.scale, lo=0.0, lo_open=True)

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
        _check_static_int("n_arms", self.n_arms, 1)
        _check_param("turns", self.turns, lo=0.0, lo_open=True)
        _check_param("noise", self.noise, lo=0.0, lo_open=False)
        _check_param("scale", self.scale, lo=0.0, lo_open=True)

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
        _check_param("noise", self.noise, lo=0.0, lo_open=False)
        _check_param("scale", self.scale, lo=0.0, lo_open=True)

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


# --------------------------------------------------------------------------- registry

TOYS = {
    "symmetric_mixture": symmetric_mixture,
    "eight_gaussians": eight_gaussians,
    "moons": Moons,
    "circles": Circles,
    "checkerboard": Checkerboard,
    "spirals": Spirals,
    "swiss_roll": SwissRoll,
}


def get_toy(name: str, **params):
    """Build a toy distribution by name: one of :data:`TOYS` (see the module docstring).

    ``params`` are the keyword arguments of that distribution (e.g.
    ``get_toy("moons", noise=0.1)``, ``get_toy("symmetric_mixture", nmodes=5, std=1.0,
    scale=10.0)``). Unknown names or parameters raise ``ValueError``.
    """
    check_choice(name, TOYS, "toy distribution")
    factory = TOYS[name]
    allowed = [p for p in inspect.signature(factory).parameters]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for toy {name!r}; allowed: {allowed}")
    return factory(**params)
