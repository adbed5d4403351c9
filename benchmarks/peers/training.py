"""Training cases of the peer benchmark: flow matching steps of an MLP in jflow, flow_matching and torchcfm.

CondOT path, velocity target, Adam 1e-3, loss ``mean_i ||u(x_t, t) - (z - eps)||^2`` on 2-D
data (an 8-mode Gaussian mixture, 64 distinct batches reused cyclically). jflow runs
``make_loss`` + ``make_train_step`` (one update per call) and ``make_fused_train_step``
(``k`` updates per call); the peers run a plain PyTorch loop (``zero_grad``, ``backward``,
``Adam.step``) on ``AffineProbPath(CondOTScheduler())`` and on
``ConditionalFlowMatcher(sigma=0)``. The torch twins get the flax weights (checked).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flow_matching.path import AffineProbPath
from flow_matching.path.scheduler import CondOTScheduler
from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

import jflow.train as jt
from benchmarks.harness import Runner, calibrate, minor_faults, xla_flops
from benchmarks.peers.report import Case
from benchmarks.peers.twins import DIM, TorchFiLMMLP, TorchPlainMLP, check_same_outputs, copy_params
from jflow.losses import make_loss
from jflow.models import MLP, PlainMLP, count_params
from jflow.schedulers import LinearScheduler

LR = 1e-3
POOL = 64  # distinct batches, reused cyclically


def toy_batches(rng, n, batch):
    """``n`` batches of a 2-D Gaussian mixture (8 modes on a circle of radius 2, std 0.3), float32."""
    angles = rng.integers(0, 8, size=(n, batch)) * (np.pi / 4)
    centers = np.stack([np.cos(angles), np.sin(angles)], axis=-1) * 2.0
    return (centers + 0.3 * rng.standard_normal((n, batch, DIM))).astype(np.float32)


def _twins(family, width):
    """The flax model, its parameters and two torch twins (one per peer) holding the same weights."""
    if family == "lab":
        fmodel, tmodels = PlainMLP(width=width, depth=4), [TorchPlainMLP(width, 4) for _ in range(2)]
    else:
        fmodel, tmodels = MLP(width=width, depth=4, time_features=64), [TorchFiLMMLP(width, 4, 64) for _ in range(2)]
    params = fmodel.init(jax.random.PRNGKey(0), jnp.zeros((2, DIM), jnp.float32), jnp.zeros((2,), jnp.float32))
    for tm in tmodels:
        copy_params(params, tm)
    return fmodel, params, tmodels


def _jflow_runners(loss, params, data, k, seconds):
    """Single and fused step runners, with the compile times and the step's FLOPs and page faults."""
    key = jax.random.PRNGKey(1)
    step, fused = jt.make_train_step(loss), jt.make_fused_train_step(loss)
    singles = [jnp.asarray(data[i]) for i in range(POOL)]
    stacks = [jnp.asarray(data[(i * k) % POOL:(i * k) % POOL + k]) for i in range(POOL // k)]
    box = {"s": jt.create_train_state(params, optax.adam(LR))}
    # first calls before anything else compiles these programs; FLOPs from the compiled single step
    flops, t_lower, t_compile = xla_flops(step, box["s"], {"x": singles[0]}, key)
    t0 = time.perf_counter()
    box["s"], _ = fused(box["s"], {"x": stacks[0]}, key)
    jax.block_until_ready(box["s"])
    first_fused = time.perf_counter() - t0

    def run(fn, batches, n):
        s = box["s"]
        for i in range(n):
            s, _ = fn(s, {"x": batches[i % len(batches)]}, key)
        box["s"] = jax.block_until_ready(s)

    run(step, singles, 3)  # warm-up
    faults = minor_faults(lambda: run(step, singles, 4)) / 4
    n_single = 2 * calibrate(lambda n: run(step, singles, n), seconds / 2)
    n_fused = 2 * calibrate(lambda n: run(fused, stacks, n), seconds / 2)
    runners = [
        Runner("jflow step", "jflow", lambda: run(step, singles, n_single), n_single, "steps/s"),
        Runner(f"jflow fused k={k}", "jflow", lambda: run(fused, stacks, n_fused), n_fused * k, "steps/s"),
    ]
    note = (f"XLA FLOPs/step {flops / 1e6:.2f} M; jflow step: trace+lower {t_lower:.2f} s, compile {t_compile:.2f} s; "
            f"fused k={k} step: first call (trace+compile+run) {first_fused:.2f} s; jflow step: {faults:,.0f} minor "
            f"page faults per call ({faults * 4096 / 2**20:,.1f} MiB first touched)")
    return runners, flops, note


def _torch_step(model, opt, sample_path, x1):
    t, xt, target = sample_path(torch.randn_like(x1), x1)
    loss = (model(xt, t) - target).pow(2).sum(dim=-1).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _peer_runners(tmodels, data, seconds):
    """flow_matching's and torchcfm's training loops on the torch twins."""
    tdata = [torch.from_numpy(data[i]) for i in range(POOL)]
    path = AffineProbPath(scheduler=CondOTScheduler())

    def fm_sample(x0, x1):
        ps = path.sample(t=torch.rand(x1.shape[0]), x_0=x0, x_1=x1)
        return ps.t, ps.x_t, ps.dx_t

    samplers = {"flow_matching": fm_sample,
                "torchcfm": ConditionalFlowMatcher(sigma=0.0).sample_location_and_conditional_flow}
    runners = []
    for (lib, sample_path), model in zip(samplers.items(), tmodels):
        opt = torch.optim.Adam(model.parameters(), lr=LR)

        def loop(n, model=model, opt=opt, sample_path=sample_path):
            for i in range(n):
                _torch_step(model, opt, sample_path, tdata[i % POOL])

        loop(3)  # warm-up
        n = 2 * calibrate(loop, seconds / 2)
        runners.append(Runner(lib, lib, lambda n=n, loop=loop: loop(n), n, "steps/s"))
    return runners


def train_case(width: int, batch: int, fused: int, family: str, seconds: float) -> Case:
    """Runners for one (model, width, batch) configuration; ``family`` is ``"lab"`` (PlainMLP) or
    ``"film"`` (jflow's residual MLP)."""
    fmodel, params, tmodels = _twins(family, width)
    rng = np.random.default_rng(0)
    err = check_same_outputs(jax.jit(fmodel.apply), params, tmodels[0], rng.standard_normal((16, DIM)).astype(np.float32),
                             rng.uniform(size=16).astype(np.float32), what=f"{family} MLP")
    n_params, n_torch = count_params(params), sum(p.numel() for p in tmodels[0].parameters())
    if n_params != n_torch:
        raise AssertionError(f"{family} MLP: {n_params} flax parameters vs {n_torch} in the torch twin")
    data = toy_batches(rng, POOL, batch)
    loss = make_loss(fmodel.apply, LinearScheduler(), time_bins=0)
    jflow_runners, flops, note = _jflow_runners(loss, params, data, fused, seconds)
    label = f"{'lab MLP' if family == 'lab' else 'jflow FiLM MLP'} 4x{width}, batch {batch}"
    notes = [f"{label}: {n_params:,} parameters (torch twin {n_torch:,}); twins agree to {err:.1e}; {note}"]
    return Case(label, jflow_runners + _peer_runners(tmodels, data, seconds), flops, notes)
