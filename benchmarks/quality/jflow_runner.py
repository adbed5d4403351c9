"""jflow's side of the quality comparison, through its public API only.

``PlainMLP`` (or the residual ``MLP`` for the ``film`` swap), ``make_optimizer``,
``make_loss`` on the CondOT path (``LinearScheduler``), ``make_fused_train_step`` driven by
``fit`` (100 updates per call), and ``odeint`` (Euler) for sampling. The programs are built
once per worker and reused for every seed (same shapes, so no recompilation).
"""
from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.quality.spec import RunSpec, initial_noise, jflow_initializer, train_batches
from jflow.integrators import odeint, uniform_grid
from jflow.losses import make_loss
from jflow.models import MLP, PlainMLP
from jflow.schedulers import LinearScheduler
from jflow.train import create_train_state, fit, make_fused_train_step, make_optimizer

STEPS_PER_CALL = 100


def _model(spec: RunSpec, dtype):
    if spec.model == "film":  # the first column: jflow's residual MLP at ~199k parameters
        return MLP(width=144, depth=2, dtype=dtype, param_dtype=dtype)
    return PlainMLP(width=spec.width, depth=spec.depth, initializer=jflow_initializer(spec), dtype=dtype, param_dtype=dtype)


def _programs(spec: RunSpec):
    """``(model, dtype, step, sample)`` shared by the seeds of one worker."""
    if spec.dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError("dtype float64 needs JAX_ENABLE_X64=1 in the worker's environment")
    dtype = jnp.dtype(spec.dtype)
    model = _model(spec, dtype)
    loss = make_loss(model.apply, LinearScheduler(), time_sampling=spec.time_sampling, time_bins=0)
    step = make_fused_train_step(loss)
    ts = uniform_grid(spec.euler_steps, dtype=dtype)
    sample = jax.jit(lambda params, x0: odeint(lambda x, t: model.apply(params, x, t), x0, ts, method="euler"))
    return model, dtype, step, sample


def _optimizer(spec: RunSpec):
    decay = dict(weight_decay=spec.weight_decay) if spec.optimizer == "adamw" else {}
    return make_optimizer(spec.learning_rate, name=spec.optimizer, eps=spec.eps, **decay)


def run_seeds(spec: RunSpec, seeds) -> list[dict]:
    """Train and sample once per seed; ``[{"seed", "seconds", "samples"}]`` (samples float32 numpy)."""
    model, dtype, step, sample = _programs(spec)
    k = math.gcd(STEPS_PER_CALL, spec.steps)
    out = []
    for seed in seeds:
        data = train_batches(spec.toy_set, seed, spec.steps, spec.batch).astype(dtype)
        x0 = jnp.asarray(initial_noise(seed), dtype)
        key_init, key_train = jax.random.split(jax.random.PRNGKey(seed))
        params = model.init(key_init, x0[:2], jnp.zeros((2,), dtype))
        state = create_train_state(params, _optimizer(spec), ema_decay=spec.ema_decay or None)
        t0 = time.perf_counter()
        state, _ = fit(step, state, lambda i: {"x": data[i]}, key_train, num_steps=spec.steps, steps_per_call=k)
        jax.block_until_ready(state)
        seconds = time.perf_counter() - t0
        params = state.ema_params if spec.ema_decay else state.params
        out.append(dict(seed=seed, seconds=seconds, samples=np.asarray(sample(params, x0), np.float32)))
    return out
