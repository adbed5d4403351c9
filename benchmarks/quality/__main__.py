"""Sample quality of jflow, flow_matching and torchcfm on the same 2-D task at the same budget.

Usage (from the repository root, with the ``bench`` extra for the PyTorch peers)::

    python -m benchmarks.quality                              # 3 sets x 5 seeds x 3 libraries
    python -m benchmarks.quality --runs jflow jflow+lecun_normal jflow+ema --sets 8gaussians
    python -m benchmarks.quality --steps 20 --seeds 0 --out /tmp/q   # a smoke run

Each (run, toy set) pair trains in a fresh worker process (``python -m benchmarks.quality
--worker ...``; float64 runs get ``JAX_ENABLE_X64=1``), all its seeds in turn, and writes
the final samples; this process scores them and appends one line per seed to
``OUT/results.jsonl``. A rerun skips the (run, set, seed, settings) already there, so an
interrupted run resumes; ``OUT/results.md`` is rewritten after every worker. Run names
and swaps: :mod:`benchmarks.quality.spec`; the data: :mod:`benchmarks.quality.toy_sets`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from benchmarks import harness
from benchmarks.quality import report
from benchmarks.quality.spec import RunSpec, fresh_sample, held_out, parse_run
from benchmarks.quality.toy_sets import TOY_SETS

DEFAULT_OUT = os.path.join(harness.REPO, "benchmarks", "results", "quality")


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=list(TOY_SETS), choices=list(TOY_SETS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--runs", nargs="+", default=["jflow", "flow_matching", "torchcfm"],
                   help="library[+swap...] names (benchmarks/quality/spec.py)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch intra-op threads (one is fastest on a loaded machine)")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--report-only", action="store_true", help="rewrite OUT/results.md from OUT/results.jsonl")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _worker(args) -> None:
    """Train every seed of one spec and save the samples; print where they are."""
    spec = RunSpec.from_json(args.worker)
    if spec.library == "jflow":
        from benchmarks.quality.jflow_runner import run_seeds

        runs = run_seeds(spec, args.seeds)
    else:
        from benchmarks.quality.torch_runner import run_seeds

        runs = run_seeds(spec, args.seeds, threads=args.torch_threads)
    os.makedirs(args.out, exist_ok=True)
    result = []
    for r in runs:
        path = os.path.join(args.out, f"samples_{time.time_ns()}_{r['seed']}.npy")
        np.save(path, r["samples"])
        result.append(dict(seed=r["seed"], seconds=r["seconds"], samples=path))
    harness.print_result(result)


def _done(lines, run, toy_set, settings) -> set:
    return {r["seed"] for r in lines if r["run"] == run and r["set"] == toy_set and r["settings"] == settings}


def _append(path: str, line: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")


def _reference(results, lines, toy_set, seeds, held) -> None:
    """The data-vs-data row: a fresh sample of the generator scored like the runs (the metrics' floor)."""
    for seed in sorted(set(seeds) - _done(lines, report.REFERENCE, toy_set, "")):
        line = dict(run=report.REFERENCE, set=toy_set, seed=seed, settings="", seconds=None,
                    **report.score(fresh_sample(toy_set, seed), held))
        _append(results, line)
        lines.append(line)


def _train(args, results, lines, run, toy_set, held) -> None:
    spec = parse_run(run, toy_set, steps=args.steps, batch=args.batch)
    settings = spec.to_json()
    missing = [s for s in args.seeds if s not in _done(lines, run, toy_set, settings)]
    if not missing:
        return
    t0 = time.perf_counter()
    cmd = harness.module_command("benchmarks.quality", "--worker", settings, "--out", os.path.join(args.out, "samples"),
                                 "--torch-threads", str(args.torch_threads), "--seeds", *map(str, missing))
    env = {"JAX_ENABLE_X64": "1"} if spec.dtype == "float64" else {}
    for r in harness.run_worker(cmd, env=env, what=f"{run} on {toy_set}"):
        samples = np.load(r["samples"])
        line = dict(run=run, set=toy_set, seed=r["seed"], settings=settings, seconds=r["seconds"],
                    **report.score(samples, held))
        _append(results, line)
        lines.append(line)
        os.remove(r["samples"])
    print(f"{run} on {toy_set}, seeds {missing}: {time.perf_counter() - t0:.0f} s; load {harness.load_now()}", flush=True)


def _current(args, lines) -> list[dict]:
    """The lines of this command's runs, sets, seeds and budget."""
    keep = {(report.REFERENCE, s, "") for s in args.sets}
    keep |= {(run, s, parse_run(run, s, steps=args.steps, batch=args.batch).to_json())
             for run in args.runs for s in args.sets}
    return [r for r in lines if (r["run"], r["set"], r["settings"]) in keep and r["seed"] in args.seeds]


def _write_report(args, lines) -> str:
    body = report.table(_current(args, lines), args.sets, args.runs)
    text = (f"Command: `python -m benchmarks.quality {' '.join(sys.argv[1:])}`  \n"
            f"Budget: {args.steps} steps, batch {args.batch}; seeds {args.seeds}; held-out set of "
            f"{len(held_out(args.sets[0]))} points; energy distance / sliced W2 / MMD as mean ± std (standard error); "
            "p: Welch's t-test on the energy distances; paired Δ: mean ± standard error of the per-seed "
            "differences of energy distance (a seed's runs share batches and initial noise); train s: median wall seconds of one run's training "
            "(jflow's includes compilation; not valid when the machine is loaded).\n\n" + body + "\n")
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    return text


def main(argv=None) -> None:
    args = _parse_args(argv)
    if args.worker is not None:
        return _worker(args)
    for run in args.runs:  # fail on a bad name before anything trains
        parse_run(run, args.sets[0])
    os.makedirs(args.out, exist_ok=True)
    results = os.path.join(args.out, "results.jsonl")
    lines = report.load(results)
    for toy_set in args.sets:
        held = held_out(toy_set)
        _reference(results, lines, toy_set, args.seeds, held)
        if not args.report_only:
            for run in args.runs:
                _train(args, results, lines, run, toy_set, held)
                _write_report(args, lines)
    print(_write_report(args, lines))


if __name__ == "__main__":
    main()
