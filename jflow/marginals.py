r"""Exact marginal probability paths, vector fields and scores for Gaussian-mixture data.

Flow time: ``t = 0`` is noise (``p_init = N(0, I)`` when :math:`\alpha_0 = 0`), ``t = 1`` is
data. For data

.. math:: p_{\rm data} = \sum_{k=1}^K w_k\, \mathcal N(m_k, s_k^2 I_d)

(isotropic components; :math:`s_k = 0` is a point mass :math:`\delta_{m_k}`, so a finite data
set is a mixture, see :meth:`GaussianMixture.from_points`) and the Gaussian conditional
path :math:`p_t(x|z) = \mathcal N(\alpha_t z, \beta_t^2 I)`, everything of lecture 2 is
available in closed form.

**Marginal path.** Given component ``k``, :math:`x_t = \alpha_t z + \beta_t\epsilon` with
:math:`z \sim \mathcal N(m_k, s_k^2 I)` is Gaussian,

.. math:: x_t \,|\, k \sim \mathcal N(\alpha_t m_k,\ v_k I), \qquad v_k(t) = \alpha_t^2 s_k^2 + \beta_t^2,

so :math:`p_t(x) = \int p_t(x|z) p_{\rm data}(z) dz = \sum_k w_k \mathcal N(x; \alpha_t m_k, v_k I)`.

**Marginal fields (marginalisation trick).** The marginal vector field and score are
posterior averages of the conditional ones (lecture 2, eq. (32)):

.. math:: u_t(x) = \int u_t(x|z) \frac{p_t(x|z) p_{\rm data}(z)}{p_t(x)} dz
          = E[u_t(x|z) \,|\, x_t = x], \qquad
          \nabla\log p_t(x) = E[\nabla\log p_t(x|z) \,|\, x_t = x].

Splitting the posterior over ``z`` into the posterior over the component ``k`` and the
posterior over ``z`` within it (tower property), each field is a posterior-weighted sum
of the fields of one Gaussian component,

.. math:: u_t(x) = \sum_k w_k(x)\, u_t^{(k)}(x), \qquad
          w_k(x) = P(k \,|\, x_t = x) = \frac{w_k \mathcal N(x; \alpha_t m_k, v_k I)}{p_t(x)},

where :math:`u^{(k)}` is the field of the Gaussian path :math:`\mathcal N(\mu_k(t), v_k(t) I)`,
:math:`\mu_k = \alpha_t m_k`: its flow is :math:`x = \mu_k + \sqrt{v_k}\,\xi`, so
:math:`u^{(k)}_t(x) = \dot\mu_k + \frac{\dot v_k}{2 v_k}(x - \mu_k)` with
:math:`\dot v_k = 2\alpha_t\dot\alpha_t s_k^2 + 2\beta_t\dot\beta_t` (equivalently
:math:`\dot\alpha_t E[z|x,k] + \dot\beta_t E[\epsilon|x,k]`). The posterior weights are a
softmax of log-densities computed with log-sum-exp, so they stay exact for large ``d``
and far-apart components (where the densities themselves underflow).

All functions take ``x`` of shape ``(B, d)`` (or a single point ``(d,)`` with a scalar
``t``) and ``t`` scalar or ``(B,)``; outside ``jit`` a ``t`` outside ``[0, 1]`` raises
``ValueError``. Outputs have the float dtype of ``x``; they are computed in float32 at
least (half-precision squared distances overflow) and in float64 for a float64 ``x``.

Singular points: at ``t = 1`` the fields divide by :math:`v_k = s_k^2`, so they are
singular for point masses (as the conditional fields are), and for schedulers with
:math:`\dot\beta_1 = -\infty` (``SqrtScheduler``, ``LinearVPScheduler``, ``VPScheduler``)
the velocity at ``t = 1`` is NaN. Everything is finite for ``t < 1``.

Class-conditional fields (for guidance experiments): the data distribution given a
label is a sub-mixture, :meth:`GaussianMixture.select`, and its exact fields are those
of the selected mixture.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import as_float, check_choice, check_time, expand_time, frozen_pytree, is_concrete
from jflow.schedulers import derivatives

Array = jax.Array

__all__ = [
    "GaussianMixture",
    "marginal_log_prob",
    "marginal_score",
    "marginal_velocity",
    "marginal_field",
    "posterior_mean",
    "posterior_weights",
]

_FIELDS = ("means", "stds", "weights")
_WEIGHT_TOL = 1e-4


def _log_normal(sq, var, dim):
    r""":math:`\log \mathcal N(x; \mu, v I)` from :math:`\|x - \mu\|^2` and ``v`` (broadcast).

    ``v = 0`` is a point mass: ``-inf`` off the point, ``+inf`` on it (NaN for a NaN distance).
    The ``where`` keeps gradients finite for ``v > 0``.
    """
    positive = var > 0
    safe = jnp.where(positive, var, jnp.ones_like(var))
    value = -0.5 * sq / safe - 0.5 * dim * jnp.log(2.0 * jnp.pi * safe)
    off_point = jnp.where(sq > 0, -jnp.inf, jnp.nan)  # a NaN x stays NaN (never a finite -inf)
    return jnp.where(positive, value, jnp.where(sq == 0, jnp.inf, off_point).astype(value.dtype))


def _validate(means, stds, weights):
    means = as_float(means)
    if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
        raise ValueError(
            f"means must have shape (K, d) with K >= 1 components in d >= 1 dimensions; "
            f"got shape {tuple(means.shape)} (a single component: means[None])"
        )
    k = means.shape[0]
    # same shape as prepare_inputs' t (models/layers.py), a scalar broadcast to a vector; other names and checks
    stds = as_float(stds)
    if stds.ndim == 0:
        stds = jnp.broadcast_to(stds, (k,))
    if weights is None:
        weights = jnp.full((k,), 1.0 / k, means.dtype)
    weights = as_float(weights)
    for name, value in (("stds", stds), ("weights", weights)):
        if value.shape != (k,):
            raise ValueError(
                f"{name} must have shape (K,) = ({k},) to match means of shape {tuple(means.shape)}; "
                f"got shape {tuple(value.shape)}"
            )
    dtype = jnp.result_type(means, stds, weights)
    means, stds, weights = means.astype(dtype), stds.astype(dtype), weights.astype(dtype)
    if is_concrete(means) and not np.isfinite(np.asarray(means)).all():
        raise ValueError("means must be finite; got NaN or inf")
    if is_concrete(stds):
        s = np.asarray(stds)
        if not (np.isfinite(s).all() and (s >= 0).all()):
            raise ValueError(f"stds must be finite and >= 0 (0 is a point mass); got {s}")
    if is_concrete(weights):
        w = np.asarray(weights, np.float64)
        if not (np.isfinite(w).all() and (w >= 0).all()):
            raise ValueError(f"weights must be finite and >= 0; got {w}")
        if abs(w.sum() - 1.0) > _WEIGHT_TOL:
            raise ValueError(
                f"weights must sum to 1 (within {_WEIGHT_TOL}); got sum {w.sum():.6g}. "
                f"Normalise them: weights / weights.sum()"
            )
    return means, stds, weights


@frozen_pytree
@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixture:
    r"""Isotropic Gaussian mixture :math:`\sum_k w_k \mathcal N(m_k, s_k^2 I_d)` (a JAX pytree).

    Args:
      means: ``(K, d)`` component means :math:`m_k`.
      stds: ``(K,)`` standard deviations :math:`s_k \ge 0` (a scalar is broadcast); ``0`` is
        a point mass :math:`\delta_{m_k}`.
      weights: ``(K,)`` nonnegative, summing to 1 (within 1e-4); ``None`` means uniform.

    Raises ``ValueError`` for wrong shapes, and (when the values are concrete, i.e. outside
    ``jit``) for negative or non-finite stds/weights or weights that do not sum to 1. The
    three arrays are cast to one float dtype.

    The arrays are pytree leaves, so a mixture can be an argument of ``jax.jit`` /
    ``jax.vmap``. Rebuilding from leaves (``tree_map``, ``vmap`` axis specs) bypasses the
    validation, which runs only when you call the constructor. Mixtures compare by
    identity (``eq=False``: arrays have no boolean equality).
    """

    means: Array
    stds: Array
    weights: Array | None = None

    def __post_init__(self):
        for name, value in zip(_FIELDS, _validate(self.means, self.stds, self.weights)):
            object.__setattr__(self, name, value)

    @classmethod
    def from_points(cls, points) -> "GaussianMixture":
        """The empirical distribution :math:`\\frac1N\\sum_i \\delta_{z_i}` of ``points`` ``(N, d)``
        (point masses with equal weights): the data distribution of a finite data set."""
        points = as_float(points)
        if points.ndim != 2 or points.shape[0] < 1:
            raise ValueError(f"points must have shape (N, d) with N >= 1; got shape {tuple(points.shape)}")
        n = points.shape[0]
        return cls(points, jnp.zeros((n,), points.dtype), jnp.full((n,), 1.0 / n, points.dtype))

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample_with_labels(self, key, n: int) -> Tuple[Array, Array]:
        r"""``n`` samples ``(n, d)`` and the index ``(n,)`` of the component each came from.

        :math:`k \sim \mathrm{Cat}(w)`, :math:`z = m_k + s_k \xi`, :math:`\xi \sim \mathcal N(0, I)`.
        The component index is the label of class-conditional toy data.
        """
        k_key, x_key = jax.random.split(key)
        labels = jax.random.categorical(k_key, jnp.log(self.weights), shape=(n,))
        noise = jax.random.normal(x_key, (n, self.dim), self.means.dtype)
        return self.means[labels] + self.stds[labels, None] * noise, labels

    def sample(self, key, n: int) -> Array:
        """``n`` samples, shape ``(n, d)``."""
        return self.sample_with_labels(key, n)[0]

    def log_prob(self, x) -> Array:
        r""":math:`\log p(x) = \operatorname{logsumexp}_k [\log w_k + \log \mathcal N(x; m_k, s_k^2 I)]`.

        ``x`` has shape ``(..., d)``; returns shape ``(...)`` in the dtype of ``x``. A point
        mass has no density: its term is ``-inf`` off the point and ``+inf`` on it, so the
        result is ``-inf`` away from every atom of a purely atomic mixture.
        """
        x = as_float(x)
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (..., d) with d = {self.dim}; got shape {tuple(x.shape)}")
        dtype = jnp.promote_types(x.dtype, jnp.float32)  # half-precision squared distances overflow
        means, stds, weights = (a.astype(dtype) for a in (self.means, self.stds, self.weights))
        sq = jnp.sum((x.astype(dtype)[..., None, :] - means) ** 2, axis=-1)
        log_p = jax.nn.logsumexp(jnp.log(weights) + _log_normal(sq, stds * stds, self.dim), axis=-1)
        return log_p.astype(x.dtype)

    def mean(self) -> Array:
        r""":math:`E[z] = \sum_k w_k m_k`, shape ``(d,)``."""
        return self.weights @ self.means

    def covariance(self) -> Array:
        r""":math:`\mathrm{Cov}[z] = \sum_k w_k (s_k^2 I + m_k m_k^\top) - E[z]E[z]^\top`, shape ``(d, d)``."""
        mu = self.mean()
        second = jnp.einsum("k,ki,kj->ij", self.weights, self.means, self.means)
        return second + jnp.sum(self.weights * self.stds**2) * jnp.eye(self.dim, dtype=mu.dtype) - jnp.outer(mu, mu)

    def select(self, components) -> "GaussianMixture":
        r"""The mixture conditioned on its component lying in ``components``, weights renormalised.

        ``components`` is a boolean mask ``(K,)`` (keeps ``K``: the masked-out weights become 0,
        so it works under ``jit``/``vmap`` with a traced mask, e.g. one label per example)
        or a 1-D integer index array (gathers those components). With labels ``y`` of the
        components, ``gm.select(labels == c)`` is :math:`p_{\rm data}(\cdot|y=c)`, whose exact
        fields are the class-conditional fields used by guidance (Algorithm 8).
        Raises ``ValueError`` (when concrete) if the selection has zero total weight.
        """
        components = jnp.asarray(components)
        if components.dtype == jnp.bool_:
            if components.shape != (self.num_components,):
                raise ValueError(
                    f"a boolean mask must have shape (K,) = ({self.num_components},); got {tuple(components.shape)}"
                )
            means, stds = self.means, self.stds
            weights = jnp.where(components, self.weights, 0.0)
        elif jnp.issubdtype(components.dtype, jnp.integer) and components.ndim == 1:
            if is_concrete(components):
                idx = np.asarray(components)
                if idx.size and (idx.min() < 0 or idx.max() >= self.num_components):
                    raise ValueError(f"component indices must lie in [0, {self.num_components}); got {idx}")
            means, stds, weights = self.means[components], self.stds[components], self.weights[components]
        else:
            raise ValueError(
                f"components must be a boolean mask (K,) or a 1-D integer index array; got dtype "
                f"{components.dtype} and shape {tuple(components.shape)}"
            )
        total = jnp.sum(weights)
        if is_concrete(total) and not float(total) > 0:
            raise ValueError("the selected components have zero total weight; select at least one with w_k > 0")
        return GaussianMixture(means, stds, weights / total)


class _Terms(NamedTuple):
    """Per-component quantities at ``(x, t)``; ``(B,)``-shaped coefficients, ``(B, K)`` posteriors."""

    alpha: Array
    beta: Array
    d_alpha: Array
    d_beta: Array
    means: Array  # (K, d)
    stds2: Array  # (K,)
    var: Array  # (B, K)   v_k = alpha^2 s_k^2 + beta^2
    d_var: Array  # (B, K)  dv_k/dt = 2 alpha d_alpha s_k^2 + 2 beta d_beta
    diff: Array  # (B, K, d)  x - alpha m_k
    logits: Array  # (B, K)  log w_k + log N(x; alpha m_k, v_k I)


def _terms(sched, gm, x, t) -> Tuple[_Terms, bool, jnp.dtype]:
    """Per-component terms in float32 at least, whether ``x`` was a single point, and ``x``'s dtype."""
    if not isinstance(gm, GaussianMixture):
        raise TypeError(f"gm must be a jflow.marginals.GaussianMixture; got {type(gm).__name__}")
    x = as_float(x)
    if x.ndim not in (1, 2) or x.shape[-1] != gm.dim:
        raise ValueError(
            f"x must have shape (B, d) or (d,) with d = gm.dim = {gm.dim}; got shape {tuple(x.shape)}"
        )
    t = check_time(as_float(t))
    single = x.ndim == 1
    if single:
        if t.ndim != 0:
            raise ValueError(f"a single point x of shape (d,) needs a scalar t; got t.shape={tuple(t.shape)}")
        x = x[None]
    expand_time(t, x)  # shape check: t scalar or (B,)
    out_dtype = x.dtype
    dtype = jnp.promote_types(x.dtype, jnp.float32)  # accumulate half-precision inputs in float32
    x = x.astype(dtype)
    t = jnp.broadcast_to(t.astype(dtype), x.shape[:1])
    alpha, beta, d_alpha, d_beta = (jnp.asarray(c).astype(dtype) for c in derivatives(sched, t))
    means = gm.means.astype(dtype)
    stds2 = gm.stds.astype(dtype) ** 2
    a = alpha[:, None]
    var = a * a * stds2 + (beta * beta)[:, None]
    d_var = 2.0 * (a * d_alpha[:, None] * stds2 + (beta * d_beta)[:, None])
    diff = x[:, None, :] - alpha[:, None, None] * means
    sq = jnp.sum(diff * diff, axis=-1)
    logits = jnp.log(gm.weights.astype(dtype)) + _log_normal(sq, var, gm.dim)
    return _Terms(alpha, beta, d_alpha, d_beta, means, stds2, var, d_var, diff, logits), single, out_dtype


def _squeeze(value, single, dtype):
    return (value[0] if single else value).astype(dtype)


def marginal_log_prob(sched, gm: GaussianMixture, x, t) -> Array:
    r"""Log-density of the marginal path :math:`p_t(x) = \int p_t(x|z) p_{\rm data}(z) dz`:

    .. math:: \log p_t(x) = \operatorname{logsumexp}_k\big[\log w_k + \log\mathcal N(x; \alpha_t m_k, v_k I)\big],
              \quad v_k = \alpha_t^2 s_k^2 + \beta_t^2.

    Flow time (``t = 0`` noise, ``t = 1`` data): equals ``gm.log_prob`` at ``t = 1`` and the
    :math:`\mathcal N(0, I)` log-density at ``t = 0`` when :math:`\alpha_0 = 0`. Returns ``(B,)``.
    """
    terms, single, dtype = _terms(sched, gm, x, t)
    return _squeeze(jax.nn.logsumexp(terms.logits, axis=-1), single, dtype)


def posterior_weights(sched, gm: GaussianMixture, x, t) -> Array:
    r"""Posterior over components :math:`P(k | x_t = x) = w_k \mathcal N(x; \alpha_t m_k, v_k I) / p_t(x)`,
    shape ``(B, K)`` (a softmax of log-densities: exact for large ``d``). Flow time."""
    terms, single, dtype = _terms(sched, gm, x, t)
    return _squeeze(jax.nn.softmax(terms.logits, axis=-1), single, dtype)


def _field(terms: _Terms, parameterization: str) -> Array:
    w = jax.nn.softmax(terms.logits, axis=-1)  # (B, K)
    if parameterization == "score":  # E[-(x - alpha z)/beta^2 | x] = sum_k w_k (-(x - alpha m_k) / v_k)
        return -jnp.einsum("bk,bkd->bd", w / terms.var, terms.diff)
    if parameterization == "noise":  # E[eps | x, k] = beta (x - alpha m_k) / v_k
        return jnp.einsum("bk,bkd->bd", w * terms.beta[:, None] / terms.var, terms.diff)
    mean_part = w @ terms.means  # sum_k w_k m_k
    if parameterization == "data":  # E[z | x, k] = m_k + alpha s_k^2 (x - alpha m_k) / v_k
        coeff = w * terms.alpha[:, None] * terms.stds2 / terms.var
        return mean_part + jnp.einsum("bk,bkd->bd", coeff, terms.diff)
    # velocity: sum_k w_k [d_alpha m_k + dv_k/dt / (2 v_k) (x - alpha m_k)]
    coeff = w * terms.d_var / (2.0 * terms.var)
    return terms.d_alpha[:, None] * mean_part + jnp.einsum("bk,bkd->bd", coeff, terms.diff)


def marginal_field(sched, gm: GaussianMixture, x, t, parameterization: str) -> Array:
    r"""The exact marginal field of the Gaussian-mixture path in any parameterisation.

    With :math:`w_k(x) = P(k|x_t = x)` (:func:`posterior_weights`) and
    :math:`v_k = \alpha_t^2 s_k^2 + \beta_t^2`, each is a posterior-weighted average of the
    per-component fields (marginalisation trick, module docstring):

    - ``velocity``: :math:`u_t(x) = \sum_k w_k(x)\,[\dot\alpha_t m_k + \frac{\dot v_k}{2 v_k}(x - \alpha_t m_k)]`,
      :math:`\dot v_k = 2\alpha_t\dot\alpha_t s_k^2 + 2\beta_t\dot\beta_t`;
    - ``score``: :math:`\nabla\log p_t(x) = -\sum_k w_k(x)\,(x - \alpha_t m_k)/v_k`;
    - ``noise``: :math:`E[\epsilon|x_t = x] = \sum_k w_k(x)\,\beta_t (x - \alpha_t m_k)/v_k`;
    - ``data``: :math:`E[z|x_t = x] = \sum_k w_k(x)\,[m_k + \alpha_t s_k^2 (x - \alpha_t m_k)/v_k]`.

    These are the four targets of :mod:`jflow.paths` (``paths.convert`` maps one to
    another). Flow time; ``x`` ``(B, d)``, ``t`` scalar or ``(B,)``; returns ``(B, d)``.
    """
    check_choice(parameterization, ("velocity", "score", "noise", "data"), "parameterization")
    terms, single, dtype = _terms(sched, gm, x, t)
    return _squeeze(_field(terms, parameterization), single, dtype)


def marginal_velocity(sched, gm: GaussianMixture, x, t) -> Array:
    r"""Marginal vector field :math:`u_t(x) = \int u_t(x|z)\, p_t(x|z) p_{\rm data}(z) / p_t(x)\, dz`
    (lecture 2, eq. (32)), in closed form for a Gaussian mixture:

    .. math:: u_t(x) = \sum_k w_k(x)\Big[\dot\alpha_t m_k + \frac{\dot v_k}{2 v_k}(x - \alpha_t m_k)\Big],
              \quad \dot v_k = 2\alpha_t\dot\alpha_t s_k^2 + 2\beta_t\dot\beta_t,

    the posterior average of the fields of the Gaussian paths :math:`\mathcal N(\alpha_t m_k, v_k I)`
    of the components. Its ODE, started from :math:`p_{\rm init}` at ``t = 0``, has
    marginals :math:`p_t` and reaches :math:`p_{\rm data}` at ``t = 1`` (flow time). Satisfies
    the continuity equation :math:`\partial_t p_t = -\mathrm{div}(p_t u_t)`.
    ``x`` ``(B, d)``, ``t`` scalar or ``(B,)``; returns ``(B, d)``.
    """
    return marginal_field(sched, gm, x, t, "velocity")


def marginal_score(sched, gm: GaussianMixture, x, t) -> Array:
    r"""Marginal score :math:`\nabla\log p_t(x) = \int \nabla\log p_t(x|z)\, p_t(x|z) p_{\rm data}(z)/p_t(x)\, dz`:

    .. math:: \nabla\log p_t(x) = -\sum_k w_k(x)\,\frac{x - \alpha_t m_k}{v_k},
              \quad v_k = \alpha_t^2 s_k^2 + \beta_t^2.

    Flow time; ``x`` ``(B, d)``, ``t`` scalar or ``(B,)``; returns ``(B, d)``.
    """
    return marginal_field(sched, gm, x, t, "score")


def posterior_mean(sched, gm: GaussianMixture, x, t) -> Array:
    r"""Denoiser :math:`E[z | x_t = x] = \sum_k w_k(x)\,[m_k + \alpha_t s_k^2 (x - \alpha_t m_k)/v_k]`
    (the optimal ``data`` / x-prediction). Flow time; returns ``(B, d)``."""
    return marginal_field(sched, gm, x, t, "data")
