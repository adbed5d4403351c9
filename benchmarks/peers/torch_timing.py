"""torch's side of the timing: its matmul for the machine's peak, and its thread count per runner."""
from __future__ import annotations

import time

import torch

from benchmarks.harness import Runner


def torch_matmul(n: int = 2048):
    """A float32 ``(n, n) @ (n, n)`` ``torch.mm`` for :func:`benchmarks.harness.matmul_peak`."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return lambda: torch.mm(a, b)


def choose_threads(runners: list[Runner], candidates) -> str:
    """Give every peer runner the fastest of ``candidates`` torch intra-op thread counts on its
    own work (one timed call each, best of two); its ``setup`` then sets that count before each
    timed call. On a loaded machine OpenMP's spinning barriers can make more threads far
    slower; on a quiet one they help large matrices only. Returns a note of the choices."""
    parts = []
    for run in runners:
        if run.lib == "jflow":
            continue
        rates = {}
        for threads in candidates:
            torch.set_num_threads(threads)
            best = 0.0
            for _ in range(2):
                t0 = time.perf_counter()
                run.fn()
                best = max(best, run.units / (time.perf_counter() - t0))
            rates[threads] = best
        chosen = max(rates, key=rates.get)
        run.setup = lambda n=chosen: torch.set_num_threads(n)
        parts.append(f"{run.name} {chosen} (" + ", ".join(f"{k}: {v:,.1f} {run.unit}" for k, v in rates.items()) + ")")
    return "torch threads: " + "; ".join(parts)
