"""``python -m benchmarks.peers``: read the command line, set the environment, run (see the package docstring).

XLA reads ``XLA_FLAGS`` when JAX starts and glibc reads its ``MALLOC_*`` settings when the
process starts, so this module sets the first before :mod:`benchmarks.peers.run` (which
imports jax and torch) is imported, and for ``--malloc retain`` runs the benchmark again in
a child process that has the second.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import benchmarks.peers
from benchmarks import harness

PARTS = ("train", "film", "sample", "unet", "dit")
# glibc serves blocks above 32 MB (and every block of a thread's arena that does not fit its
# 64 MB heap) with a fresh mmap and unmaps them on free; these settings keep such memory in
# one heap instead.
RETAIN_MALLOC = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=benchmarks.peers.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes and 3 repeats: a smoke run")
    p.add_argument("--out", default=os.path.join(harness.REPO, "benchmarks", "results", "peers.md"),
                   help="Markdown file for the table (default benchmarks/results/peers.md)")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per runner (default 7, quick 3)")
    p.add_argument("--seconds", type=float, default=None,
                   help="target duration of one timed repeat of one runner (default 0.6, quick 0.3)")
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="torch intra-op thread counts to try; each peer runner uses the fastest on its own "
                        "work (default: 1 and the number of CPU cores)")
    p.add_argument("--sample-points", type=int, nargs="+", default=None,
                   help="numbers of points of the sampling part (default 1000 100000, quick 1000 10000)")
    p.add_argument("--xla-flags", default="", help="appended to XLA_FLAGS before JAX starts")
    p.add_argument("--malloc", choices=["system", "retain"], default="system",
                   help="'retain': run in a process whose glibc keeps freed memory "
                        f"({' '.join(f'{k}={v}' for k, v in RETAIN_MALLOC.items())}), so that XLA's "
                        "per-call temporary buffers are not page-faulted in again on every call; "
                        "jflow and the peers run under the same setting")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 7)
    args.seconds = args.seconds or (0.3 if args.quick else 0.6)
    args.threads = args.threads or sorted({1, os.cpu_count()})
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.malloc == "retain" and any(os.environ.get(k) != v for k, v in RETAIN_MALLOC.items()):
        return subprocess.call(harness.module_command("benchmarks.peers", *argv), cwd=harness.REPO,
                               env={**os.environ, **RETAIN_MALLOC})
    if args.xla_flags:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from benchmarks.peers.run import run  # imports jax: only now that XLA_FLAGS is final

    run(args, command="python -m benchmarks.peers " + " ".join(argv), malloc_env=RETAIN_MALLOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
