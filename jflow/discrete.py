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
from __future__ import annotations

import abc
from typing import Callable, Mapping, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import (
    as_float,
    check_choice,
    check_positive_int,
    check_time,
    expand_time,
    frozen_pytree,
    is_concrete,
)
from jflow.grids import check_grid_values
from jflow.time_sampling import TIME_SAMPLING, check_time_range, sample_time

Array = jax.Array

SOURCES = ("mask", "uniform")
DISCRETE_METHODS = ("euler", "ancestral")

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


# --------------------------------------------------------------------------------------
# kappa schedulers
# --------------------------------------------------------------------------------------


class Kappa(abc.ABC):
    r"""Base class of mixture-path schedulers :math:`\kappa_t`, increasing, :math:`\kappa_0 = 0,\ \kappa_1 = 1`.

    Subclasses implement ``kappa(t)`` (elementwise) and may override ``derivative(t)``
    (default: ``jax.jvp``). ``k(t)`` casts ``t`` to a float array first.
    """

    @abc.abstractmethod
    def kappa(self, t: Array) -> Array:
        """:math:`\\kappa_t` for a float array ``t`` (elementwise)."""

    def __call__(self, t) -> Array:
        return self.kappa(as_float(t))

    def derivative(self, t) -> Array:
        r""":math:`\dot\kappa_t` (forward-mode autodiff unless overridden)."""
        t = as_float(t)
        return jax.jvp(self.kappa, (t,), (jnp.ones_like(t),))[1]


def _finite_positive(value) -> bool:
    v = np.asarray(value, np.float64)
    return bool(np.all(np.isfinite(v)) and np.all(v > 0))


@frozen_pytree
class PolynomialKappa(Kappa):
    r""":math:`\kappa_t = t^n`, :math:`\dot\kappa_t = n\,t^{n-1}`, for an exponent ``n > 0``.

    ``exponent=1`` is the linear path (:math:`\dot\kappa_t/(1-\kappa_t) = 1/(1-t)`); larger
    exponents keep tokens at the source longer. For ``n < 1`` the rate is infinite at ``t = 0``,
    so :func:`discrete_euler` refuses a grid that starts there.
    """

    exponent: float = 1.0

    def __post_init__(self):
        if is_concrete(self.exponent) and not _finite_positive(self.exponent):
            raise ValueError(
                f"PolynomialKappa needs a finite exponent > 0 (kappa_t = t**exponent); got {self.exponent}"
            )

    def kappa(self, t):
        return t**self.exponent

    def derivative(self, t):
        t = as_float(t)
        return self.exponent * t ** (self.exponent - 1.0)


def kappa_derivatives(kappa: Callable, t) -> Tuple[Array, Array]:
    r"""``(kappa_t, d_kappa_t)`` elementwise over ``t`` (flow time: 0 source, 1 data).

    Uses ``kappa.derivative`` when it exists (every :class:`Kappa`), else ``jax.jvp``, so any
    elementwise callable ``t -> kappa_t`` is accepted.
    """
    t = as_float(t)
    value = jnp.asarray(kappa(t)).astype(t.dtype)
    method = getattr(kappa, "derivative", None)
    if method is not None:
        return value, jnp.asarray(method(t)).astype(t.dtype)
    return value, jax.jvp(lambda s: jnp.asarray(kappa(s)).astype(t.dtype), (t,), (jnp.ones_like(t),))[1]


def _check_kappa(kappa):
    if not callable(kappa):
        raise ValueError(f"kappa must be a scheduler t -> kappa_t such as PolynomialKappa(1.0); got {kappa!r}")


# --------------------------------------------------------------------------------------
# sources and the mixture path
# --------------------------------------------------------------------------------------


def mask_id(vocab_size: int) -> int:
    """The mask token of a vocabulary of ``vocab_size`` data tokens: ``vocab_size`` itself."""
    return check_positive_int(vocab_size, "vocab_size")


def _check_vocab(vocab_size) -> int:
    return check_positive_int(vocab_size, "vocab_size", why="the number of data tokens V; the mask id is V")


def sample_source(key, kind: str, shape, vocab_size: int, dtype=jnp.int32) -> Array:
    """Source tokens of shape ``shape``: ``"mask"`` (all equal to the mask id ``vocab_size``) or
    ``"uniform"`` (i.i.d. uniform on ``{0, ..., vocab_size - 1}``)."""
    check_choice(kind, SOURCES, "source")
    vocab_size = _check_vocab(vocab_size)
    shape = tuple(shape)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"dtype must be an integer dtype (token ids); got {jnp.dtype(dtype)}")
    if jnp.iinfo(dtype).max < vocab_size:
        raise ValueError(f"dtype {jnp.dtype(dtype)} cannot hold the mask id {vocab_size}; use int32")
    if kind == "mask":
        return jnp.full(shape, vocab_size, dtype)
    return jax.random.randint(key, shape, 0, vocab_size, dtype)


def _check_tokens(x, name: str, *, hi: int | None = None, what: str = "") -> Array:
    """``x`` as an integer array with a batch axis; values in ``[0, hi)`` when concrete and ``hi`` given."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise ValueError(
            f"{name} must hold integer token ids; got dtype {x.dtype}. Cast it, e.g. "
            f"{name}.astype(jnp.int32) (discrete flow matching works on tokens, not floats)"
        )
    if x.ndim == 0:
        raise ValueError(f"{name} must have a batch axis first, shape (B, D); got a scalar")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {x.shape}); need B >= 1 sequences")
    if hi is not None and is_concrete(x) and x.size:
        lo_v, hi_v = int(np.min(np.asarray(x))), int(np.max(np.asarray(x)))
        if lo_v < 0 or hi_v >= hi:
            raise ValueError(f"{name} must hold token ids in [0, {hi}){what}; got values in [{lo_v}, {hi_v}]")
    return x


def _check_path_time(t, x) -> Array:
    t = as_float(t)
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != x.shape[0]):
        raise ValueError(f"t must be a scalar or have shape (B,) = ({x.shape[0]},); got shape {t.shape}")
    return check_time(t)


def sample_mixture_path(key, kappa: Callable, x0, x1, t) -> Array:
    r"""Draw :math:`x_t \sim p_t(\cdot \mid x_0, x_1)`: token ``i`` is :math:`x_1^i` with probability
    :math:`\kappa_t`, else :math:`x_0^i`, independently over tokens.

    Args:
      key: a ``jax.random`` key.
      kappa: the scheduler, e.g. :class:`PolynomialKappa`.
      x0, x1: integer tokens of one shape ``(B, D)`` (source and data).
      t: flow time (0 source, 1 data), a scalar or shape ``(B,)``.

    Returns integer tokens of the shape of ``x1``, in the promoted dtype of ``x0`` and ``x1``.
    """
    _check_kappa(kappa)
    x0 = _check_tokens(x0, "x0")
    x1 = _check_tokens(x1, "x1")
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape; got x0.shape={x0.shape}, x1.shape={x1.shape}")
    t = _check_path_time(t, x1)
    t = t.astype(jnp.promote_types(t.dtype, jnp.float32))  # at least float32 for the coin flips
    k = expand_time(jnp.asarray(kappa(t)), x1)
    coin = jax.random.uniform(key, x1.shape, t.dtype)
    dtype = jnp.promote_types(x0.dtype, x1.dtype)
    return jnp.where(coin < k, x1.astype(dtype), x0.astype(dtype))


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------


def token_cross_entropy(logits, tokens) -> Array:
    r"""Per-token :math:`-\log \mathrm{softmax}(\text{logits})[x_1^i]`, shape of ``tokens``.

    ``logits`` has shape ``tokens.shape + (V,)``; computed in at least float32.
    """
    logits = jnp.asarray(logits)
    tokens = jnp.asarray(tokens)
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(f"logits must have shape tokens.shape + (V,) = {tokens.shape} + (V,); got {logits.shape}")
    logp = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
    return -jnp.take_along_axis(logp, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]


def make_discrete_loss(
    logits_fn: Callable,
    kappa: Callable,
    *,
    vocab_size: int,
    source: str = "mask",
    time_sampling: str = "uniform",
    t_min=0.0,
    t_max=1.0,
) -> Callable:
    r"""Build the cross-entropy loss of discrete flow matching, ``loss(params, batch, key) -> (loss, metrics)``.

    The signature of :func:`jflow.losses.make_loss`'s loss, so it plugs into
    :func:`jflow.train.make_train_step`. One call:

    1. ``key_t, key_src, key_path = jax.random.split(key, 3)``;
    2. ``t = sample_time(key_t, B, method=time_sampling, t_min=t_min, t_max=t_max)``, float32
       (flow time: 0 source, 1 data);
    3. ``x0 = batch["x0"]`` if given, else ``sample_source(key_src, source, x1.shape, vocab_size)``;
    4. ``x_t = sample_mixture_path(key_path, kappa, x0, x1, t)``;
    5. ``logits = logits_fn(params, x_t, t)``, shape ``(B, D, V)``, the posterior
       :math:`p^\theta_{1|t}(\cdot \mid x_t)` of every token;
    6. ``loss = mean(token_cross_entropy(logits, x1))`` over batch and tokens.

    Args:
      logits_fn: the model, ``logits_fn(params, x_t, t)`` with ``x_t`` integer tokens
        ``(B, D)`` (values in ``[0, V]`` for the mask source: ``V + 1`` input symbols) and ``t``
        of shape ``(B,)``; returns logits ``(B, D, V)`` over the ``V`` data tokens.
      kappa: the mixture-path scheduler, e.g. ``PolynomialKappa(1.0)``.
      vocab_size: ``V``, the number of data tokens.
      source: ``"mask"`` or ``"uniform"`` (:func:`sample_source`).
      time_sampling: a method of :func:`jflow.time_sampling.sample_time`.
      t_min, t_max: the training time range, ``0 <= t_min < t_max <= 1``. The cross-entropy is
        finite on all of ``[0, 1]`` (unlike the Gaussian score target), so the default is the
        whole interval; :func:`discrete_euler` never queries the model at ``t = 1``.

    Returns:
      ``loss(params, batch, key)``: ``batch["x"]`` holds data tokens, integers in ``[0, V)``
      of shape ``(B, D)`` (checked outside ``jit``); optional ``batch["x0"]`` holds source
      tokens of the same shape (e.g. a partially masked prompt). Metrics: ``"loss"`` and
      ``"accuracy"`` (fraction of tokens whose argmax is :math:`x_1^i`).

    Names and ranges are validated here; dtypes and shapes when ``loss`` is traced; token
    values only when concrete.
    """
    if not callable(logits_fn):
        raise ValueError(f"logits_fn must be callable as logits_fn(params, x_t, t); got {logits_fn!r}")
    _check_kappa(kappa)
    vocab_size = _check_vocab(vocab_size)
    check_choice(source, SOURCES, "source")
    check_choice(time_sampling, TIME_SAMPLING, "time_sampling")
    check_time_range(t_min, t_max)

    def loss(params, batch, key):
        if not isinstance(batch, Mapping) or "x" not in batch:
            raise ValueError("batch must be a dict with the data tokens under 'x' (and optional source tokens under 'x0')")
        x1 = _check_tokens(batch["x"], "batch['x']", hi=vocab_size, what=" (vocab_size data tokens)")
        x1 = x1.astype(jnp.promote_types(x1.dtype, jnp.int32))  # room for the mask id V (uint8 data, V = 256)
        key_t, key_src, key_path = jax.random.split(key, 3)
        t = sample_time(key_t, x1.shape[0], method=time_sampling, t_min=t_min, t_max=t_max, dtype=jnp.float32)
        if batch.get("x0") is not None:
            x0 = _check_tokens(batch["x0"], "batch['x0']", hi=vocab_size + 1, what=" (data tokens or the mask id V)")
            if x0.shape != x1.shape:
                raise ValueError(f"batch['x0'] must have the shape of batch['x'], {x1.shape}; got {x0.shape}")
        else:
            x0 = sample_source(key_src, source, x1.shape, vocab_size, x1.dtype)
        x_t = sample_mixture_path(key_path, kappa, x0, x1, t)
        logits = jnp.asarray(logits_fn(params, x_t, t))
        want = x1.shape + (vocab_size,)
        if logits.shape != want:
            raise ValueError(
                f"logits_fn returned shape {logits.shape}; it must return logits of shape (B, D, V) = {want} "
                f"over the V = {vocab_size} data tokens (the mask id V is an input symbol, never a class)"
            )
        value = jnp.mean(token_cross_entropy(logits, x1))
        accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == x1).astype(jnp.float32))
        return value, {"loss": value, "accuracy": accuracy}

    return loss


# --------------------------------------------------------------------------------------
# velocity, exact posteriors, sampling
# --------------------------------------------------------------------------------------


def _one_hot_tokens(x, vocab_size, dtype):
    """One-hot over ``vocab_size`` classes; the mask id ``vocab_size`` gives an all-zero row."""
    return (x[..., None] == jnp.arange(vocab_size)).astype(dtype)


def probability_velocity(posterior, x_t, t, kappa: Callable) -> Array:
    r""":math:`u_t^i(y \mid x_t) = \frac{\dot\kappa_t}{1-\kappa_t}\big(p_{1|t}(y \mid x_t) - \delta_{x_t^i}(y)\big)`.

    Args:
      posterior: probabilities :math:`p_{1|t}(y \mid x_t)`, shape ``x_t.shape + (V,)``.
      x_t: integer tokens ``(B, D)``; the mask id ``V`` is allowed.
      t: flow time in ``[0, 1)``, scalar or ``(B,)``.
      kappa: the scheduler.

    Returns the rates into the ``V`` data tokens, shape ``x_t.shape + (V,)``. For a data
    token the row sums to zero (its own entry is minus the rate of leaving); for a masked
    token the entries are the rates out of the mask, and the omitted mask entry is minus
    their sum. Infinite at ``t = 1`` (``kappa_1 = 1``).
    """
    _check_kappa(kappa)
    posterior = as_float(posterior)
    x_t = _check_tokens(x_t, "x_t")
    if posterior.shape[:-1] != x_t.shape:
        raise ValueError(f"posterior must have shape x_t.shape + (V,) = {x_t.shape} + (V,); got {posterior.shape}")
    t = _check_path_time(t, x_t)
    k, dk = kappa_derivatives(kappa, t)
    rate = expand_time(dk / (1.0 - k), x_t).astype(posterior.dtype)
    rate = rate[..., None] if rate.ndim else rate
    return rate * (posterior - _one_hot_tokens(x_t, posterior.shape[-1], posterior.dtype))


def factorized_posterior_logits(data_probs, x_t, t, kappa: Callable, *, source: str) -> Array:
    r"""Exact posterior logits :math:`\log p_{1|t}(y \mid x_t)` for factorized data :math:`\prod_i p^i`.

    - ``"mask"``: :math:`p_{1|t}(y \mid x_t) = \delta_{x_t^i}(y)` if :math:`x_t^i` is a data
      token, :math:`p^i(y)` if it is the mask id ``V`` (independent of ``t``);
    - ``"uniform"``: :math:`p_{1|t}(y \mid x_t) \propto p^i(y)\,\big((1-\kappa_t)/V +
      \kappa_t\,\delta_{x_t^i}(y)\big)` (Bayes: :math:`x_t^i = c` arises from :math:`x_1^i = y`
      either by a jump, probability :math:`\kappa_t \delta_{y c}`, or from a uniform source
      token equal to ``c``, probability :math:`(1-\kappa_t)/V`).

    Other positions carry no information because the path and the data are both factorized.

    Args:
      data_probs: per-position probabilities :math:`p^i(y)`, shape ``x_t.shape[1:] + (V,)``
        (rows sum to one; zeros allowed and give ``-inf`` logits).
      x_t: integer tokens ``(B, D)``. t: flow time in ``[0, 1)``, scalar or ``(B,)``.
      kappa: the scheduler. source: ``"mask"`` or ``"uniform"``.

    Returns logits ``x_t.shape + (V,)`` (normalised log-probabilities), usable as
    ``posterior_fn`` of :func:`discrete_euler`.
    """
    check_choice(source, SOURCES, "source")
    _check_kappa(kappa)
    data_probs = as_float(data_probs)
    x_t = _check_tokens(x_t, "x_t")
    if data_probs.shape[:-1] != x_t.shape[1:]:
        raise ValueError(
            f"data_probs must have shape x_t.shape[1:] + (V,) = {x_t.shape[1:]} + (V,); got {data_probs.shape}"
        )
    t = _check_path_time(t, x_t)
    vocab = data_probs.shape[-1]
    log_p = jnp.broadcast_to(jnp.log(data_probs), x_t.shape + (vocab,))
    one_hot = _one_hot_tokens(x_t, vocab, data_probs.dtype)
    if source == "mask":
        return jnp.where((x_t == vocab)[..., None], log_p, jnp.log(one_hot))
    k = expand_time(jnp.asarray(kappa(t)), x_t).astype(data_probs.dtype)
    k = k[..., None] if k.ndim else k
    return jax.nn.log_softmax(log_p + jnp.log((1.0 - k) / vocab + k * one_hot), axis=-1)


def _check_increasing_grid(ts) -> Array:
    """A grid from source to data: :func:`jflow.grids.check_grid_values`, then increasing and in ``[0, 1]``."""
    ts = check_grid_values(ts, jnp.promote_types(as_float(ts).dtype, jnp.float32))
    if is_concrete(ts):
        v = np.asarray(ts, np.float64)
        check_time(v, "ts")
        if not v[1] > v[0]:
            raise ValueError("ts must increase from source (t=0) to data (t=1); got a decreasing grid")
    return ts


def discrete_euler(
    posterior_fn: Callable,
    x0,
    ts,
    kappa: Callable,
    *,
    key,
    method: str = "euler",
    args: tuple = (),
    trajectory: bool = False,
    unroll: int = 1,
):
    r"""Sample the mixture path's CTMC with Euler steps over ``ts`` (one ``lax.scan``).

    At each step :math:`t \to t + h` (``h = ts[j+1] - ts[j]``), for every token independently:

    1. :math:`\hat x_1^i \sim p_{1|t}(\cdot \mid x_t)` (``jax.random.categorical`` on the logits);
    2. with probability :math:`\min\big(1,\ h\,\dot\kappa_t / (1 - \kappa_t)\big)`,
       :math:`x^i \leftarrow \hat x_1^i`, else :math:`x^i` stays; when ``t + h = 1`` the
       probability is 1, so a grid that ends at ``1`` returns data tokens only.

    This is the Euler step :math:`x_{t+h}^i \sim \delta_{x_t^i} + h\,u_t^i(\cdot \mid x_t)` of
    :func:`probability_velocity`, exactly (where the clip at 1 is inactive). Step ``j`` draws
    from ``fold_in(key, j)``.

    ``method="ancestral"`` jumps with probability :math:`(\kappa_{t+h} - \kappa_t) / (1 - \kappa_t)`
    instead, the probability that a token of the conditional path which is still at its source
    at ``t`` has jumped by ``t + h`` (masked diffusion's ancestral sampler). It equals Euler for
    the linear :math:`\kappa_t = t`; for other schedulers it removes the error of integrating
    :math:`\kappa` itself: with the exact posterior of factorized data the tokens at every
    grid point have the exact marginal :math:`p_t` (Euler reaches it only as ``h -> 0``, except
    with the mask source, where the posterior does not depend on ``t``).

    Args:
      posterior_fn: ``posterior_fn(x, t, *args) -> logits`` of shape ``x.shape + (V,)``, with
        ``x`` integer tokens and ``t`` a **scalar** (as the integrators call a field). A model
        ``logits_fn(params, x, t)`` that expects ``t`` of shape ``(B,)``:
        ``lambda x, t, params: logits_fn(params, x, jnp.full(x.shape[:1], t))`` with
        ``args=(params,)``. Logits may be ``-inf`` (impossible tokens).
      x0: source tokens ``(B, D)``, e.g. :func:`sample_source`; values in ``[0, V]``.
      ts: strictly increasing grid in ``[0, 1]``, e.g. ``jflow.grids.uniform_grid(n)``; only its
        length is static under ``jit``.
      kappa: the scheduler the model was trained with.
      key: a ``jax.random`` key (keyword-only, as for every jflow sampler).
      method: ``"euler"`` (Gat et al.) or ``"ancestral"`` (see above).
      args: extra arguments of ``posterior_fn`` (parameters: new values do not recompile).
      trajectory: return every grid point, shape ``(len(ts), *x0.shape)`` (``[0]`` is ``x0``).
      unroll: steps per iteration of the compiled loop.

    Outside ``jit`` the grid is checked, and a grid starting where :math:`\dot\kappa_t` is
    infinite (``PolynomialKappa`` with exponent < 1 at ``t = 0``) is refused: its first step
    would replace every token at once.
    """
    _check_kappa(kappa)
    check_choice(method, DISCRETE_METHODS, "discrete sampling method")
    if not callable(posterior_fn):
        raise ValueError(f"posterior_fn must be callable as posterior_fn(x, t, *args); got {posterior_fn!r}")
    if not isinstance(args, tuple):
        raise ValueError(f"args must be a tuple (passed as posterior_fn(x, t, *args)); got {type(args).__name__}")
    check_positive_int(unroll, "unroll", why="steps per loop iteration")
    x0 = _check_tokens(x0, "x0")
    ts = _check_increasing_grid(ts)
    out = jax.eval_shape(posterior_fn, x0, ts[0], *args)
    if not hasattr(out, "shape") or out.shape[:-1] != x0.shape or len(out.shape) != x0.ndim + 1:
        raise ValueError(
            f"posterior_fn(x, t, *args) must return logits of shape x.shape + (V,) = {x0.shape} + (V,); "
            f"got {getattr(out, 'shape', out)}"
        )
    vocab = out.shape[-1]
    _check_tokens(x0, "x0", hi=vocab + 1, what=" (data tokens or the mask id V)")
    if method == "euler" and is_concrete(ts[0]):
        _, dk0 = kappa_derivatives(kappa, ts[0])
        if is_concrete(dk0) and not np.isfinite(np.asarray(dk0)).all():
            raise ValueError(
                f"d_kappa/dt is infinite at ts[0] = {float(ts[0])} (e.g. PolynomialKappa with exponent < 1 "
                "at t = 0): the first step would replace every token at once; start the grid later, "
                "e.g. uniform_grid(n, 1e-3, 1.0), or use an exponent >= 1"
            )
    logit_dtype = jnp.promote_types(out.dtype, jnp.float32)

    def step(x, inp):
        j, t0, t1 = inp
        key_cat, key_jump = jax.random.split(jax.random.fold_in(key, j))
        logits = jnp.asarray(posterior_fn(x, t0, *args)).astype(logit_dtype)
        x1_hat = jax.random.categorical(key_cat, logits, axis=-1).astype(x.dtype)
        k, dk = kappa_derivatives(kappa, t0)
        if method == "euler":
            rise = (t1 - t0) * dk
        else:
            rise = jnp.asarray(kappa(t1)).astype(ts.dtype) - k
        p_jump = jnp.minimum(1.0, rise / jnp.maximum(1.0 - k, jnp.finfo(ts.dtype).tiny))
        p_jump = jnp.where(t1 >= 1.0, 1.0, p_jump)
        jump = jax.random.uniform(key_jump, x.shape, ts.dtype) < p_jump
        x = jnp.where(jump, x1_hat, x)
        return x, (x if trajectory else None)

    idx = jnp.arange(ts.shape[0] - 1)
    final, path = jax.lax.scan(step, x0, (idx, ts[:-1], ts[1:]), unroll=unroll)
    if trajectory:
        return jnp.concatenate([x0[None], path], axis=0)
    return final
