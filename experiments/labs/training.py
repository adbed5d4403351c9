r"""Labs 2-3: training an MLP on 2-D data by flow matching, score matching or bridging, and sampling it.

:func:`build_programs` makes the compiled programs of a run once; every trained lab uses them.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import progress
from experiments.labs.config import SCHEDULERS, LabsConfig
from jflow.integrators import uniform_grid
from jflow.losses import make_loss, sample_time
from jflow.models import get_model
from jflow.paths import bridge
from jflow.sampling import as_velocity, sample_ode, sample_sde
from jflow.train import create_train_state, fit, make_fused_train_step, make_optimizer


class ToyProgram(NamedTuple):
    """An MLP on 2-D data: the model, its optimizer, the fused train step and the jitted sampler
    ``(params, x0, grid, key) -> trajectory``."""

    model: object
    optimizer: object
    step: Callable
    sampler: Callable


class LabPrograms(NamedTuple):
    """The programs of the trained labs: flow matching (``velocity``), score matching (``score``), bridging."""

    velocity: ToyProgram
    score: ToyProgram
    bridge: ToyProgram


def _ode_sampler(model) -> Callable:
    """Jitted ``(params, x0, grid, key) -> trajectory`` of the learned ODE (Algorithm 1, Euler)."""

    def run(params, x0, grid, key):
        del key
        return sample_ode(lambda x, t, p: model.apply(p, x, t), x0, grid, trajectory=True, args=(params,))

    return jax.jit(run)


def _sde_sampler(model, sched, sde_sigma: float) -> Callable:
    """Jitted ``(params, x0, grid, key) -> trajectory`` of the SDE extension trick with constant
    ``sigma_t = sde_sigma`` (Euler-Maruyama), the velocity converted from the learned score."""

    def score(x, t, p):
        return model.apply(p, x, t)

    u = as_velocity(score, sched, "score")
    return jax.jit(lambda params, x0, grid, key: sample_sde(u, score, sde_sigma, x0, grid, key=key,
                                                            trajectory=True, args=(params,)))


def toy_program(cfg: LabsConfig, parameterization: str) -> ToyProgram:
    r"""An MLP trained with ``make_loss``. ``velocity``: flow matching (Algorithm 4 for CondOT),
    sampled with the ODE. ``score``: denoising score matching (Algorithm 5) weighted by
    :math:`\beta_t^2` (the numerically stable DDPM form, see :mod:`jflow.losses`), sampled with
    the SDE extension trick."""
    model = get_model("mlp", width=cfg.width, depth=cfg.depth)
    sched = SCHEDULERS[cfg.scheduler]()
    weighting = (lambda t: sched(t)[1] ** 2) if parameterization == "score" else None
    loss = make_loss(lambda p, x, t, y: model.apply(p, x, t), sched, parameterization=parameterization,
                     weighting=weighting)
    sampler = _ode_sampler(model) if parameterization == "velocity" else _sde_sampler(model, sched, cfg.sde_sigma)
    return ToyProgram(model, make_optimizer(cfg.learning_rate, clip_norm=1.0), make_fused_train_step(loss), sampler)


def bridge_program(cfg: LabsConfig) -> ToyProgram:
    r"""Flow matching between two sample sets: regress ``u(x_t, t)`` on the bridge velocity of
    ``jflow.paths.bridge`` (:math:`x_t = \alpha_t z + \beta_t x_0`, target
    :math:`\dot\alpha_t z + \dot\beta_t x_0`), with the batch mean of the squared norm."""
    model = get_model("mlp", width=cfg.width, depth=cfg.depth)
    sched = SCHEDULERS[cfg.scheduler]()

    def loss(params, batch, key):
        x0, z = batch["x0"], batch["z"]
        t = sample_time(key, x0.shape[0], dtype=x0.dtype)
        x_t, target = bridge(sched, x0, z, t)
        value = jnp.mean(jnp.sum(jnp.square(model.apply(params, x_t, t) - target), axis=-1))
        return value, {}

    return ToyProgram(model, make_optimizer(cfg.learning_rate, clip_norm=1.0), make_fused_train_step(loss),
                      _ode_sampler(model))


def build_programs(cfg: LabsConfig) -> LabPrograms:
    """Every program of the trained labs (each compiles on its first call, once per run)."""
    return LabPrograms(toy_program(cfg, "velocity"), toy_program(cfg, "score"), bridge_program(cfg))


def fit_mlp(cfg: LabsConfig, program: ToyProgram, batch_fn: Callable, key, desc: str):
    """Train the MLP of ``program`` for ``cfg.train_steps`` steps; returns its parameters."""
    init_key, train_key = jax.random.split(key)
    params = program.model.init(init_key, jnp.zeros((1, 2)), jnp.zeros((1,)))
    bar = progress(total=cfg.train_steps, desc=desc)

    def log_fn(step_index, metrics):
        bar.update(cfg.steps_per_call)
        bar.set_postfix(loss=f"{metrics['loss']:.4f}")

    try:
        state, _ = fit(program.step, create_train_state(params, program.optimizer), batch_fn, train_key,
                       num_steps=cfg.train_steps, steps_per_call=cfg.steps_per_call, log_every=cfg.steps_per_call,
                       log_fn=log_fn)
    finally:
        bar.close()
    return state.params


def _sampler_batches(sample: Callable, key, batch_size: int):
    """``step -> {"x": batch}``: batch ``step`` drawn from ``fold_in(key, step)`` (a pure function of the step)."""
    draw = jax.jit(lambda k: sample(k, batch_size))
    return lambda step: {"x": draw(jax.random.fold_in(key, step))}


def train_and_sample(cfg: LabsConfig, programs: LabPrograms, data, method: str, key, desc: str):
    """Train flow matching (``"fm"``) or score matching (``"sm"``) on ``data``; return ``(samples, trajectory)``.

    FM samples the learned ODE (Algorithm 1) on ``[0, 1]``; SM samples the SDE extension with
    ``sigma_t = sde_sigma`` (Euler-Maruyama) on ``[t_start, 1]``, since the velocity converted
    from a score is singular at ``t = 0``.
    """
    k_data, k_train, k_x0, k_sde = jax.random.split(key, 4)
    program = programs.velocity if method == "fm" else programs.score
    params = fit_mlp(cfg, program, _sampler_batches(data.sample, k_data, cfg.batch_size), k_train, desc)
    x0 = jax.random.normal(k_x0, (cfg.n_samples, 2))
    grid = uniform_grid(cfg.ode_steps, 0.0 if method == "fm" else cfg.t_start, 1.0)
    traj = np.asarray(program.sampler(params, x0, grid, k_sde))
    return traj[-1], traj
