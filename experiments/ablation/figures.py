"""Figures of the ablation (matplotlib, Agg backend): samples, metrics vs steps, trajectories,
learned vs exact vector fields, and the field error over time."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

from experiments.ablation.config import METRICS
from experiments.ablation.samplers import SAMPLERS

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


def setting_label(sampler: str, sigma: float) -> str:
    """How a ``(sampler, sigma)`` setting is named in figures and summaries."""
    entry = SAMPLERS[sampler]
    return f"{entry.short or sampler} sigma={sigma:g}" if entry.stochastic else sampler


def plot_samples(path, cfg, specs, samples, heldout):
    settings = cfg.sampler_settings()
    ncols = 1 + len(settings)
    fig, axes = plt.subplots(len(specs), ncols, figsize=(2.6 * ncols, 2.6 * len(specs)), squeeze=False)
    lim = float(np.quantile(np.abs(heldout), 0.995)) * 1.25
    for i, spec in enumerate(specs):
        axes[i, 0].scatter(heldout[:, 0], heldout[:, 1], s=1, c="gray")
        axes[i, 0].set_title("held-out data" if i == 0 else "")
        axes[i, 0].set_ylabel(spec.name, fontsize=8)
        for j, setting in enumerate(settings, start=1):
            x = samples[spec.name][setting][-1]
            axes[i, j].scatter(x[:, 0], x[:, 1], s=1, c="C%d" % (i % 10))
            if i == 0:
                axes[i, j].set_title(f"{setting_label(*setting)}, {max(cfg.sample_steps)} steps", fontsize=8)
    for ax in axes.ravel():
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal")
    fig.suptitle("samples (seed 0) per method and sampler")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_metrics(path, cfg, rows, reference):
    settings = cfg.sampler_settings()
    metric_names = [m for m in METRICS if any(r.get(f"{m}_mean") is not None for r in rows)]
    fig, axes = plt.subplots(len(metric_names), len(settings),
                             figsize=(3.2 * len(settings), 2.6 * len(metric_names)), squeeze=False)
    runs = list(dict.fromkeys((r["method"], r["scheduler"]) for r in rows))
    for i, m in enumerate(metric_names):
        for j, (sampler, sigma) in enumerate(settings):
            ax = axes[i, j]
            for c, run in enumerate(runs):
                sel = [r for r in rows if (r["method"], r["scheduler"]) == run and r["sampler"] == sampler
                       and r["sigma"] == sigma and r.get(f"{m}_mean") is not None]
                if not sel:
                    continue
                steps = [r["steps"] for r in sel]
                mean = np.array([r[f"{m}_mean"] for r in sel])
                std = np.array([r[f"{m}_std"] for r in sel])
                ax.errorbar(steps, mean, yerr=std, marker="o", ms=3, capsize=2, color=f"C{c}",
                            label=f"{run[0]}@{run[1]}")
            if not ax.lines:
                ax.set_axis_off()
                ax.text(0.5, 0.5, f"no {m} for the SDE", ha="center", va="center", transform=ax.transAxes)
                continue
            if reference.get(f"{m}_mean") is not None:
                ax.axhline(reference[f"{m}_mean"], color="k", ls="--", lw=0.8, label="reference")
            ax.set_xscale("log", base=2)
            if m != "nll":
                ax.set_yscale("log")
            if i == 0:
                ax.set_title(setting_label(sampler, sigma), fontsize=9)
            if j == 0:
                ax.set_ylabel(m)
            if i == len(metric_names) - 1:
                ax.set_xlabel("steps")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle("metric vs number of steps (mean +- std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_trajectories(path, cfg, specs, heldout, samples, n_paths=150):
    """ODE (Heun if sampled, else the first ODE sampler) and SDE (largest sigma) paths of seed 0."""
    n = max(cfg.sample_steps)
    settings = cfg.sampler_settings()
    ode = [s for s in settings if s[0] == "heun"] or [s for s in settings if not SAMPLERS[s[0]].stochastic]
    sde = sorted(s for s in settings if SAMPLERS[s[0]].stochastic)
    shown = ode[:1] + sde[-1:]
    fig, axes = plt.subplots(len(shown), len(specs), figsize=(3.0 * len(specs), 3.0 * len(shown)), squeeze=False)
    lim = float(np.quantile(np.abs(heldout), 0.995)) * 1.25
    for j, spec in enumerate(specs):
        for i, setting in enumerate(shown):
            traj = np.asarray(samples[spec.name][setting])[:, :n_paths]
            ax = axes[i, j]
            ax.scatter(heldout[:, 0], heldout[:, 1], s=1, c="lightgray")
            ax.plot(traj[:, :, 0], traj[:, :, 1], lw=0.4, alpha=0.5, color="C0")
            ax.scatter(traj[0, :, 0], traj[0, :, 1], s=3, c="k", label="t = t_eps")
            ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=3, c="C3", label="t = 1 - t_eps")
            ax.set_title(f"{spec.name}\n{setting_label(*setting)}, {n} steps", fontsize=8)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
    axes[0, 0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_vector_field(path, specs, evals, heldout, all_params, gm, times=(0.25, 0.5, 0.75, 0.9)):
    """Quiver of the learned velocity (seed 0, converted) and of the exact marginal velocity.

    ``evals``: run name -> :class:`experiments.ablation.evaluation.EvalPrograms`.
    """
    lim = float(np.quantile(np.abs(heldout), 0.995)) * 1.1
    g = np.linspace(-lim, lim, 15, dtype=np.float32)
    grid = jnp.asarray(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2))
    fig, axes = plt.subplots(len(times), len(specs), figsize=(3.0 * len(specs), 3.0 * len(times)), squeeze=False)
    for j, spec in enumerate(specs):
        learned_fn, exact_fn = evals[spec.name].velocity, evals[spec.name].exact_velocity
        params0 = jax.tree.map(lambda p: p[0], all_params[spec.name])
        for i, t in enumerate(times):
            ax = axes[i, j]
            learned = np.asarray(learned_fn(grid, jnp.float32(t), params0))
            exact = np.asarray(exact_fn(gm, grid, jnp.float32(t))) if gm is not None else None
            # one arrow scale for both fields of a panel: the longest reference arrow spans 1.5 cells
            ref = exact if exact is not None else learned
            scale = float(np.max(np.linalg.norm(ref, axis=-1))) / (1.5 * (g[1] - g[0])) + 1e-12
            ax.quiver(grid[:, 0], grid[:, 1], learned[:, 0], learned[:, 1], color="C3", alpha=0.8,
                      angles="xy", scale_units="xy", scale=scale, label="learned")
            if exact is not None:
                ax.quiver(grid[:, 0], grid[:, 1], exact[:, 0], exact[:, 1], color="k", alpha=0.5,
                          angles="xy", scale_units="xy", scale=scale, label="exact")
            ax.set_title(f"{spec.name}, t={t:g}", fontsize=8)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].legend(fontsize=6, loc="lower left")
    fig.suptitle("learned (red) vs exact marginal (black) velocity" if gm is not None else "learned velocity")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_field_error(path, cfg, model_rows):
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for c, row in enumerate(model_rows):
        ts = [float(t) for t in row["field_mse_by_t"]]
        ax.plot(ts, list(row["field_mse_by_t"].values()), marker="o", color=f"C{c}", label=row["run"])
    ax.set_yscale("log")
    ax.set_xlabel("t (flow time)")
    ax.set_ylabel("E||u_learned - u_exact||^2 (seed mean)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
