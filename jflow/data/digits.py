"""Offline image data: the 8 x 8 handwritten digits shipped inside scikit-learn (no download).

``sklearn.datasets.load_digits`` reads 1797 grey-scale 8 x 8 images with integer pixel
values 0..16 and labels 0..9 from a file inside the scikit-learn package, so this data
set is always available: it is the default for image experiments and tests. It is served
as an :class:`jflow.data.images.ArraySource` (``value_range=(0, 16)``), so
:class:`jflow.data.images.ImageLoader` maps it to ``[-1, 1]`` like any TFDS data set.
"""
from __future__ import annotations

import functools

import numpy as np

from jflow.data.images import ArraySource

__all__ = ["DIGITS_SPLITS", "load_digits"]

DIGITS_SPLITS = ("train", "test", "all")
NUM_DIGITS = 1797


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.asarray(bunch.images).astype(np.uint8)[..., None]  # (1797, 8, 8, 1), values 0..16
    labels = np.asarray(bunch.target).astype(np.int32)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_digits(split: str = "train", *, test_fraction: float = 0.2, split_seed: int = 0) -> ArraySource:
    """The scikit-learn 8 x 8 digits as a random-access source, with a deterministic train/test split.

    The 1797 images are permuted with ``numpy.random.default_rng(split_seed)``; the first
    ``round(1797 * test_fraction)`` (359 by default) form ``"test"``, the rest ``"train"``
    (1438); ``"all"`` is every image in the original order. Records are
    ``{"image": uint8 (8, 8, 1) in 0..16, "label": int32 in 0..9}``.
    """
    if split not in DIGITS_SPLITS:
        raise ValueError(f"unknown digits split {split!r}; choose one of {list(DIGITS_SPLITS)}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1); got {test_fraction}")
    images, labels = _digits_arrays()
    if split != "all":
        perm = np.random.default_rng(split_seed).permutation(images.shape[0])
        n_test = int(round(images.shape[0] * float(test_fraction)))
        idx = perm[:n_test] if split == "test" else perm[n_test:]
        images, labels = images[idx], labels[idx]
    return ArraySource(images, labels, value_range=(0, 16), num_classes=10)
