"""Sampling cases of the peer benchmark: 100 ODE steps of the lab MLP (random weights) in each library.

``jit(odeint)`` against flow_matching's ``ODESolver.sample(step_size=0.01)`` and torchdiffeq's
``odeint`` on a 101-point grid (how torchcfm's examples sample without torchdyn). Field
evaluations are counted (100 for Euler, 200 for midpoint, in every library) and the final
points compared.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torchdiffeq
from flow_matching.solver import ODESolver
from flow_matching.utils import ModelWrapper

from benchmarks.harness import Runner, calibrate, xla_flops
from benchmarks.peers.report import Case
from benchmarks.peers.twins import DIM, TorchPlainMLP, copy_params
from jflow.integrators import odeint, uniform_grid
from jflow.models import PlainMLP

STEPS = 100


class _CountingField(ModelWrapper):
    """flow_matching velocity wrapper around a torch field ``model(x, t)`` that counts evaluations."""

    def __init__(self, model):
        super().__init__(model)
        self.nfe = 0

    def forward(self, x, t, **extras):
        self.nfe += 1
        return self.model(x, t)


def _peer_solvers(tmodel, tx0, method):
    """``{lib: (solve, counter)}``; ``counter()`` reads the field evaluations so far."""
    fm_field = _CountingField(tmodel)
    solver = ODESolver(velocity_model=fm_field)
    counts = {"nfe": 0}

    def cfm_field(t, x):  # torchcfm's torch_wrapper convention: (t, x)
        counts["nfe"] += 1
        return tmodel(x, t)

    tspan = torch.linspace(0.0, 1.0, STEPS + 1)

    def fm_solve():
        return solver.sample(x_init=tx0, step_size=1.0 / STEPS, method=method, time_grid=torch.tensor([0.0, 1.0]))

    def cfm_solve():
        with torch.no_grad():
            return torchdiffeq.odeint(cfm_field, tx0, tspan, method=method)[-1]

    return {"flow_matching": (fm_solve, lambda: fm_field.nfe), "torchcfm": (cfm_solve, lambda: counts["nfe"])}


def _method_case(fmodel, params, tmodel, x0, method, seconds) -> Case:
    n_points = x0.shape[0]
    ts = uniform_grid(STEPS, dtype=jnp.float32)
    jsolve = jax.jit(lambda p, x: odeint(lambda x, t, p: fmodel.apply(p, x, t), x, ts, method=method, args=(p,)))
    jx0 = jnp.asarray(x0)
    t0 = time.perf_counter()
    ref = np.asarray(jsolve(params, jx0))
    first = time.perf_counter() - t0
    solvers = _peer_solvers(tmodel, torch.from_numpy(x0), method)
    checks = []
    for lib, (solve, nfe) in solvers.items():
        err = float(np.max(np.abs(solve().numpy() - ref)) / np.max(np.abs(ref)))
        checks.append(f"{lib} NFE {nfe()}, max |x_1 - x_1(jflow)| / max |x_1(jflow)| {err:.1e}")
    nfe_jflow = STEPS * (1 if method == "euler" else 2)
    flops_eval = xla_flops(jax.jit(fmodel.apply), params, jx0, jnp.float32(0.5))[0]

    def repeat(fn, n):
        for _ in range(n):
            jax.block_until_ready(fn())

    runners = []
    for name, lib, fn in [(f"jflow odeint {method}", "jflow", lambda: jsolve(params, jx0)),
                          (f"flow_matching ODESolver {method}", "flow_matching", solvers["flow_matching"][0]),
                          (f"torchdiffeq odeint {method}", "torchcfm", solvers["torchcfm"][0])]:
        n = calibrate(lambda n, fn=fn: repeat(fn, n), seconds)
        runners.append(Runner(name, lib, lambda n=n, fn=fn: repeat(fn, n), n * n_points, "points/s"))
    label = f"sample lab MLP 4x{tmodel.output.in_features}, {method} {STEPS} steps, {n_points:,} points"
    note = (f"sampling {method}, {n_points:,} points: NFE jflow {nfe_jflow}; " + "; ".join(checks)
            + f"; jflow first call {first:.2f} s; XLA FLOPs per field evaluation {flops_eval / 1e6:.1f} M")
    return Case(label, runners, flops_eval * nfe_jflow / n_points, [note])


def sample_cases(n_points: int, width: int, methods, seconds: float) -> list[Case]:
    """One case per ODE method, all on the same random-weight field and starting points."""
    fmodel = PlainMLP(width=width, depth=4)
    params = fmodel.init(jax.random.PRNGKey(0), jnp.zeros((2, DIM)), jnp.zeros((2,)))
    tmodel = TorchPlainMLP(width, 4)
    copy_params(params, tmodel)
    tmodel.eval()
    for p in tmodel.parameters():
        p.requires_grad_(False)
    x0 = np.random.default_rng(1).standard_normal((n_points, DIM)).astype(np.float32)
    return [_method_case(fmodel, params, tmodel, x0, method, seconds) for method in methods]
