r"""Gaussian conditional probability paths, their fields, and conversions between parameterisations.

Flow time: ``t = 0`` is noise, ``t = 1`` is data. For a scheduler ``(alpha_t, beta_t)``
the conditional path is :math:`p_t(x|z) = \mathcal N(\alpha_t z, \beta_t^2 I)`, sampled as

.. math:: x_t = \alpha_t z + \beta_t \epsilon, \qquad \epsilon \sim \mathcal N(0, I).

Shapes: ``x``, ``z``, ``eps`` share one shape with the batch axis first; ``t`` is a scalar
or has shape ``(B,)`` and broadcasts over the trailing axes. Outside ``jit``, a ``t``
outside ``[0, 1]`` raises ``ValueError``.

Four parameterisations of a network output on a Gaussian path (lecture "conversion
formula for DDMs"), each a linear function of the posterior means
:math:`\hat z = E[z | x_t = x]` and :math:`\hat\epsilon = E[\epsilon | x_t = x]`, which
satisfy :math:`x = \alpha_t \hat z + \beta_t \hat\epsilon`:

============ ================================================ ===========================
name          meaning                                           in terms of (z_hat, eps_hat)
============ ================================================ ===========================
``velocity``  :math:`u_t(x)`                                    :math:`\dot\alpha_t \hat z + \dot\beta_t \hat\epsilon`
``score``     :math:`\nabla \log p_t(x)`                         :math:`-\hat\epsilon / \beta_t`
``noise``     :math:`\epsilon_t(x)` ("epsilon prediction")       :math:`\hat\epsilon`
``data``      :math:`z_t(x)` ("x-prediction")                    :math:`\hat z`
============ ================================================ ===========================

The same table holds for conditional quantities (``z_hat = z``, ``eps_hat = eps``) and
for the marginal ones, which is why :func:`convert` works for trained networks.
"""
from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp

from jflow._checks import as_float, check_choice, check_same_shape, check_time, expand_time
from jflow.schedulers import derivatives

Array = jax.Array

PARAMETERIZATIONS = ("velocity", "score", "noise", "data")

__all__ = [
    "PARAMETERIZATIONS",
    "sample_conditional",
    "path_velocity",
    "conditional_velocity",
    "conditional_score",
    "conditional_target",
    "convert",
    "bridge",
    "brownian_bridge_noise",
    "constant_noise",
]


def _coeffs(sched, x, t):
    t = expand_time(check_time(t), x)
    alpha, beta, d_alpha, d_beta = derivatives(sched, t)
    return alpha, beta, d_alpha, d_beta


def sample_conditional(sched, z, eps, t) -> Array:
    r"""A sample of :math:`p_t(\cdot|z)`: :math:`x_t = \alpha_t z + \beta_t \epsilon`.

    ``eps`` is a standard normal draw of the shape of ``z`` (or, to bridge two arbitrary
    distributions, a sample ``x0`` of ``p_init``; see :func:`bridge`).
    """
    check_same_shape(z=z, eps=eps)
    t = expand_time(check_time(t), z)
    alpha, beta = sched(t)
    return alpha * z + beta * eps


def path_velocity(sched, z, eps, t) -> Array:
    r""":math:`\frac{d}{dt}(\alpha_t z + \beta_t \epsilon) = \dot\alpha_t z + \dot\beta_t \epsilon`.

    The conditional vector field evaluated *on* the path :math:`x = \alpha_t z + \beta_t\epsilon`,
    written with ``eps`` instead of ``x``: equal to :func:`conditional_velocity` there, and
    finite at ``t = 1`` where that form divides by :math:`\beta_1 = 0`. This is the
    regression target of flow matching (Algorithm 4: :math:`z - \epsilon` for CondOT).
    """
    check_same_shape(z=z, eps=eps)
    _, _, d_alpha, d_beta = _coeffs(sched, z, t)
    return d_alpha * z + d_beta * eps


def conditional_velocity(sched, x, z, t) -> Array:
    r"""Conditional vector field of the Gaussian path (lecture 2):

    .. math:: u_t(x|z) = \Big(\dot\alpha_t - \frac{\dot\beta_t}{\beta_t}\alpha_t\Big) z
                         + \frac{\dot\beta_t}{\beta_t} x.

    Singular at :math:`\beta_t = 0` (``t = 1``) for any ``x``: there every ``x`` but
    :math:`\alpha_1 z` is off the path. Use :func:`path_velocity` for points on the path.
    """
    check_same_shape(x=x, z=z)
    alpha, beta, d_alpha, d_beta = _coeffs(sched, x, t)
    ratio = d_beta / beta
    return (d_alpha - ratio * alpha) * z + ratio * x


def conditional_score(sched, x, z, t) -> Array:
    r"""Conditional score of the Gaussian path: :math:`\nabla_x \log p_t(x|z) = -\frac{x - \alpha_t z}{\beta_t^2}`.

    Singular at :math:`\beta_t = 0` (``t = 1``).
    """
    check_same_shape(x=x, z=z)
    alpha, beta = sched(expand_time(check_time(t), x))
    return -(x - alpha * z) / (beta * beta)


def conditional_target(sched, z, eps, t, parameterization: str) -> Array:
    r"""The regression target of each parameterisation at :math:`x_t = \alpha_t z + \beta_t\epsilon`:

    ``velocity``: :math:`\dot\alpha_t z + \dot\beta_t \epsilon` (flow matching, Algorithms 3-4);
    ``score``: :math:`-\epsilon / \beta_t` (denoising score matching, Algorithm 5; singular at ``t = 1``);
    ``noise``: :math:`\epsilon` (DDPM noise prediction); ``data``: :math:`z`.
    """
    check_choice(parameterization, PARAMETERIZATIONS, "parameterization")
    check_same_shape(z=z, eps=eps)
    if parameterization == "velocity":
        return path_velocity(sched, z, eps, t)
    if parameterization == "score":
        _, beta = sched(expand_time(check_time(t), z))
        return -eps / beta
    return eps if parameterization == "noise" else z


def _rep(name, alpha, beta, d_alpha, d_beta) -> Tuple[Array, Array]:
    """Coefficients (a, b) with representation = a * z_hat + b * eps_hat (score scaled by beta)."""
    one, zero = jnp.ones_like(alpha), jnp.zeros_like(alpha)
    return {
        "velocity": (d_alpha, d_beta),
        "score": (zero, -one),  # beta * score = -eps_hat; the 1/beta is applied outside
        "noise": (zero, one),
        "data": (one, zero),
    }[name]


def convert(sched, value, x, t, *, source: str, target: str) -> Array:
    r"""Convert a prediction at ``(x, t)`` between ``velocity``, ``score``, ``noise``, ``data``.

    Each representation is :math:`r = a\hat z + b\hat\epsilon` (module table) and
    :math:`x = \alpha_t\hat z + \beta_t\hat\epsilon`. Solving the 2x2 system for the source
    :math:`(a, b)` and re-combining with the target :math:`(c, d)` gives, with
    :math:`\Delta = a\beta_t - b\alpha_t`,

    .. math:: r_{\rm target} = \frac{(c\beta_t - d\alpha_t)\, r_{\rm source} + (d a - c b)\, x}{\Delta}.

    The score is handled as :math:`\beta_t\nabla\log p_t = -\hat\epsilon`. Special cases are
    the lecture's formulas, e.g. score to velocity
    :math:`u_t = (\beta_t^2 \dot\alpha_t/\alpha_t - \dot\beta_t\beta_t)\nabla\log p_t + (\dot\alpha_t/\alpha_t) x`
    and data to velocity :math:`u_t = (\dot\alpha_t - \alpha_t\dot\beta_t/\beta_t)\hat z + (\dot\beta_t/\beta_t) x`.

    Where the conversion is defined (returned finite), for schedulers with finite derivatives:

    - ``velocity -> data`` and ``velocity -> noise``: every t, as long as
      :math:`\Delta = \dot\alpha_t\beta_t - \dot\beta_t\alpha_t \ne 0` (true for increasing alpha and
      decreasing beta, except where both derivatives vanish, e.g. ``PolynomialScheduler(n > 1)`` at ``t = 0``).
    - ``data -> noise``, ``data -> velocity``, and anything ``-> score``: need :math:`\beta_t > 0` (not ``t = 1``).
    - ``noise -> data``, ``noise -> velocity``, ``score -> data``, ``score -> velocity``:
      need :math:`\alpha_t > 0` (not ``t = 0``: the prediction no longer carries the data).
    - ``score -> noise`` (:math:`\hat\epsilon = -\beta_t \nabla\log p_t`): every t.

    At a singular endpoint the result is inf or NaN because the quantity is genuinely
    undetermined there (it depends on information the source does not hold).
    """
    check_choice(source, PARAMETERIZATIONS, "source parameterization")
    check_choice(target, PARAMETERIZATIONS, "target parameterization")
    check_same_shape(value=value, x=x)
    if source == target:
        return value
    alpha, beta, d_alpha, d_beta = _coeffs(sched, x, t)
    if {source, target} == {"score", "noise"}:  # eps_hat = -beta * score: no division by alpha
        return -beta * value if source == "score" else -value / beta
    if source == "score":
        value = beta * value
    a, b = _rep(source, alpha, beta, d_alpha, d_beta)
    c, d = _rep(target, alpha, beta, d_alpha, d_beta)
    det = a * beta - b * alpha
    out = ((c * beta - d * alpha) * value + (d * a - c * b) * x) / det
    return out / beta if target == "score" else out


def brownian_bridge_noise(sigma):
    r"""Path noise of a Brownian bridge with diffusion coefficient ``sigma`` (SB-CFM), for :func:`bridge`.

    Returns ``path_noise(t) -> (gamma_t, d gamma_t / dt)`` with

    .. math:: \gamma_t = \sigma\sqrt{t(1-t)}, \qquad
              \dot\gamma_t = \sigma\frac{1 - 2t}{2\sqrt{t(1-t)}}.

    :math:`\dot\gamma_t` is infinite at ``t = 0`` and ``t = 1``, where the noise vanishes;
    there the noise velocity is set to its conditional mean 0 (``t`` exactly 0 or 1 is a
    null set of ``Unif[0, 1]``; torchcfm instead adds ``1e-8`` to the denominator).
    ``sigma`` may be a traced array.
    """
    sigma = as_float(sigma)

    def path_noise(t):
        t = as_float(t)
        var = t * (1.0 - t)
        inner = var > 0
        root = jnp.sqrt(jnp.where(inner, var, 1.0))
        gamma = sigma * jnp.sqrt(jnp.maximum(var, 0.0))
        return gamma, jnp.where(inner, sigma * (1.0 - 2.0 * t) / (2.0 * root), 0.0)

    return path_noise


def constant_noise(sigma):
    r"""Constant path noise :math:`\gamma_t = \sigma`, :math:`\dot\gamma_t = 0` for :func:`bridge` (the
    ``sigma`` of torchcfm's I-CFM / OT-CFM, a Gaussian smoothing of both ends)."""
    sigma = as_float(sigma)

    def path_noise(t):
        t = as_float(t)
        return sigma * jnp.ones_like(t), jnp.zeros_like(t) * sigma

    return path_noise


def bridge(sched, x0, z, t, *, path_noise=None, noise=None) -> Tuple[Array, Array]:
    r"""Bridging arbitrary distributions: the conditional path from a source sample ``x0`` to ``z``.

    Conditioning on the pair :math:`(x_0, z) \sim p_{\rm init} \times p_{\rm data}` (or any
    coupling, :mod:`jflow.couplings`), the path :math:`x_t = \alpha_t z + \beta_t x_0` runs from
    :math:`x_0` at ``t = 0`` to :math:`z` at ``t = 1`` with conditional velocity
    :math:`u_t(x|x_0, z) = \dot\alpha_t z + \dot\beta_t x_0` (``z - x0`` for CondOT). ``x0`` takes
    the place of ``eps`` of :func:`sample_conditional` (the same convention as ``make_loss``
    with ``batch["x0"]``). Flow matching on these pairs learns a flow from
    :math:`p_{\rm init}` to :math:`p_{\rm data}` for any :math:`p_{\rm init}`.

    **Path noise** (stochastic interpolant, Albergo & Vanden-Eijnden 2023): with
    ``path_noise(t) -> (gamma_t, d_gamma_t)`` (:func:`brownian_bridge_noise`,
    :func:`constant_noise`) and a standard normal ``noise`` :math:`\xi` of the shape of ``z``,

    .. math:: x_t = \alpha_t z + \beta_t x_0 + \gamma_t \xi, \qquad
              u_t = \dot\alpha_t z + \dot\beta_t x_0 + \dot\gamma_t \xi,

    the time derivative of the path at fixed :math:`(x_0, z, \xi)`. For the CondOT scheduler
    and the Brownian bridge :math:`\gamma_t = \sigma\sqrt{t(1-t)}` this is SB-CFM's path and
    target (Tong et al. 2023, eqs. 20-21):
    :math:`u_t = x_1 - x_0 + \frac{1 - 2t}{2t(1-t)}\big(x_t - (t x_1 + (1-t) x_0)\big)`.

    Returns ``(x_t, u_t)``. ``t`` in flow time (0 source, 1 data), scalar or ``(B,)``.
    """
    check_same_shape(x0=x0, z=z)
    alpha, beta, d_alpha, d_beta = _coeffs(sched, z, t)
    x_t, u_t = alpha * z + beta * x0, d_alpha * z + d_beta * x0
    if path_noise is None:
        if noise is not None:
            raise ValueError("noise is only used with path_noise; pass path_noise=brownian_bridge_noise(sigma)")
        return x_t, u_t
    if noise is None:
        raise ValueError("path_noise needs noise: a standard normal draw xi of the shape of z")
    check_same_shape(z=z, noise=noise)
    gamma, d_gamma = (jnp.asarray(v).astype(z.dtype) for v in path_noise(expand_time(check_time(t), z)))
    return x_t + gamma * noise, u_t + d_gamma * noise
