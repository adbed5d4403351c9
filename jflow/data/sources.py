r"""Image record sources: random-access sequences of ``{"image", "label"}`` records.

A *source* is any random-access sequence of records: ``len(source)`` and
``source[i] -> {"image": (H, W, C) or (H, W) array, "label": int}``. Three kinds exist:

- :class:`ArraySource`: in-memory arrays with that record interface;
- :func:`tfds_source`: a TensorFlow-Datasets data set read with ``tfds.data_source``
  (ArrayRecord files, no TensorFlow needed to *read*; mnist, fashion_mnist, cifar10 or any
  TFDS image data set by name). It never downloads unless ``download=True``; a data set
  that is not prepared raises :class:`DatasetNotPreparedError` saying how to prepare it;
- :func:`load_digits`: the offline 8 x 8 handwritten digits shipped inside scikit-learn
  (no download), an :class:`ArraySource`: the default for image experiments and tests.

:func:`image_source` picks one by name. :class:`jflow.data.ImageLoader` turns any of
them into batches. ``tensorflow_datasets`` and ``sklearn`` are imported only when such a
source is built.
"""
from __future__ import annotations

import functools
import os
from typing import Optional

import numpy as np

from jflow.data.preprocessing import pixel_range

__all__ = [
    "DatasetNotPreparedError",
    "ArraySource",
    "tfds_source",
    "DIGITS_SPLITS",
    "load_digits",
    "image_source",
]

OFFLINE_DATASET = "digits"
DIGITS_SPLITS = ("train", "test", "all")


class DatasetNotPreparedError(FileNotFoundError):
    """A TFDS data set is not present (in a random-access format) in the data directory searched."""



class ArraySource:
    """In-memory random-access source with the record interface of a TFDS data source.

    Args:
      images: ``(N, H, W, C)`` or ``(N, H, W)`` array (any numeric dtype).
      labels: ``(N,)`` integer labels, or ``None`` for an unlabelled source.
      value_range: ``(lo, hi)`` of the raw pixel values, mapped to ``[-1, 1]`` by the
        loader (``(0, 255)`` for 8-bit images, ``(0, 16)`` for the scikit-learn digits).
      num_classes: number of classes (default ``max(labels) + 1``).

    ``source[i]`` returns ``{"image": images[i], "label": labels[i]}``;
    :meth:`read_batch` gathers many records at once (the loader's fast path).
    """

    def __init__(self, images, labels=None, *, value_range=(0, 255), num_classes: Optional[int] = None):
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[0] < 1:
            raise ValueError(f"images must have shape (N, H, W, C) or (N, H, W) with N >= 1; got {images.shape}")
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(
                    f"labels must be integers of shape (N,) = ({images.shape[0]},); got dtype {labels.dtype} "
                    f"and shape {labels.shape}"
                )
        self.images = images
        self.labels = labels
        self.value_range = pixel_range(value_range)
        if num_classes is None and labels is not None:
            num_classes = int(labels.max()) + 1
        self.num_classes = num_classes

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"record index {index} out of range for a source of {len(self)} records")
        record = {"image": self.images[index]}
        if self.labels is not None:
            record["label"] = self.labels[index]
        return record

    def read_batch(self, indices: np.ndarray) -> dict:
        """Records ``indices`` stacked: ``{"image": (B, H, W, C), "label": (B,)}``."""
        batch = {"image": self.images[indices]}
        if self.labels is not None:
            batch["label"] = self.labels[indices]
        return batch

    def __repr__(self) -> str:
        return (
            f"ArraySource(images={self.images.shape}, value_range={self.value_range}, "
            f"num_classes={self.num_classes})"
        )


def _default_data_dir() -> str:
    from tensorflow_datasets.core import constants

    return os.environ.get("TFDS_DATA_DIR") or constants.DATA_DIR


def _not_prepared_message(name: str, split, data_dir: Optional[str], searched: str) -> str:
    where = data_dir or _default_data_dir()
    return (
        f"TFDS data set {name!r} (split {split!r}) is not prepared under data_dir={where!r} "
        f"(looked in {searched!r}), and jflow does not download by default. To prepare it, on a "
        f"machine with internet access and tensorflow installed run\n"
        f"    tfds build {name} --data_dir={where} --file_format=array_record\n"
        f"or in Python\n"
        f"    tfds.builder({name!r}, data_dir={where!r}, file_format='array_record').download_and_prepare()\n"
        f"and copy the data directory here (random access needs the array_record format). Or pass "
        f"download=True, or use the offline data set {OFFLINE_DATASET!r} (scikit-learn's 8x8 digits, "
        f"no download)."
    )


def tfds_source(name: str, split: str = "train", *, data_dir: Optional[str] = None, download: bool = False):
    """Random-access source of the TFDS data set ``name`` (``tfds.data_source``; no TensorFlow needed).

    Args:
      name: registered TFDS name, e.g. ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``
        (``"name/config:version"`` also works).
      split: TFDS split string, e.g. ``"train"``, ``"test"``, ``"train[:90%]"``.
      data_dir: TFDS data directory (default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      download: if True, let TFDS download and prepare the data set when it is missing
        (needs internet and TensorFlow); default False: fail fast without any network.

    Returns:
      The TFDS data source: ``len(src)``, ``src[i] -> {"image": uint8 (H, W, C), "label": int}``.

    Raises:
      ValueError: ``name`` is not a registered TFDS data set.
      DatasetNotPreparedError: the data set is not in ``data_dir`` (the message names the
        directory searched and the command that prepares it).
    """
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.registered import DatasetNotFoundError

    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a TFDS data set name such as 'mnist'; got {name!r}")
    builder_kwargs = {"file_format": "array_record"}
    try:
        return tfds.data_source(
            name, split=split, data_dir=data_dir, download=download, builder_kwargs=builder_kwargs
        )
    except DatasetNotFoundError as err:
        raise ValueError(
            f"unknown TFDS data set {name!r}: not a registered tensorflow-datasets name (see "
            f"tfds.list_builders()); for the offline data set use {OFFLINE_DATASET!r}"
        ) from err
    except Exception as err:  # tfds reports an unprepared data set with several exception types
        builder = tfds.builder(name, data_dir=data_dir, **builder_kwargs)
        if builder.is_prepared():
            raise
        raise DatasetNotPreparedError(_not_prepared_message(name, split, data_dir, str(builder.data_dir))) from err


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


def image_source(
    name: str = OFFLINE_DATASET, split: str = "train", *, data_dir: Optional[str] = None, download: bool = False
):
    """A source by name: ``"digits"`` (offline, :func:`load_digits`) or any TFDS image data set.

    ``split`` is ``"train"``/``"test"`` (``"all"`` too for digits; any TFDS split string for
    TFDS). ``data_dir`` and ``download`` go to :func:`tfds_source` and are ignored for digits.
    """
    if name == OFFLINE_DATASET:
        return load_digits(split)
    return tfds_source(name, split, data_dir=data_dir, download=download)
