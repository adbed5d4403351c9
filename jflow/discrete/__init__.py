r"""Discrete flow matching on token sequences: the factorized mixture path (Gat et al. 2024).

The state is a sequence :math:`x = (x^1, \dots, x^D)` of tokens :math:`x^i \in \{0, \dots, V-1\}`
(batch-first arrays ``(B, D)`` of integers; any trailing shape ``(B, ...)`` works the same way).
Flow time: ``t = 0`` is the source (noise), ``t = 1`` is data. Discrete flow matching
(Gat et al. 2024, "Discrete Flow Matching"; Campbell et al. 2024, "Generative Flows on
Discrete State-Spaces") replaces the Gaussian path by a **factorized mixture path**: given a
source sequence :math:`x_0` and a data sequence :math:`x_1`, every token independently is

.. math:: p_t(x^i \mid x_0, x_1) = (1 - \kappa_t)\,\delta_{x_0^i}(x^i) + \kappa_t\,\delta_{x_1^i}(x^i),

i.e. token ``i`` has already jumped from :math:`x_0^i` to :math:`x_1^i` with probability
:math:`\kappa_t`. The scheduler :math:`\kappa_t` increases from :math:`\kappa_0 = 0` to
:math:`\kappa_1 = 1` (:class:`PolynomialKappa`: :math:`\kappa_t = t^n`).

**Sources** (:func:`sample_source`): ``"mask"``, every token the mask id ``V`` (so a model
reads ``V + 1`` input symbols and predicts ``V`` classes; masked/absorbing diffusion), or
``"uniform"``, tokens i.i.d. uniform on ``{0, ..., V-1}``.

**Training** (:func:`make_discrete_loss`): a model ``logits_fn(params, x_t, t)`` returns
logits ``(B, D, V)`` of the posterior :math:`p^\theta_{1|t}(x_1^i \mid x_t)`; the loss is the
cross-entropy

.. math:: \mathcal L(\theta) = \mathbb E_{t, x_0, x_1, x_t}\ \frac1D \sum_{i=1}^D
          -\log p^\theta_{1|t}(x_1^i \mid x_t),

averaged over the batch and the tokens (flow_matching's ``MixturePathGeneralizedKL`` is
*not* this loss: see below).

**Sampling** (:func:`discrete_euler`): the probability velocity (the rate of a
continuous-time Markov chain) of the mixture path is, per token,

.. math:: u_t^i(y \mid x_t) = \frac{\dot\kappa_t}{1 - \kappa_t}\,
          \big(p_{1|t}(y \mid x_t) - \delta_{x_t^i}(y)\big)

(:func:`probability_velocity`), and the Euler step
:math:`x_{t+h}^i \sim \delta_{x_t^i} + h\,u_t^i(\cdot \mid x_t)` is: draw
:math:`\hat x_1^i \sim p_{1|t}(\cdot \mid x_t)`, and with probability
:math:`\min(1, h\,\dot\kappa_t / (1 - \kappa_t))` set :math:`x^i = \hat x_1^i`, else keep
:math:`x^i`. A step that ends at ``t = 1`` jumps with probability 1.
``method="ancestral"`` jumps with probability :math:`(\kappa_{t+h} - \kappa_t)/(1 - \kappa_t)`
instead (masked diffusion's ancestral step; the same as Euler for :math:`\kappa_t = t`).

For factorized data :math:`p_{\rm data}(x) = \prod_i p^i(x^i)` the posterior is known in closed
form (:func:`factorized_posterior_logits`): with the mask source
:math:`p_{1|t}(y \mid x_t) = \delta_{x_t^i}(y)` for an unmasked token and :math:`p^i(y)` for a
masked one; with the uniform source
:math:`p_{1|t}(y \mid x_t) \propto p^i(y)\,\big((1 - \kappa_t)/V + \kappa_t\,\delta_{x_t^i}(y)\big)`.

Not implemented: the generalized KL loss of Gat et al. (the ELBO-weighted objective, which
needs :math:`\dot\kappa_t / (1-\kappa_t)` weights), paths that are not factorized or mix more
than two distributions (e.g. metric-induced paths), corrector / forward-backward sampling
(Gat et al. Sec. 3.3), adaptive step sizes, and conditioning labels
in :func:`make_discrete_loss` (close over them in ``logits_fn``).
"""
from jflow.discrete.loss import make_discrete_loss, token_cross_entropy
from jflow.discrete.path import SOURCES, Kappa, PolynomialKappa, kappa_derivatives, mask_id, sample_mixture_path, sample_source
from jflow.discrete.sampling import DISCRETE_METHODS, discrete_euler, factorized_posterior_logits, probability_velocity

__all__ = [
    "SOURCES",
    "DISCRETE_METHODS",
    "Kappa",
    "PolynomialKappa",
    "kappa_derivatives",
    "mask_id",
    "sample_source",
    "sample_mixture_path",
    "token_cross_entropy",
    "make_discrete_loss",
    "probability_velocity",
    "factorized_posterior_logits",
    "discrete_euler",
]
