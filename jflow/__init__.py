"""jflow: flow matching and diffusion models in JAX.

Notation and conventions of MIT 6.S184 (2025): flow time ``t = 0`` is noise (``p_init``),
``t = 1`` is data (``p_data``); ``x_t = alpha_t z + beta_t eps``; ``sigma_t`` is the
diffusion coefficient of an SDE. See the README for a tour and the architecture.
"""
from jflow import (
    conventions,
    couplings,
    data,
    discrete,
    fields,
    grids,
    guidance,
    integrators,
    likelihood,
    losses,
    marginals,
    metrics,
    models,
    paths,
    sampling,
    schedule_change,
    schedulers,
    time_sampling,
    train,
    weighting,
)

__version__ = "0.1.0"
__all__ = [
    "schedulers",
    "paths",
    "marginals",
    "losses",
    "weighting",
    "time_sampling",
    "guidance",
    "integrators",
    "grids",
    "sampling",
    "fields",
    "likelihood",
    "metrics",
    "data",
    "models",
    "train",
    "couplings",
    "discrete",
    "schedule_change",
    "conventions",
]
