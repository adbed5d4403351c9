"""The measuring tools every benchmark shares: timers, quartiles, the matmul peak, FLOP counts, workers.

- :func:`time_calls`: wall-clock and CPU seconds of repeated calls after warm-up calls
  (compilation); :func:`quartiles` summarises them.
- :class:`Runner`, :func:`calibrate`, :func:`measure_interleaved`: several runners timed in
  turn (the order alternating between repeats), so that a change of machine load hits all
  of them alike; a ratio of two runners is then the median of per-repeat ratios.
- :func:`matmul_peak`: the float32 matrix-multiply rate of this machine, measured in the
  same process (:func:`jax_matmul` for XLA; any blocking ``n^3`` product, e.g. ``torch.mm``).
- :func:`xla_flops` (XLA's cost analysis of a compiled program, elementwise work included)
  and :func:`dot_flops` (the matrix multiplies and convolutions of an optimized HLO module,
  by the operation the executor runs).
- :func:`run_worker` / :func:`print_result`: a benchmark run in a fresh Python process (for
  settings read when JAX or glibc start), returning one JSON result.

Nothing here imports torch; benchmarks of the PyTorch peers import it inside their runners.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from typing import Callable, Optional, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_PREFIX = "RESULT "

# ------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------


def quartiles(xs: Sequence[float]) -> tuple[float, float, float]:
    """``(q1, median, q3)`` of ``xs`` (numpy's linear interpolation between order statistics)."""
    if len(xs) == 0:
        raise ValueError("quartiles of an empty list: time at least one repeat")
    q = np.percentile(np.asarray(xs, np.float64), [25, 50, 75])
    return float(q[0]), float(q[1]), float(q[2])


@dataclasses.dataclass(frozen=True)
class Timings:
    """Seconds per timed call: ``wall`` (clock) and ``cpu`` (all threads of this process).

    CPU time is the steadier figure on a shared machine: other processes stretch the wall
    clock but not the work this process does.
    """

    wall: tuple[float, ...]
    cpu: tuple[float, ...]

    @property
    def median_wall(self) -> float:
        return quartiles(self.wall)[1]

    @property
    def median_cpu(self) -> float:
        return quartiles(self.cpu)[1]


def time_calls(fn: Callable[[], object], *, repeats: int, warmup: int = 1) -> Timings:
    """Call ``fn()`` ``warmup`` times untimed (compilation, caches), then time ``repeats`` calls.

    ``fn`` must block until its work is done (e.g. end in ``jax.block_until_ready``).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0; got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return Timings(tuple(wall), tuple(cpu))


class Runner:
    """A named callable doing ``units`` units of work (steps, points) per call; ``rates`` collects
    units per second of each timed call. ``setup()`` runs untimed before each call (e.g. it sets
    the torch thread count a peer runner chose)."""

    def __init__(self, name: str, lib: str, fn: Callable[[], object], units: float, unit: str,
                 setup: Optional[Callable[[], object]] = None):
        self.name, self.lib, self.fn, self.units, self.unit = name, lib, fn, units, unit
        self.setup = setup
        self.rates: list[float] = []


def calibrate(fn: Callable[[int], object], seconds: float) -> int:
    """Number ``n`` of inner repetitions so that ``fn(n)`` lasts about ``seconds`` (from one ``fn(1)``)."""
    t0 = time.perf_counter()
    fn(1)
    dt = max(time.perf_counter() - t0, 1e-6)
    return max(1, int(round(seconds / dt)))


def measure_interleaved(runners: Sequence[Runner], repeats: int) -> None:
    """Each repeat times every runner once, in alternating order; appends to ``runner.rates``."""
    for r in range(repeats):
        for run in runners if r % 2 == 0 else runners[::-1]:
            if run.setup is not None:
                run.setup()
            t0 = time.perf_counter()
            run.fn()
            run.rates.append(run.units / (time.perf_counter() - t0))


def minor_faults(fn: Callable[[], object]) -> float:
    """Minor page faults of this process while ``fn()`` runs: first touches of freshly mapped
    memory, e.g. XLA's temporary buffers when the allocator maps them anew for every call."""
    try:
        import resource
    except ImportError:  # not on Windows
        fn()
        return float("nan")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)


def load_now() -> tuple[float, float, float]:
    """The machine's 1/5/15-minute load averages (NaN where the OS has none)."""
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


# ------------------------------------------------------------------------------------------
# Matmul peak and FLOP counts
# ------------------------------------------------------------------------------------------


def jax_matmul(n: int = 2048) -> Callable[[], object]:
    """A blocking jitted float32 ``(n, n) @ (n, n)`` product for :func:`matmul_peak`."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    return lambda: dot(a, b).block_until_ready()


def matmul_peak(matmul: Callable[[], object], n: int = 2048, repeats: int = 5) -> list[float]:
    """FLOP/s (``2 n^3`` per call) of ``repeats`` timed calls of ``matmul`` after one warm-up call."""
    return [2.0 * n**3 / t for t in time_calls(matmul, repeats=repeats).wall]


def xla_flops(jitted, *args) -> tuple[float, float, float]:
    """``(FLOPs of one call, lowering seconds, compile seconds)`` from XLA's cost analysis of the
    compiled program; elementwise operations count too."""
    t0 = time.perf_counter()
    lowered = jitted.lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", float("nan"))), t1 - t0, t2 - t1


_DEF = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*\w+\[([\d,]*)\]")
_DOT = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*\w+\[([\d,]*)\]\S*\s+dot\(%([\w.\-]+),.*lhs_contracting_dims=\{([\d,]*)\}")
_CONV = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*\w+\[([\d,]*)\]\S*\s+convolution\(%([\w.\-]+), %([\w.\-]+)\).*dim_labels=\w+_(\w+)->")
_COMP = re.compile(r"^(?:ENTRY\s+)?%([\w.\-]+)\s")
_CALLS = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=.*\bcalls=%([\w.\-]+)")


def _dims(text: str) -> list[int]:
    return [int(d) for d in text.split(",") if d]


def _parse_products(hlo_text: str):
    """Every dot / ungrouped convolution as ``(name, flops, computation)`` and the call graph."""
    shapes, comp_of, products, callers = {}, {}, [], collections.defaultdict(list)
    comp = None
    for line in hlo_text.splitlines():
        m = _COMP.match(line)
        if m and line.rstrip().endswith("{"):
            comp = m.group(1)
            continue
        m = _DEF.match(line)
        if m:
            shapes[m.group(1)], comp_of[m.group(1)] = _dims(m.group(2)), comp
        m = _DOT.match(line)
        if m:  # 2 * |output| * prod(contracting dims of the left operand)
            lhs = shapes.get(m.group(3), [])
            k = np.prod([lhs[d] if d < len(lhs) else 1 for d in _dims(m.group(4))])
            products.append((m.group(1), 2.0 * np.prod(_dims(m.group(2))) * k, comp))
        m = _CONV.match(line)
        if m and "group_count" not in line:  # grouped convolutions are not counted
            # each output element sums over the kernel's dims other than its output features
            kernel = shapes.get(m.group(4), [])
            k = np.prod([d for d, c in zip(kernel, m.group(5)) if c != "o"])
            products.append((m.group(1), 2.0 * np.prod(_dims(m.group(2))) * k, comp))
        m = _CALLS.match(line)
        if m:
            callers[m.group(2)].append(m.group(1))
    return products, callers, comp_of


def dot_flops(hlo_text: str) -> dict:
    """``{top-level op name: FLOPs}`` of every ``dot`` and ungrouped ``convolution`` of an optimized
    HLO module (``jit(f).lower(...).compile().as_text()``), alone or inside a fusion:
    ``2 * prod(output shape) * prod(contracted sizes)``, keyed by the op the executor runs
    (a fusion or a plain dot), never by an instruction nested inside a fused computation."""
    products, callers, comp_of = _parse_products(hlo_text)
    out = collections.Counter()
    for name, flops, comp in products:
        owner, seen = name, set()
        while comp in callers and comp not in seen:  # climb to the op the executor runs
            seen.add(comp)
            owner = callers[comp][0]
            comp = comp_of.get(owner)
        out[owner] += float(flops)
    return dict(out)


# ------------------------------------------------------------------------------------------
# Worker processes
# ------------------------------------------------------------------------------------------


def print_result(obj) -> None:
    """Print one JSON result line for :func:`run_worker` to read."""
    print(RESULT_PREFIX + json.dumps(obj), flush=True)


def run_worker(cmd: Sequence[str], *, env: Optional[dict] = None, what: str = "worker"):
    """Run ``cmd`` (e.g. ``[sys.executable, "-m", "benchmarks.train", "--worker", ...]``) from the
    repository root with ``env`` added to this environment; return the JSON of its last
    :func:`print_result` line. A failed worker raises ``RuntimeError`` with its stderr's tail."""
    out = subprocess.run(list(cmd), cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if out.returncode or not lines:
        raise RuntimeError(f"{what} failed (exit code {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def module_command(module: str, *args: str) -> list[str]:
    """``python -m module args...`` with this interpreter."""
    return [sys.executable, "-m", module, *args]
