"""One run of the peer benchmark: the matmul peak, every case of ``--parts`` timed interleaved, the report."""
from __future__ import annotations

import datetime
import os
import platform
import time

import jax
import numpy as np
import torch

from benchmarks import harness
from benchmarks.peers import report
from benchmarks.peers.dit import dit_case
from benchmarks.peers.sampling import sample_cases
from benchmarks.peers.torch_timing import choose_threads, torch_matmul
from benchmarks.peers.training import train_case
from benchmarks.peers.unet import unet_case

# (width, batch, fused k) of each training case, the sampling sizes, the U-Net and DiT batches
SIZES = {
    False: dict(train=[(64, 256, 32), (64, 1000, 32), (512, 4096, 8)], film=[(64, 1000, 32), (512, 1024, 8)],
                sample=[1000, 100_000], unet=16, dit=16),
    True: dict(train=[(64, 256, 16), (512, 1024, 4)], film=[(64, 256, 16)], sample=[1000, 10_000], unet=8, dit=8),
}


def _peaks(repeats: int) -> tuple[float, float]:
    """Best float32 matmul FLOP/s of ``jnp.dot`` and ``torch.mm`` (2048^3)."""
    n = max(repeats, 5)
    return max(harness.matmul_peak(harness.jax_matmul(), repeats=n)), max(harness.matmul_peak(torch_matmul(), repeats=n))


def _cases(args):
    """The cases of ``--parts``, built lazily (each compiles and calibrates when reached), with its repeats."""
    sizes = SIZES[bool(args.quick)]
    for part in args.parts:
        if part in ("train", "film"):
            family = "lab" if part == "train" else "film"
            for width, batch, fused in sizes[part]:
                yield train_case(width, batch, fused, family, args.seconds), args.repeats
        elif part == "sample":
            for n in args.sample_points or sizes["sample"]:
                repeats = args.repeats if n <= 10_000 else max(3, args.repeats // 2)
                for case in sample_cases(n, 64, ["euler", "midpoint"], args.seconds):
                    yield case, repeats
        elif part == "unet":
            yield unet_case(sizes["unet"], args.seconds), args.repeats
        else:
            yield dit_case(sizes["dit"], args.seconds), args.repeats


def _header(args, command, malloc_env, peaks, load_start, started) -> list[str]:
    load_end = harness.load_now()
    peak_j, peak_t = peaks
    malloc = args.malloc + (f" ({' '.join(f'{k}={v}' for k, v in malloc_env.items())})" if args.malloc == "retain" else "")
    return [
        f"# jflow vs flow_matching / torchcfm ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
        f"jax {jax.__version__}, torch {torch.__version__} with the fastest of torch.set_num_threads({args.threads}) "
        f"per peer runner (in the notes); XLA_FLAGS='{os.environ.get('XLA_FLAGS', '')}'; malloc: {malloc}  ",
        "Load average (1/5/15 min): start " + "/".join(f"{x:.1f}" for x in load_start) + ", end "
        + "/".join(f"{x:.1f}" for x in load_end) + f"; run took {time.time() - started:.0f} s  ",
        f"Float32 matmul peak measured here (2048^3): jnp.dot {peak_j / 1e9:.1f} GFLOP/s, torch.mm {peak_t / 1e9:.1f} "
        f"GFLOP/s (best of {max(args.repeats, 5)} at the start and as many at the end); utilisation below is against "
        f"{max(peaks) / 1e9:.1f} GFLOP/s, with the FLOPs of XLA's cost analysis of jflow's step (same math for the peers).",
        "",
        f"Medians over {args.repeats} interleaved repeats (sampling at 100k points: {max(3, args.repeats // 2)}); "
        "IQR = interquartile range; ratios = median of the per-repeat ratios jflow / peer [IQR]. The torchcfm column "
        "of the sampling rows is torchdiffeq's odeint on a 101-point grid (torchcfm's examples).",
    ]


def run(args, *, command: str, malloc_env: dict) -> None:
    """Measure every case of ``args.parts``, print as it goes, write the Markdown report to ``args.out``."""
    torch.manual_seed(0)
    load_start, started = harness.load_now(), time.time()
    print(f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__}, {os.cpu_count()} cores, "
          f"load {load_start}", flush=True)
    torch.set_num_threads(max(args.threads))  # while the runners are built and calibrated
    peaks = _peaks(args.repeats)
    print(f"float32 matmul 2048^3: jnp.dot {peaks[0] / 1e9:.1f} GFLOP/s, torch.mm {peaks[1] / 1e9:.1f}", flush=True)
    cases = []
    for case, repeats in _cases(args):
        case.notes.append(choose_threads(case.runners, args.threads))
        print("\n".join(case.notes), flush=True)
        harness.measure_interleaved(case.runners, repeats)
        cases.append(case)
        print(report.table([case], max(peaks)), flush=True)
    # the load of a shared machine drifts: measure the peak again and use the higher one
    peaks = tuple(np.maximum(peaks, _peaks(args.repeats)))
    text = "\n".join([
        *_header(args, command, malloc_env, peaks, load_start, started), "",
        report.table(cases, max(peaks)), "",
        "Best jflow runner / peer per case (fused steps included; the targets are in benchmarks/README.md):", "",
        report.best_ratios(cases), "", "Notes:", "",
        *[f"- {note}" for case in cases for note in case.notes], "",
    ])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print("\n" + text + f"\nwritten to {args.out}")
