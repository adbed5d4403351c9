"""Figures of the image experiment (matplotlib, Agg backend): sample grids per ``w`` and per class, the loss."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

import matplotlib
import numpy as np

from experiments.images.config import ImageConfig

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


def _to_rgb(images: np.ndarray) -> np.ndarray:
    x = (images + 1.0) / 2.0
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def save_grid(path: Path, rows: Sequence[np.ndarray], row_labels: Sequence[str], title: str) -> None:
    """A figure with one row of images per entry of ``rows`` (each ``(n, H, W, C)`` in [-1, 1])."""
    n = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    pad = 1
    canvas = np.ones((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3))
    for i, row in enumerate(rows):
        for j, img in enumerate(_to_rgb(row)):
            canvas[pad + i * (h + pad): pad + i * (h + pad) + h, pad + j * (w + pad): pad + j * (w + pad) + w] = img
    fig, ax = plt.subplots(figsize=(max(3.0, 0.45 * n + 1.0), max(2.0, 0.45 * len(rows) + 0.8)))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_yticks([pad + i * (h + pad) + h / 2 for i in range(len(rows))], list(row_labels))
    ax.set_xticks([])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_loss(path: Path, history) -> None:
    fig, ax = plt.subplots(figsize=(5, 3))
    if history:
        steps, losses = zip(*history)
        ax.plot(steps, losses, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("flow matching loss")
    ax.set_yscale("log")
    ax.set_title("CFG training loss (this invocation)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def w_name(w: float) -> str:
    """``w`` as it appears in file names (``3.5`` -> ``3p5``)."""
    return f"{w:g}".replace(".", "p").replace("-", "m")


def save_sample_grids(out: Path, config: ImageConfig, per_w: Dict[float, np.ndarray], step: int) -> None:
    """``samples_w<w>.png`` (rows = classes) for every ``w`` and ``samples_class<c>.png`` (rows = ``w``)."""
    for w, images in per_w.items():
        save_grid(out / f"samples_w{w_name(w)}.png", list(images), [str(c) for c in range(config.num_classes)],
                  f"{config.dataset}: w = {w:g}, rows = class, step {step}")
    for c in range(config.num_classes):
        save_grid(out / f"samples_class{c}.png", [per_w[w][c] for w in config.guidance_scales],
                  [f"w={w:g}" for w in config.guidance_scales], f"{config.dataset}: class {c}, rows = guidance scale w")
