r"""Training-time distributions: ``sample_time`` draws the flow times of a mini-batch.

Flow time: ``t = 0`` is noise, ``t = 1`` is data. Algorithms 3-6 draw
:math:`t \sim \mathrm{Unif}_{[0,1]}`; ``"logit_normal"`` (Stable Diffusion 3) and
``"stratified"`` are the common alternatives. :func:`jflow.losses.make_loss` takes these names
as ``time_sampling=``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import check_choice, is_concrete

Array = jax.Array

TIME_SAMPLING = ("uniform", "logit_normal", "stratified")

__all__ = ["TIME_SAMPLING", "sample_time", "check_time_range"]


def check_time_range(t_min, t_max) -> None:
    """Refuse concrete endpoints outside ``0 <= t_min < t_max <= 1`` (traced ones pass)."""
    if is_concrete(t_min) and is_concrete(t_max):
        lo, hi = float(np.asarray(t_min)), float(np.asarray(t_max))
        if not (0.0 <= lo < hi <= 1.0):
            raise ValueError(
                f"need 0 <= t_min < t_max <= 1 (flow time: t=0 noise, t=1 data); got "
                f"t_min={t_min}, t_max={t_max}"
            )


def sample_time(
    key,
    n: int,
    *,
    method: str = "uniform",
    mean=0.0,
    std=1.0,
    t_min=0.0,
    t_max=1.0,
    dtype=None,
) -> Array:
    r"""``n`` training times in ``[t_min, t_max]`` (flow time: 0 noise, 1 data), shape ``(n,)``.

    A draw ``u`` in ``[0, 1]`` is mapped affinely, :math:`t = t_{\min} + (t_{\max} - t_{\min})\,u`,
    so each method keeps its shape on the shorter interval:

    - ``"uniform"``: :math:`u \sim \mathrm{Unif}_{[0, 1)}`, as in Algorithms 3-6
      (:math:`t \sim \mathrm{Unif}_{[0,1]}`).
    - ``"logit_normal"``: :math:`u = \mathrm{sigmoid}(m + s\,n)`, :math:`n \sim \mathcal N(0, 1)`
      (``mean`` :math:`= m`, ``std`` :math:`= s`): concentrates training on intermediate
      times, as in Stable Diffusion 3 (lecture case study). Its median is
      :math:`\mathrm{sigmoid}(m)`.
    - ``"stratified"``: one uniform draw in each of the ``n`` bins :math:`[i/n, (i+1)/n)`,
      then randomly permuted: the same marginal law as ``"uniform"`` with lower variance
      of the batch-mean loss.

    **Clipping for the score form.** The denoising score matching target
    :math:`-\epsilon/\beta_t` (Algorithm 5) blows up as :math:`\beta_t \to 0`, i.e. as
    :math:`t \to 1` ("numerically unstable for low beta"): its squared norm has mean
    :math:`d/\beta_t^2`, whose integral over :math:`t \in [0, 1]` diverges for every built-in
    scheduler (:math:`\beta_t^2 \sim (1-t)^2` or :math:`\sim (1-t)` near ``t = 1``), so the
    loss and its gradients are dominated by a few examples near ``t = 1``. Train the score
    form with ``t_max < 1``; :func:`make_loss` uses ``t_max = SCORE_T_MAX = 1 - 1e-3`` by
    default for it. The other targets are finite on all of ``[0, 1]`` for schedulers with
    finite derivatives.

    Args:
      key: a ``jax.random`` key. n: a positive Python int (the batch size).
      method: ``"uniform"``, ``"logit_normal"`` or ``"stratified"``.
      mean, std: parameters of ``"logit_normal"`` (``std > 0``); ignored otherwise.
      t_min, t_max: the time range, ``0 <= t_min < t_max <= 1``.
      dtype: float dtype of the result (default: jax's default float).
    """
    check_choice(method, TIME_SAMPLING, "time sampling method")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int (the number of times to draw); got {n!r}")
    if is_concrete(std) and not np.all(np.asarray(std) > 0):
        raise ValueError(f"std of the logit-normal time distribution must be > 0; got {std}")
    check_time_range(t_min, t_max)
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a float dtype; got {dtype}")
    if method == "uniform":
        u = jax.random.uniform(key, (n,), dtype)
    elif method == "logit_normal":
        u = jax.nn.sigmoid(jnp.asarray(mean, dtype) + jnp.asarray(std, dtype) * jax.random.normal(key, (n,), dtype))
    else:
        key_u, key_perm = jax.random.split(key)
        u = (jnp.arange(n, dtype=dtype) + jax.random.uniform(key_u, (n,), dtype)) / n
        u = jax.random.permutation(key_perm, u)
    lo, hi = jnp.asarray(t_min, dtype), jnp.asarray(t_max, dtype)
    return lo + (hi - lo) * u
