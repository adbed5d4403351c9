"""Scores and the Markdown table of the quality comparison: metrics, mean, std, standard error, Welch tests.

Every sample set is scored against the same held-out set with ``jflow.metrics`` on numpy
arrays (energy distance, sliced Wasserstein-2 with 128 fixed directions, RBF-mixture
MMD), whatever library produced it. Per toy set, each run gets the mean, standard
deviation and standard error (std / sqrt(n)) over seeds, Welch's t-test
(``scipy.stats.ttest_ind(equal_var=False)``) of its energy distances against
flow_matching's and against the jflow baseline's, and the paired difference of energy
distances to each (mean ± standard error over the seeds both ran: the runs of one seed
share their training batches and initial noise).
"""
from __future__ import annotations

import json
import math

import jax
import numpy as np

from jflow import metrics

METRICS = ("energy", "sliced_w2", "mmd")
REFERENCE = "data (fresh sample)"


def score(samples: np.ndarray, held: np.ndarray) -> dict:
    """The three metrics of ``samples`` against ``held`` (NaN for non-finite samples)."""
    if not np.all(np.isfinite(samples)):
        return {m: float("nan") for m in METRICS}
    return dict(
        energy=float(metrics.energy_distance(samples, held)),
        sliced_w2=float(metrics.sliced_wasserstein(samples, held, key=jax.random.PRNGKey(0))),
        mmd=float(metrics.mmd(samples, held)),
    )


def load(path: str) -> list[dict]:
    """The result lines of ``results.jsonl``, one per (run, toy set, seed, settings): the first
    one recorded wins (two commands writing to one folder at once may both score a seed)."""
    try:
        with open(path) as f:
            lines = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []
    first = {}
    for r in lines:
        first.setdefault((r["run"], r["set"], r["seed"], r["settings"]), r)
    return list(first.values())


def summary(values) -> tuple[float, float, float]:
    """``(mean, std, standard error)`` with the sample std (``ddof=1``; 0 for one value)."""
    v = np.asarray(values, np.float64)
    std = float(np.std(v, ddof=1)) if v.size > 1 else 0.0
    return float(np.mean(v)), std, std / math.sqrt(v.size)


def welch_p(a, b) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances); NaN with fewer than two values each."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return float("nan")
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "nan"
    return f"{x:.2g}" if abs(x) < 1e-3 else (f"{x:.4f}" if abs(x) < 1 else f"{x:.3f}")


def paired_difference(rows: list[dict], other: list[dict], metric: str = "energy") -> tuple[float, float]:
    """``(mean, standard error)`` of ``rows - other`` over the seeds both have: the runs of one seed
    share their training batches and initial noise, so pairing removes that part of the spread."""
    theirs = {r["seed"]: r[metric] for r in other}
    diffs = [r[metric] - theirs[r["seed"]] for r in rows if r["seed"] in theirs]
    if len(diffs) < 2:
        return float("nan"), float("nan")
    mean, _, se = summary(diffs)
    return mean, se


def _row(name: str, rows: list[dict], peers: dict) -> str:
    cells = [name, str(len(rows))]
    for m in METRICS:
        mean, std, se = summary([r[m] for r in rows])
        cells.append(f"{_fmt(mean)} ± {_fmt(std)} ({_fmt(se)})")
    energies = [r["energy"] for r in rows]
    for peer in ("flow_matching", "jflow"):
        other = peers.get(peer)
        if other is None or other is rows or name == REFERENCE:
            cells += ["", ""]
            continue
        diff, se = paired_difference(rows, other)
        cells += [f"{welch_p(energies, [r['energy'] for r in other]):.2g}", f"{diff:+.4f} ± {se:.4f}"]
    seconds = [r["seconds"] for r in rows if r.get("seconds") is not None]
    cells.append(f"{np.median(seconds):.0f}" if seconds else "-")
    return "| " + " | ".join(cells) + " |"


def table(lines: list[dict], toy_sets, runs) -> str:
    """One Markdown table: per toy set, the reference row and each run's row (in ``runs`` order)."""
    out = [
        "| set | run | seeds | energy distance | sliced W2 | MMD | p vs flow_matching | paired Δ vs flow_matching "
        "| p vs jflow | paired Δ vs jflow | train s |",
        "|---|---|---:|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for toy_set in toy_sets:
        by_run = {run: [r for r in lines if r["set"] == toy_set and r["run"] == run] for run in (REFERENCE, *runs)}
        by_run = {k: sorted(v, key=lambda r: r["seed"]) for k, v in by_run.items() if v}
        for run, rows in by_run.items():
            out.append(f"| {toy_set} " + _row(run, rows, by_run)[2:])
    return "\n".join(out)
