"""The ablation's figures: samples per run and sampler, metrics vs steps, field error vs time."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_samples(path: Path, samples: Dict[str, Dict[str, np.ndarray]], heldout: np.ndarray, steps: int):
    """One row per run: held-out data, then seed 0's samples of each sampler at ``steps`` steps."""
    plt = _plt()
    runs = list(samples)
    ncols = 1 + max(len(v) for v in samples.values())
    fig, axes = plt.subplots(len(runs), ncols, figsize=(2.4 * ncols, 2.4 * len(runs)), squeeze=False)
    lim = float(np.quantile(np.abs(heldout), 0.995)) * 1.25
    for i, run in enumerate(runs):
        axes[i, 0].scatter(heldout[:, 0], heldout[:, 1], s=1, c="gray")
        axes[i, 0].set_ylabel(run, fontsize=7)
        for j, (sampler, x) in enumerate(samples[run].items(), start=1):
            axes[i, j].scatter(x[:, 0], x[:, 1], s=1, c=f"C{i % 10}")
            axes[i, j].set_title(f"{sampler}, {steps} steps", fontsize=7)
    for ax in axes.ravel():
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal")
    axes[0, 0].set_title("held-out data", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_metrics(path: Path, rows: List[dict], reference: dict, metric_names=("energy", "sw2")):
    """Metric vs steps (mean +- std over seeds), one panel per metric and sampler, one line per run."""
    plt = _plt()
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    runs = list(dict.fromkeys(r["run"] for r in rows))
    fig, axes = plt.subplots(len(metric_names), len(samplers), figsize=(3.2 * len(samplers), 2.8 * len(metric_names)),
                             squeeze=False)
    for i, m in enumerate(metric_names):
        for j, sampler in enumerate(samplers):
            ax = axes[i, j]
            for c, run in enumerate(runs):
                sel = [r for r in rows if r["run"] == run and r["sampler"] == sampler]
                if sel:
                    ax.errorbar([r["steps"] for r in sel], [r[f"{m}_mean"] for r in sel],
                                yerr=[r[f"{m}_std"] for r in sel], marker="o", ms=3, capsize=2, color=f"C{c}", label=run)
            ax.axhline(reference[f"{m}_mean"], color="k", ls="--", lw=0.8, label="data vs data")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            if i == 0:
                ax.set_title(sampler, fontsize=9)
            if j == 0:
                ax.set_ylabel(m)
            if i == len(metric_names) - 1:
                ax.set_xlabel("steps")
    axes[0, -1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_field_error(path: Path, model_rows: List[dict]):
    """Error of the learned (converted) velocity against the exact marginal velocity, per time."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for c, row in enumerate(model_rows):
        by_t = row["field_mse_by_t"]
        ax.plot([float(t) for t in by_t], list(by_t.values()), marker="o", color=f"C{c}", label=row["run"])
    ax.set_yscale("log")
    ax.set_xlabel("t (flow time; 0 noise, 1 data)")
    ax.set_ylabel("E||u_learned - u_exact||^2 (seed mean)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
