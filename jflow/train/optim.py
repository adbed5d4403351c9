"""Optax optimizers with a warm-up + cosine learning-rate schedule and gradient clipping."""
from __future__ import annotations

from typing import Optional

import optax

from jflow._checks import check_choice

__all__ = ["make_lr_schedule", "make_optimizer", "OPTIMIZERS"]

OPTIMIZERS = ("adam", "adamw", "sgd")
ADAMW_WEIGHT_DECAY = 1e-4  # optax.adamw's default


def make_lr_schedule(
    learning_rate: float,
    *,
    warmup_steps: int = 0,
    total_steps: Optional[int] = None,
    end_factor: float = 0.0,
) -> optax.Schedule:
    """Learning rate as a function of the step: linear warm-up from 0, then cosine decay.

    ``lr(n) = learning_rate * n / warmup_steps`` for ``n < warmup_steps``; then, if
    ``total_steps`` is given, a cosine from ``learning_rate`` down to
    ``end_factor * learning_rate`` at ``total_steps``; else constant ``learning_rate``.
    """
    learning_rate = float(learning_rate)
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0; got {learning_rate}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0; got {warmup_steps}")
    if not 0.0 <= end_factor <= 1.0:
        raise ValueError(f"end_factor must lie in [0, 1]; got {end_factor}")
    if total_steps is None:
        if warmup_steps == 0:
            return optax.constant_schedule(learning_rate)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, learning_rate, warmup_steps),
             optax.constant_schedule(learning_rate)],
            [warmup_steps],
        )
    if total_steps <= warmup_steps:
        raise ValueError(
            f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})"
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup_steps else learning_rate,
        peak_value=learning_rate,
        warmup_steps=warmup_steps,
        decay_steps=total_steps,
        end_value=end_factor * learning_rate,
    )


def make_optimizer(
    learning_rate: float = 1e-3,
    *,
    name: str = "adam",
    warmup_steps: int = 0,
    total_steps: Optional[int] = None,
    end_factor: float = 0.0,
    clip_norm: Optional[float] = None,
    weight_decay: Optional[float] = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    momentum: Optional[float] = None,
) -> optax.GradientTransformation:
    """An optax optimizer: optional global-norm clipping, then ``name`` with the schedule of
    :func:`make_lr_schedule`.

    ``name``: ``"adam"`` (the default), ``"adamw"`` (decoupled ``weight_decay``) or ``"sgd"``
    (with optional ``momentum``). ``clip_norm``: clip the global gradient norm to this value
    (``optax.clip_by_global_norm``) before the optimizer sees it.

    Defaults, and why: ``make_optimizer(lr)`` is exactly ``optax.adam(lr)``, which is also
    ``torch.optim.Adam(lr=lr)`` (same ``b1, b2, eps``; ``eps`` added to the bias-corrected
    ``sqrt(v)``; no weight decay): the optimizer of the flow matching examples of the lectures,
    of ``flow_matching`` and of ``torchcfm``, so that a comparison with them starts from the
    same optimizer (``python -m benchmarks.quality``). ``weight_decay`` defaults to ``1e-4``
    for ``"adamw"`` (``optax.adamw``'s default: asking for AdamW means asking for a decay) and
    must be left ``None`` (or ``0``) for ``"adam"`` and ``"sgd"``.
    """
    check_choice(name, OPTIMIZERS, "optimizer name")
    if weight_decay and name != "adamw":
        raise ValueError(f"weight_decay={weight_decay} needs name='adamw' ({name} has no decoupled weight decay)")
    schedule = make_lr_schedule(
        learning_rate, warmup_steps=warmup_steps, total_steps=total_steps, end_factor=end_factor
    )
    if name == "adam":
        opt = optax.adam(schedule, b1=b1, b2=b2, eps=eps)
    elif name == "adamw":
        decay = ADAMW_WEIGHT_DECAY if weight_decay is None else float(weight_decay)
        if not decay >= 0:
            raise ValueError(f"weight_decay must be >= 0; got {weight_decay}")
        opt = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=decay)
    else:
        opt = optax.sgd(schedule, momentum=momentum)
    if clip_norm is None:
        return opt
    if not clip_norm > 0:
        raise ValueError(f"clip_norm must be > 0 (or None for no clipping); got {clip_norm}")
    return optax.chain(optax.clip_by_global_norm(float(clip_norm)), opt)
