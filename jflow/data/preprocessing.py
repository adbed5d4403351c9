"""Image preprocessing on the host (numpy): pixel range to ``[-1, 1]``, bilinear resize, padding.

Used by :class:`jflow.data.ImageLoader` on every batch; all functions take and return
``(B, H, W, C)`` arrays and compute in float32.
"""
from __future__ import annotations

import numpy as np

from jflow._checks import check_positive_int

__all__ = ["resize_images", "pad_images", "preprocess_images", "image_size", "pixel_range"]


def image_size(value, name: str) -> tuple[int, int]:
    """``(H, W)`` from an int (a square) or a pair of positive ints, else ``ValueError`` naming ``name``."""
    if isinstance(value, (int, np.integer)):
        value = (value, value)
    try:
        h, w = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair (H, W); got {value!r}") from None
    return check_positive_int(h, f"{name} height"), check_positive_int(w, f"{name} width")


def pixel_range(value_range) -> tuple[float, float]:
    """``(lo, hi)`` of raw pixel values as floats, else ``ValueError`` (``hi > lo`` required)."""
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"value_range must be a pair (lo, hi) of numbers; got {value_range!r}") from None
    if not hi > lo:
        raise ValueError(f"value_range must be (lo, hi) with hi > lo; got {value_range}")
    return lo, hi


def _linear_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` bilinear interpolation weights (half-pixel centres, triangle kernel
    widened by ``n_in / n_out`` when shrinking, rows normalised), as ``jax.image.resize(...,
    "linear", antialias=True)``."""
    scale = n_out / n_in
    width = max(1.0 / scale, 1.0)
    centres = (np.arange(n_out) + 0.5) / scale - 0.5
    dist = np.abs(np.arange(n_in)[None, :] - centres[:, None]) / width
    weights = np.maximum(0.0, 1.0 - dist)
    return weights / weights.sum(axis=1, keepdims=True)


def resize_images(images: np.ndarray, size) -> np.ndarray:
    """Bilinear resize of ``(B, H, W, C)`` images to ``size = (H', W')`` (antialiased when shrinking).

    Separable: ``out = R_h @ image @ R_w^T`` per channel with the weight matrices of
    ``jax.image.resize(..., method="linear")``; float32 math and result.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, H, W, C); got {images.shape}")
    h, w = image_size(size, "size")
    if (h, w) == images.shape[1:3]:
        return images.astype(np.float32)
    rh = _linear_resize_matrix(images.shape[1], h)
    rw = _linear_resize_matrix(images.shape[2], w)
    planes = np.moveaxis(images.astype(np.float32), -1, 1)  # (B, C, H, W): batched matmuls
    out = rh.astype(np.float32) @ planes @ rw.T.astype(np.float32)
    return np.ascontiguousarray(np.moveaxis(out, 1, -1))


def pad_images(images: np.ndarray, size, value: float = -1.0) -> np.ndarray:
    """Pad ``(B, H, W, C)`` images symmetrically to ``size = (H', W')`` with constant ``value``
    (extra odd pixel at the bottom/right). ``size`` smaller than the image raises ``ValueError``."""
    images = np.asarray(images)
    h, w = image_size(size, "pad_to")
    dh, dw = h - images.shape[1], w - images.shape[2]
    if dh < 0 or dw < 0:
        raise ValueError(
            f"pad_to={(h, w)} is smaller than the images {images.shape[1:3]}; use resize_to to shrink"
        )
    pads = ((0, 0), (dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2), (0, 0))
    return np.pad(images, pads, mode="constant", constant_values=value)


def preprocess_images(images, *, value_range=(0, 255), resize_to=None, pad_to=None, pad_value: float = -1.0):
    """Raw pixels ``(B, H, W, C)`` -> float32 in ``[-1, 1]``: ``2 (x - lo) / (hi - lo) - 1``, then
    optional :func:`resize_images` to ``resize_to`` and :func:`pad_images` to ``pad_to``."""
    lo, hi = pixel_range(value_range)
    x = (np.asarray(images, np.float32) - lo) * np.float32(2.0 / (hi - lo)) - np.float32(1.0)
    if resize_to is not None:
        x = np.clip(resize_images(x, resize_to), -1.0, 1.0)
    if pad_to is not None:
        x = pad_images(x, pad_to, pad_value)
    return x.astype(np.float32)
