"""The cross-entropy loss of discrete flow matching (see :mod:`jflow.discrete`)."""
from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp

from jflow._checks import check_choice
from jflow.time_sampling import TIME_SAMPLING, check_time_range, sample_time
from jflow.discrete.path import SOURCES, _check_kappa, _check_tokens, _check_vocab, sample_mixture_path, sample_source

Array = jax.Array


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
