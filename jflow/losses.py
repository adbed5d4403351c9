r"""Training losses of flow matching and diffusion models, time sampling, label dropout.

Flow time: ``t = 0`` is noise, ``t = 1`` is data. Every loss here regresses a network
output onto a *conditional* target on the Gaussian path
:math:`x_t = \alpha_t z + \beta_t \epsilon` (:mod:`jflow.paths`), one of four
parameterisations:

============ ============================================= =============================================
name          per-example loss                              lecture
============ ============================================= =============================================
``velocity``  :math:`\|u^\theta_t(x_t) - (\dot\alpha_t z + \dot\beta_t\epsilon)\|^2`
                                                            flow matching, Algorithm 3 (general) and
                                                            Algorithm 4 (CondOT: target :math:`z - \epsilon`);
                                                            Thm 4.1 :math:`L_{fm} = L_{cfm} + C`
``score``     :math:`\|s^\theta_t(x_t) + \epsilon / \beta_t\|^2`
                                                            denoising score matching, Algorithm 6 (general)
                                                            and Algorithm 5 (Gaussian path);
                                                            Thm 4.2 :math:`L_{sm} = L_{dsm} + C`
``noise``     :math:`\|\epsilon^\theta_t(x_t) - \epsilon\|^2`
                                                            DDPM noise prediction, :math:`L_{DDPM}` (the
                                                            score loss reparameterised by
                                                            :math:`\epsilon^\theta = -\beta_t s^\theta`,
                                                            i.e. weighted by :math:`\beta_t^2`)
``data``      :math:`\|z^\theta_t(x_t) - z\|^2`            x-prediction (conversion formulas of the
                                                            lecture; the regression target is :math:`z`)
============ ============================================= =============================================

**Reduction** (one rule everywhere): the squared error is *summed* over the trailing
(non-batch) axes, which is the squared Euclidean norm :math:`\|\cdot\|^2` of the
lectures, and *averaged* over the batch axis, a Monte-Carlo estimate of the expectation
over :math:`(t, z, \epsilon)`. An optional weighting :math:`\lambda(t)` multiplies each
example's squared norm before the batch mean.

Building blocks (pure, usable without the factory): :func:`conditional_matching_errors`,
:func:`conditional_matching_loss`, :func:`sample_time`, :func:`drop_labels`. The factory
:func:`make_loss` combines them into a jittable ``loss(params, batch, key)``.
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import as_float, check_choice, expand_time, is_concrete
from jflow.guidance import drop_labels
from jflow.paths import PARAMETERIZATIONS, conditional_target, sample_conditional
from jflow.schedulers import derivatives
from jflow.time_sampling import TIME_SAMPLING, check_time_range, sample_time
from jflow.weighting import LOSS_WEIGHTINGS, loss_weight, noise_error_factor, resolve_weighting, weigh_errors

Array = jax.Array

SCORE_T_MAX = 1.0 - 1e-3
"""Default upper end of the time range for the ``score`` parameterisation (see :func:`make_loss`)."""

__all__ = [
    "PARAMETERIZATIONS",
    "TIME_SAMPLING",
    "LOSS_WEIGHTINGS",
    "SCORE_T_MAX",
    "noise_error_factor",
    "loss_weight",
    "conditional_matching_errors",
    "conditional_matching_loss",
    "sample_time",
    "drop_labels",
    "make_loss",
]


# --------------------------------------------------------------------------------------
# Conditional matching losses
# --------------------------------------------------------------------------------------


def _squared_norm(diff: Array) -> Array:
    """``||diff_i||^2`` per example: sum of squares over every axis but the first."""
    return jnp.sum(jnp.square(diff), axis=tuple(range(1, diff.ndim)))


def _check_score_time(sched, t):
    """Outside ``jit``: refuse a score target at a time where ``beta_t = 0`` (it is infinite)."""
    if is_concrete(t):
        _, beta = sched(as_float(t))
        if np.any(np.asarray(beta) <= 0):
            raise ValueError(
                "the score target -eps/beta_t is infinite where beta_t = 0 (t = 1 for every "
                "scheduler); sample t <= t_max < 1, e.g. t_max = jflow.losses.SCORE_T_MAX"
            )


def conditional_matching_errors(prediction, sched, z, eps, t, parameterization: str = "velocity") -> Array:
    r"""Per-example squared error :math:`\|\text{prediction}_i - \text{target}_i\|^2`, shape ``(B,)``.

    The target is :func:`jflow.paths.conditional_target` at :math:`x_t = \alpha_t z + \beta_t\epsilon`
    (``prediction`` is the network output at that point; see the module table):
    ``velocity`` :math:`\dot\alpha_t z + \dot\beta_t\epsilon` (Algorithms 3-4),
    ``score`` :math:`-\epsilon/\beta_t` (Algorithm 5), ``noise`` :math:`\epsilon` (DDPM),
    ``data`` :math:`z`. The sum runs over all trailing axes.

    Args:
      prediction: network output, same shape as ``z`` (batch axis first).
      sched: scheduler ``t -> (alpha_t, beta_t)``.
      z: data batch. eps: the standard normal noise that made ``x_t``.
      t: flow time (0 noise, 1 data), scalar or ``(B,)``.
      parameterization: ``"velocity"``, ``"score"``, ``"noise"`` or ``"data"``.

    Raises ``ValueError`` for an unknown parameterisation, mismatched shapes, an array
    without a batch axis, an empty batch, ``t`` outside ``[0, 1]``, or (outside ``jit``) a score target at
    :math:`\beta_t = 0`.
    """
    check_choice(parameterization, PARAMETERIZATIONS, "parameterization")
    prediction, z, eps = jnp.asarray(prediction), jnp.asarray(z), jnp.asarray(eps)
    shapes = {"prediction": prediction.shape, "z": z.shape, "eps": eps.shape}
    if len(set(shapes.values())) > 1:
        raise ValueError(
            "shape mismatch: " + ", ".join(f"{k}.shape={v}" for k, v in shapes.items())
            + "; the prediction, z and eps must have the same shape"
        )
    if z.ndim == 0:
        raise ValueError("z must have a batch axis first, shape (B, ...); got a scalar")
    if z.shape[0] == 0:
        raise ValueError(f"the batch is empty (shape {z.shape}); a Monte-Carlo loss needs B >= 1 examples")
    if parameterization == "score":
        _check_score_time(sched, t)
    target = conditional_target(sched, z, eps, t, parameterization)
    return _squared_norm(prediction - target)


def conditional_matching_loss(
    prediction,
    sched,
    z,
    eps,
    t,
    parameterization: str = "velocity",
    *,
    weighting: Optional[Callable[[Array], Array]] = None,
) -> Array:
    r"""Monte-Carlo conditional matching loss :math:`\frac1B\sum_i \lambda(t_i)\,\|\text{pred}_i - \text{target}_i\|^2`.

    With ``parameterization="velocity"`` this is the conditional flow matching loss
    (Algorithm 3; for the CondOT scheduler Algorithm 4,
    :math:`\|u^\theta_t(x) - (z - \epsilon)\|^2` with :math:`x = tz + (1-t)\epsilon`); with
    ``"score"`` the denoising score matching loss of Algorithm 5,
    :math:`\|s^\theta_t(x_t) + \epsilon/\beta_t\|^2` (Algorithm 6 in general); ``"noise"``
    is DDPM's :math:`\|\epsilon^\theta_t(x_t) - \epsilon\|^2`; ``"data"`` is
    :math:`\|z^\theta_t(x_t) - z\|^2`. Squared norms sum over the trailing axes; the batch
    is averaged.

    Args:
      prediction, sched, z, eps, t, parameterization: as in :func:`conditional_matching_errors`
        (``t`` in flow time, 0 noise, 1 data).
      weighting: optional ``lambda(t)`` returning one weight per example (or a scalar).
        For instance ``weighting=lambda t: sched(t)[1] ** 2`` turns the score loss of a
        score network :math:`s = -\epsilon^\theta / \beta_t` into the noise loss.

    Returns:
      A scalar in the dtype of the inputs.
    """
    errors = conditional_matching_errors(prediction, sched, z, eps, t, parameterization)
    return jnp.mean(weigh_errors(weighting, as_float(t), errors))


# --------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------


def make_loss(
    apply_fn: Callable,
    sched,
    *,
    parameterization: str = "velocity",
    time_sampling: Union[str, Callable] = "uniform",
    time_mean=0.0,
    time_std=1.0,
    t_min=None,
    t_max=None,
    label_dropout: float = 0.0,
    null_label=None,
    weighting: Union[None, str, Callable[[Array], Array]] = None,
    snr_gamma: float = 5.0,
    time_bins: int = 0,
    coupling: Optional[Callable] = None,
    path_noise: Optional[Callable] = None,
) -> Callable:
    r"""Build a pure, jittable training loss ``loss(params, batch, key) -> (loss, metrics)``.

    One call performs Algorithm 3/4 (``velocity``), Algorithm 5/6 (``score``), DDPM noise
    prediction (``noise``) or x-prediction (``data``) on a mini-batch, with classifier-free
    guidance label dropout (Algorithm 5 of the 2025 slides) when ``label_dropout > 0``:

    1. ``key_t, key_eps, key_drop = jax.random.split(key, 3)``;
    2. ``t = sample_time(key_t, B, method=time_sampling, mean=time_mean, std=time_std,
       t_min=t_min, t_max=t_max, dtype=tdtype)`` (flow time: 0 noise, 1 data), or
       ``time_sampling(key_t, B)`` cast to ``tdtype`` for a callable, where ``tdtype`` is
       ``x.dtype`` or float32 for a bfloat16/float16 batch (bfloat16 holds only a few hundred
       distinct times in ``[0, 1]``; the targets and the loss's batch mean are then float32,
       and ``x_t`` is cast back to ``x.dtype`` for the model);
    3. ``eps = jax.random.normal(key_eps, x.shape, x.dtype)``, or the source batch ``batch["x0"]``
       when given (it plays the role of ``eps``: :func:`jflow.paths.bridge`); with a
       ``coupling``, ``eps, z = coupling(fold_in(key_eps, 1), eps, z, labels=y)`` (``y`` before
       label dropout, ``None`` for an unlabelled batch); :math:`x_t = \alpha_t z + \beta_t\epsilon`,
       plus :math:`\gamma_t\xi` with ``xi = normal(fold_in(key_eps, 2))`` when ``path_noise`` is given;
    4. ``y = drop_labels(key_drop, y, label_dropout, null_label)`` if ``label_dropout > 0``;
    5. ``pred = apply_fn(params, x_t, t, y)`` with ``t`` of shape ``(B,)`` and ``y = None``
       for an unlabelled batch;
    6. ``loss = conditional_matching_loss(pred, sched, z, eps, t, parameterization,
       weighting=weighting)`` (with ``path_noise``, the target gains :math:`\dot\gamma_t\xi`).

    These steps are part of the contract, so a run is reproducible from its keys.

    Args:
      apply_fn: the model, ``apply_fn(params, x, t, y) -> prediction`` of the shape of ``x``
        (e.g. ``model.apply``).
      sched: scheduler ``t -> (alpha_t, beta_t)``.
      parameterization: what the network predicts: ``"velocity"``, ``"score"``,
        ``"noise"``, ``"data"`` (module table).
      time_sampling: ``"uniform"``, ``"logit_normal"``, ``"stratified"`` (see
        :func:`sample_time`), or a callable ``(key, n) -> t`` of shape ``(n,)`` in ``[0, 1]``
        such as ``functools.partial(sample_time, method="logit_normal", std=0.5)``.
      time_mean, time_std: logit-normal parameters.
      t_min, t_max: time range for a named method; default ``0`` and ``1``, except
        ``t_max = SCORE_T_MAX = 1 - 1e-3`` for ``"score"`` because its target
        :math:`-\epsilon/\beta_t` is infinite at ``t = 1`` (Algorithm 5: "numerically
        unstable for low beta"). Schedulers whose derivative is infinite at ``t = 1``
        (``SqrtScheduler``, ``LinearVPScheduler``, ``VPScheduler``) need ``t_max < 1`` for the
        velocity form too: a ``t_max`` where the velocity target is infinite is refused. Must be left ``None`` with a callable ``time_sampling``.
      label_dropout: probability ``p`` in ``[0, 1]`` of replacing a label by ``null_label``.
      null_label: the empty label; required when ``label_dropout > 0``.
      weighting: how each example's squared error is weighted: ``None`` (Algorithm 5 / 3-4 as
        written), a name in :data:`LOSS_WEIGHTINGS` (see :func:`loss_weight`: ``"noise"``,
        ``"score"``, ``"data"``, ``"velocity"`` make the loss *equal* that parameterisation's
        unweighted loss; ``"min_snr"`` is min-SNR-gamma), or a callable ``lambda(t)`` returning
        one weight per example. Example: a score network trained with the DDPM objective,
        which keeps its target bounded near the data end (the unweighted score loss is
        dominated by :math:`t \to 1`, where :math:`\epsilon/\beta_t` blows up)::

            loss_fn = make_loss(model.apply, sched, parameterization="score", weighting="noise")
            # == make_loss(model.apply, sched, parameterization="score",
            #              weighting=lambda t: sched(t)[1] ** 2)

      snr_gamma: the :math:`\gamma` of ``weighting="min_snr"``.
      time_bins: number ``K`` of equal bins of ``[0, 1]`` for the per-time metrics; ``0``
        (default) turns them off.
      coupling: optional ``coupling(key, x0, x1, labels=None) -> (x0, x1)`` from
        :mod:`jflow.couplings` (e.g. ``exact_ot`` for OT-CFM, ``functools.partial(sinkhorn,
        epsilon=0.1)``), applied to ``(x0, z)`` before forming :math:`x_t`. On a labelled batch it
        receives the labels, so jflow's couplings pair only within a class. Not with
        ``"score"``: a coupled ``x0`` is not independent of ``z``, so :math:`-x_0/\beta_t` is
        no score.
      path_noise: optional ``path_noise(t) -> (gamma_t, d_gamma_t)``, e.g.
        ``jflow.paths.brownian_bridge_noise(sigma)`` (SB-CFM with ``coupling=partial(
        schrodinger_bridge, sigma=sigma)``); velocity parameterisation only (see
        :func:`jflow.paths.bridge`).

    Returns:
      ``loss(params, batch, key)``: ``batch`` is a mapping with ``"x"`` (float data ``z``,
      batch axis first), optionally ``"y"`` (labels, leading axis ``B``) and ``"x0"`` (source
      samples of the shape of ``"x"``; default :math:`\mathcal N(0, I)` draws). It returns the
      scalar loss and a dict of scalar/small metrics: ``"loss"``; ``"target_sq_norm"``, the
      batch mean of :math:`\|\text{target}\|^2` (the loss of predicting zero, a scale
      reference); with ``K > 0``, ``"loss_by_time"`` (``(K,)``, mean weighted loss of the
      examples with ``t`` in each bin, ``0`` for an empty bin) and ``"count_by_time"``
      (``(K,)``, the number of such examples), so that
      ``sum(loss_by_time * count_by_time) / B == loss``.

    Names and ranges are validated here (``ValueError`` listing the choices); batch and
    output shapes when ``loss`` is traced.
    """
    if not callable(apply_fn):
        raise ValueError(f"apply_fn must be callable as apply_fn(params, x, t, y); got {apply_fn!r}")
    if not callable(sched):
        raise ValueError(f"sched must be a scheduler t -> (alpha_t, beta_t); got {sched!r}")
    check_choice(parameterization, PARAMETERIZATIONS, "parameterization")
    draw_t = _time_sampler(time_sampling, parameterization, time_mean, time_std, t_min, t_max)
    if parameterization == "velocity" and not callable(time_sampling):
        _check_velocity_finite(sched, 1.0 if t_max is None else t_max)
    if not (np.ndim(label_dropout) == 0 and 0.0 <= float(label_dropout) <= 1.0):
        raise ValueError(f"label_dropout must be a probability in [0, 1]; got {label_dropout}")
    label_dropout = float(label_dropout)
    if label_dropout > 0 and null_label is None:
        raise ValueError("label_dropout > 0 needs null_label, the label that stands for 'no label'")
    weighting = resolve_weighting(weighting, sched, parameterization, snr_gamma)
    if not isinstance(time_bins, (int, np.integer)) or isinstance(time_bins, bool) or time_bins < 0:
        raise ValueError(f"time_bins must be an int >= 0; got {time_bins!r}")
    _check_source_options(coupling, path_noise, parameterization)

    def loss(params, batch, key):
        z, y = _batch_arrays(batch, needs_labels=label_dropout > 0)
        key_t, key_eps, key_drop = jax.random.split(key, 3)
        t = draw_t(key_t, z.shape[0], jnp.promote_types(z.dtype, jnp.float32))
        eps, z = _source(batch, key_eps, z, y, coupling)
        x_t = sample_conditional(sched, z, eps, t).astype(z.dtype)
        x_t, noise_velocity = _add_path_noise(path_noise, key_eps, x_t, t)
        if label_dropout > 0:
            y = drop_labels(key_drop, y, label_dropout, null_label)

        pred = jnp.asarray(apply_fn(params, x_t, t, y))
        if pred.shape != z.shape:
            raise ValueError(
                f"apply_fn returned shape {pred.shape}; a {parameterization} prediction must have "
                f"the shape of x, {z.shape}"
            )
        # path noise adds d_gamma_t xi to the target: subtract it from the prediction instead
        own = pred if path_noise is None else pred - noise_velocity
        per_example = weigh_errors(weighting, t, conditional_matching_errors(own, sched, z, eps, t, parameterization))
        target = conditional_target(sched, z, eps, t, parameterization) + noise_velocity
        value = jnp.mean(per_example)
        metrics = {"loss": value, "target_sq_norm": jnp.mean(_squared_norm(target))}
        if time_bins:
            metrics.update(_metrics_by_time(t, per_example, time_bins))
        return value, metrics

    return loss


def _time_sampler(time_sampling, parameterization, mean, std, t_min, t_max) -> Callable:
    """``draw(key, n, dtype) -> t`` of shape ``(n,)`` for make_loss's ``time_sampling`` (steps 2 of its contract)."""
    if callable(time_sampling):
        if t_min is not None or t_max is not None:
            raise ValueError(
                "t_min/t_max apply to a named time sampling method; a callable time_sampling "
                "controls its own range (e.g. functools.partial(sample_time, t_max=0.99))"
            )

        def draw(key, n, dtype):
            t = jnp.asarray(time_sampling(key, n)).astype(dtype)
            if t.shape != (n,):
                raise ValueError(f"time_sampling(key, n) must return shape ({n},); got {t.shape}")
            return t

        return draw
    if not isinstance(time_sampling, str):
        raise ValueError(f"time_sampling must be one of {sorted(TIME_SAMPLING)} or a callable (key, n) -> t")
    check_choice(time_sampling, TIME_SAMPLING, "time_sampling")
    t_min = 0.0 if t_min is None else t_min
    t_max = (SCORE_T_MAX if parameterization == "score" else 1.0) if t_max is None else t_max
    check_time_range(t_min, t_max)
    if is_concrete(std) and not np.all(np.asarray(std) > 0):
        raise ValueError(f"time_std (logit-normal std) must be > 0; got {std}")
    return lambda key, n, dtype: sample_time(
        key, n, method=time_sampling, mean=mean, std=std, t_min=t_min, t_max=t_max, dtype=dtype
    )


def _check_velocity_finite(sched, t_max) -> None:
    """Refuse a concrete ``t_max`` where the velocity target's derivatives are infinite
    (``SqrtScheduler``, ``LinearVPScheduler`` and ``VPScheduler`` at ``t = 1``)."""
    if not is_concrete(t_max):
        return
    try:
        d = derivatives(sched, jnp.asarray(float(np.asarray(t_max)), jnp.float32))
    except Exception:  # a scheduler that cannot be evaluated eagerly here is checked by nobody
        return
    if not all(is_concrete(v) for v in d):  # traced scheduler parameters (a vmapped grid of them)
        return
    if not all(np.isfinite(np.asarray(v)).all() for v in d):
        raise ValueError(
            f"the velocity target d_alpha_t z + d_beta_t eps of {type(sched).__name__} is infinite at "
            f"t_max={float(np.asarray(t_max))} (alpha, beta, d_alpha, d_beta = "
            f"{tuple(round(float(np.asarray(v)), 6) for v in d)}); train on t <= t_max < 1, e.g. t_max=1 - 1e-3"
        )


def _batch_arrays(batch, needs_labels: bool):
    """``(z, y)`` from a make_loss batch (``y`` is ``None`` for an unlabelled one), with its checks."""
    if not isinstance(batch, Mapping) or "x" not in batch:
        raise ValueError("batch must be a dict with the data under 'x' (and optional labels under 'y')")
    z = jnp.asarray(batch["x"])
    if z.ndim == 0 or not jnp.issubdtype(z.dtype, jnp.floating):
        raise ValueError(
            f"batch['x'] must be a float array with the batch axis first; got dtype {z.dtype}, "
            f"shape {z.shape} (convert and scale integer data, e.g. images, first)"
        )
    if z.shape[0] == 0:
        raise ValueError(f"batch['x'] is empty (shape {z.shape}); the loss needs B >= 1 examples")
    y = batch.get("y")
    if y is None:
        if needs_labels:
            raise ValueError("label_dropout > 0 needs labels: the batch has no 'y'")
        return z, None
    y = jnp.asarray(y)
    if y.ndim == 0 or y.shape[0] != z.shape[0]:
        raise ValueError(f"batch['y'] must have leading axis B={z.shape[0]} like batch['x']; got shape {y.shape}")
    return z, y


def _metrics_by_time(t, per_example, bins: int) -> dict:
    """``loss_by_time`` (mean weighted loss per equal bin of ``[0, 1]``, 0 if empty) and ``count_by_time``."""
    idx = jnp.clip(jnp.floor(t * bins).astype(jnp.int32), 0, bins - 1)
    count = jnp.zeros((bins,), per_example.dtype).at[idx].add(1)
    total = jnp.zeros((bins,), per_example.dtype).at[idx].add(per_example)
    return {"loss_by_time": total / jnp.maximum(count, 1), "count_by_time": count}


# --------------------------------------------------------------------------------------
# Source samples, couplings and path noise (make_loss)
# --------------------------------------------------------------------------------------


def _check_source_options(coupling, path_noise, parameterization):
    for name, value in (("coupling", coupling), ("path_noise", path_noise)):
        if value is not None and not callable(value):
            raise ValueError(f"{name} must be a callable or None; got {value!r}")
    if coupling is not None and parameterization == "score":
        raise ValueError(
            "a coupling makes x0 depend on z, so -x0/beta_t is not a score target; use "
            "parameterization 'velocity', 'noise' or 'data' with a coupling"
        )
    if path_noise is not None and parameterization != "velocity":
        raise ValueError(
            f"path_noise needs parameterization='velocity' (its target gains d_gamma_t xi); got {parameterization!r}"
        )


def _source(batch, key_eps, z, y, coupling):
    """``(x0, z)``: ``batch["x0"]`` or N(0, I) draws, then the coupling (keys as in make_loss step 3)."""
    if "x0" in batch:
        x0 = jnp.asarray(batch["x0"])
        if x0.shape != z.shape or not jnp.issubdtype(x0.dtype, jnp.floating):
            raise ValueError(
                f"batch['x0'] must be a float array of the shape of batch['x'], {z.shape}; got {x0.dtype} {x0.shape}"
            )
        x0 = x0.astype(z.dtype)
    else:
        x0 = jax.random.normal(key_eps, z.shape, z.dtype)
    if coupling is None:
        return x0, z
    x0, z = coupling(jax.random.fold_in(key_eps, 1), x0, z, labels=y)
    return jnp.asarray(x0, z.dtype), z


def _add_path_noise(path_noise, key_eps, x_t, t):
    """``(x_t + gamma_t xi, d_gamma_t xi)``, or ``(x_t, 0)`` without path noise."""
    if path_noise is None:
        return x_t, 0.0
    xi = jax.random.normal(jax.random.fold_in(key_eps, 2), x_t.shape, x_t.dtype)
    gamma, d_gamma = (jnp.asarray(v).astype(x_t.dtype) for v in path_noise(expand_time(t, x_t)))
    return x_t + gamma * xi, d_gamma * xi

