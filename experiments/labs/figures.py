"""Drawing helpers of the labs (matplotlib, Agg backend): densities, point clouds, trajectories."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List

import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend; the labs draw with this one)


def save(fig, path: Path, written: List[Path]) -> None:
    """Save and close ``fig`` at ``path``; append the path to ``written``."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)


def density_contours(ax, log_prob: Callable, lim: float, n: int = 120) -> None:
    """Filled contours of ``exp(log_prob)`` on ``[-lim, lim]^2``."""
    g = np.linspace(-lim, lim, n)
    xx, yy = np.meshgrid(g, g)
    pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)
    dens = np.exp(np.asarray(log_prob(pts))).reshape(n, n)
    ax.contourf(xx, yy, dens, levels=12, cmap="Blues", alpha=0.6)


def scatter(ax, x, title: str, lim: float, color="C1") -> None:
    """Points ``x`` (N, 2) on ``[-lim, lim]^2``."""
    x = np.asarray(x)
    ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, color=color)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)


def trajectories(ax, traj, title: str, lim: float, n: int = 60) -> None:
    """Trajectories ``(T, N, 2)``: lines from start (grey dots) to end (red dots)."""
    traj = np.asarray(traj)[:, :n]
    ax.plot(traj[:, :, 0], traj[:, :, 1], lw=0.5, alpha=0.6, color="C0")
    ax.scatter(traj[0, :, 0], traj[0, :, 1], s=4, color="grey", zorder=3)
    ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=4, color="C3", zorder=3)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
