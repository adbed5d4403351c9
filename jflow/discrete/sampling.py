"""Sampling discrete flow matching models: the probability velocity, exact posteriors of
factorized data, the CTMC Euler / ancestral sampler (see :mod:`jflow.discrete`)."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import as_float, check_choice, check_positive_int, check_time, expand_time, is_concrete
from jflow.grids import check_grid_values
from jflow.discrete.path import SOURCES, _check_kappa, _check_path_time, _check_tokens, kappa_derivatives

Array = jax.Array

DISCRETE_METHODS = ("euler", "ancestral")


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
