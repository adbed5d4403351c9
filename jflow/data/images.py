r"""Image data pipelines: random-access record sources, a resumable sharded numpy loader.

A *source* is any random-access sequence of records: ``len(source)`` and
``source[i] -> {"image": (H, W, C) or (H, W) array, "label": int}``. Two kinds exist:

- :func:`tfds_source`: a TensorFlow-Datasets data set read with ``tfds.data_source``
  (ArrayRecord files, no TensorFlow needed to *read*; mnist, fashion_mnist, cifar10 or any
  TFDS image data set by name). It never downloads unless ``download=True``; a data set
  that is not prepared raises :class:`DatasetNotPreparedError` saying how to prepare it.
- :class:`ArraySource`: in-memory arrays with the same record interface (the offline
  scikit-learn digits of :mod:`jflow.data.digits` use it).

:class:`ImageLoader` turns a source into batches ``{"x": float32 (B, H, W, C) in [-1, 1],
"y": int32 (B,)}`` with

- a deterministic shuffled order per epoch, a function of ``(seed, epoch)`` only;
- a position ``(epoch, index)`` (``index`` = batches already delivered in that epoch) that
  :meth:`ImageLoader.get_state` / :meth:`ImageLoader.set_state` save and restore as a small
  dict of ints, so a resumed run gets exactly the batches it would have got;
- sharding across the processes of a multi-host run: the epoch's permutation of the whole
  data set is cut into ``process_count`` equal contiguous blocks and process ``p`` reads
  block ``p`` (disjoint, ``len(source) // process_count`` examples each, so all processes
  run the same number of steps; the few left-over examples change every epoch);
- optional resizing (bilinear, antialiased when shrinking) and padding (e.g. 28 -> 32 with
  the black value -1);
- a background thread that prepares up to ``prefetch`` batches ahead (bounded queue), so
  the accelerator does not wait for the host.
"""
from __future__ import annotations

import os
import queue
import threading
from typing import Any, Iterator, Mapping, Optional

import numpy as np

__all__ = [
    "DatasetNotPreparedError",
    "ArraySource",
    "tfds_source",
    "image_source",
    "resize_images",
    "pad_images",
    "preprocess_images",
    "ImageLoader",
]

OFFLINE_DATASET = "digits"


class DatasetNotPreparedError(FileNotFoundError):
    """A TFDS data set is not present (in a random-access format) in the data directory searched."""


# --------------------------------------------------------------------------- sources


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
        lo, hi = (float(v) for v in value_range)
        if not hi > lo:
            raise ValueError(f"value_range must be (lo, hi) with hi > lo; got {value_range}")
        self.images = images
        self.labels = labels
        self.value_range = (lo, hi)
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


def image_source(
    name: str = OFFLINE_DATASET, split: str = "train", *, data_dir: Optional[str] = None, download: bool = False
):
    """A source by name: ``"digits"`` (offline, :func:`jflow.data.digits.load_digits`) or any TFDS image data set.

    ``split`` is ``"train"``/``"test"`` (``"all"`` too for digits; any TFDS split string for
    TFDS). ``data_dir`` and ``download`` go to :func:`tfds_source` and are ignored for digits.
    """
    if name == OFFLINE_DATASET:
        from jflow.data.digits import load_digits

        return load_digits(split)
    return tfds_source(name, split, data_dir=data_dir, download=download)


# --------------------------------------------------------------------------- preprocessing


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        value = (value, value)
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair (H, W); got {value!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"{name} must be positive; got {(h, w)}")
    return h, w


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
    h, w = _pair(size, "size")
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
    h, w = _pair(size, "pad_to")
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
    lo, hi = (float(v) for v in value_range)
    x = (np.asarray(images, np.float32) - lo) * np.float32(2.0 / (hi - lo)) - np.float32(1.0)
    if resize_to is not None:
        x = np.clip(resize_images(x, resize_to), -1.0, 1.0)
    if pad_to is not None:
        x = pad_images(x, pad_to, pad_value)
    return x.astype(np.float32)


# --------------------------------------------------------------------------- loader

_END = object()


def _check_int(name: str, value, lo: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
        raise ValueError(f"{name} must be an int >= {lo}; got {value!r}")
    return int(value)


class _Plan:
    """The loader's immutable settings and everything that is a pure function of them.

    Kept apart from :class:`ImageLoader` so that the prefetch thread holds only this
    object: an abandoned loader is then garbage collected, and its ``__del__`` stops the
    thread.
    """

    def __init__(self, source, batch_size, seed, shuffle, drop_remainder, num_epochs, resize_to, pad_to,
                 pad_value, value_range, image_key, label_key, process_index, process_count):
        self.source = source
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.seed = _check_int("seed", seed, 0)
        self.process_count = _check_int("process_count", process_count, 1)
        if not isinstance(process_index, (int, np.integer)) or not 0 <= process_index < process_count:
            raise ValueError(
                f"process_index must be an int in [0, process_count={process_count}); got {process_index!r}"
            )
        self.process_index = int(process_index)
        self.num_epochs = None if num_epochs is None else _check_int("num_epochs", num_epochs, 1)
        self.shuffle = bool(shuffle)
        self.drop_remainder = bool(drop_remainder)
        self.resize_to = None if resize_to is None else _pair(resize_to, "resize_to")
        self.pad_to = None if pad_to is None else _pair(pad_to, "pad_to")
        self.pad_value = float(pad_value)
        self.image_key = image_key
        self.label_key = label_key

        self.num_records = len(source)
        self.examples_per_process = self.num_records // self.process_count
        full, rest = divmod(self.examples_per_process, self.batch_size)
        self.batches_per_epoch = full + (0 if self.drop_remainder or rest == 0 else 1)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"no complete batch: {self.num_records} records over {self.process_count} process(es) give "
                f"{self.examples_per_process} per process < batch_size={self.batch_size}; lower batch_size "
                f"or pass drop_remainder=False"
            )
        if value_range is None:
            value_range = getattr(source, "value_range", None)
        if value_range is None:
            dtype = np.asarray(source[0][image_key]).dtype
            if dtype != np.uint8:
                raise ValueError(f"cannot infer the pixel range of {dtype} images; pass value_range=(lo, hi)")
            value_range = (0, 255)
        lo, hi = (float(v) for v in value_range)
        if not hi > lo:
            raise ValueError(f"value_range must be (lo, hi) with hi > lo; got {value_range}")
        self.value_range = (lo, hi)

    def epoch_order(self, epoch: int) -> np.ndarray:
        if self.shuffle:
            perm = np.random.default_rng([self.seed, int(epoch)]).permutation(self.num_records)
        else:
            perm = np.arange(self.num_records)
        start = self.process_index * self.examples_per_process
        return perm[start : start + self.examples_per_process]

    def read(self, indices: np.ndarray) -> dict:
        if hasattr(self.source, "read_batch") and self.image_key == "image" and self.label_key in ("label", None):
            raw = self.source.read_batch(indices)
            images = raw["image"]
            labels = raw.get("label") if self.label_key else None
        else:
            records = [self.source[int(i)] for i in indices]
            images = np.stack([np.asarray(r[self.image_key]) for r in records])
            labels = np.stack([np.asarray(r[self.label_key]) for r in records]) if self.label_key else None
        if images.ndim == 3:
            images = images[..., None]
        batch = {
            "x": preprocess_images(
                images, value_range=self.value_range, resize_to=self.resize_to, pad_to=self.pad_to,
                pad_value=self.pad_value,
            )
        }
        if labels is not None:
            batch["y"] = np.asarray(labels).astype(np.int32)
        return batch

    def batch_at(self, epoch: int, index: int) -> dict:
        if not 0 <= index < self.batches_per_epoch:
            raise ValueError(f"index must lie in [0, {self.batches_per_epoch}); got {index}")
        order = self.epoch_order(epoch)
        return self.read(order[index * self.batch_size : (index + 1) * self.batch_size])

    def advance(self, epoch: int, index: int) -> tuple[int, int]:
        index += 1
        return (epoch + 1, 0) if index >= self.batches_per_epoch else (epoch, index)

    def positions(self, epoch: int, index: int) -> Iterator[tuple[int, int]]:
        """Positions from ``(epoch, index)`` on, until ``num_epochs`` (forever if None)."""
        if index >= self.batches_per_epoch:
            epoch, index = epoch + 1, 0
        while self.num_epochs is None or epoch < self.num_epochs:
            yield epoch, index
            epoch, index = self.advance(epoch, index)


def _produce(plan: _Plan, start: tuple[int, int], out: queue.Queue, stop: threading.Event) -> None:
    """Prefetch thread: put ``(next_position, batch)`` items, then ``_END`` (or the exception raised)."""

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    try:
        for epoch, index in plan.positions(*start):
            if not put((plan.advance(epoch, index), plan.batch_at(epoch, index))):
                return
        put(_END)
    except BaseException as err:  # handed to the consumer, re-raised by next()
        put(err)


class ImageLoader:
    """Deterministic, resumable, sharded, prefetching batch iterator over an image source.

    Args:
      source: a record source (:func:`tfds_source`, :class:`ArraySource`, :func:`image_source`).
      batch_size: examples per batch *on this process* (the global batch is
        ``batch_size * process_count``).
      seed: non-negative int; the order of epoch ``e`` is a permutation drawn from
        ``numpy.random.default_rng([seed, e])`` (identical on every process, so the shards
        are disjoint; use the same numpy version on all hosts).
      shuffle: False keeps the source order (each epoch the same).
      drop_remainder: drop the last incomplete batch of an epoch (default; fixed shapes,
        no recompilation). If False the last batch is smaller.
      num_epochs: stop after this many epochs; ``None`` iterates forever.
      resize_to, pad_to, pad_value: see :func:`preprocess_images` (e.g. ``pad_to=32`` turns
        28 x 28 MNIST into 32 x 32 with black borders).
      value_range: raw pixel range; default ``source.value_range`` if it has one, else
        ``(0, 255)`` for uint8 images.
      image_key, label_key: record fields; ``label_key=None`` omits ``"y"``.
      process_index, process_count: this process's shard; default
        ``jax.process_index()`` / ``jax.process_count()``.
      prefetch: batches prepared ahead by a background thread (bounded queue); 0 reads
        synchronously in the calling thread.

    Iterating yields ``{"x": float32 (B, H, W, C) in [-1, 1], "y": int32 (B,)}``.
    ``get_state()`` is the position of the *next* batch to be delivered (prefetched but
    undelivered batches do not count), so ``set_state(get_state())`` on a fresh loader with
    the same arguments continues with exactly the same batches. Call :meth:`close` (or use
    ``with``) to stop the prefetch thread early.
    """

    def __init__(
        self,
        source,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_remainder: bool = True,
        num_epochs: Optional[int] = None,
        resize_to=None,
        pad_to=None,
        pad_value: float = -1.0,
        value_range=None,
        image_key: str = "image",
        label_key: Optional[str] = "label",
        process_index: Optional[int] = None,
        process_count: Optional[int] = None,
        prefetch: int = 2,
    ):
        if process_index is None or process_count is None:
            import jax

            process_index = jax.process_index() if process_index is None else process_index
            process_count = jax.process_count() if process_count is None else process_count
        self._plan = _Plan(source, batch_size, seed, shuffle, drop_remainder, num_epochs, resize_to, pad_to,
                           pad_value, value_range, image_key, label_key, process_index, process_count)
        self.prefetch = _check_int("prefetch", prefetch, 0)
        self._epoch = 0
        self._index = 0
        self._thread: Optional[threading.Thread] = None
        self._queue: Optional[queue.Queue] = None
        self._stop: Optional[threading.Event] = None

    source = property(lambda self: self._plan.source)
    batch_size = property(lambda self: self._plan.batch_size)
    seed = property(lambda self: self._plan.seed)
    process_index = property(lambda self: self._plan.process_index)
    process_count = property(lambda self: self._plan.process_count)
    value_range = property(lambda self: self._plan.value_range)
    num_records = property(lambda self: self._plan.num_records)
    examples_per_process = property(lambda self: self._plan.examples_per_process)
    batches_per_epoch = property(lambda self: self._plan.batches_per_epoch)

    # ----------------------------------------------------------------- random access (pure)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Record indices this process reads in ``epoch``, in order (``examples_per_process`` of them)."""
        return self._plan.epoch_order(epoch)

    def batch_at(self, epoch: int, index: int) -> dict:
        """Batch ``index`` of ``epoch`` (a pure function of the arguments and the loader's settings)."""
        return self._plan.batch_at(epoch, index)

    # ----------------------------------------------------------------- position

    def get_state(self) -> dict:
        """Position of the next batch: ``{"epoch", "index", "seed", "process_index", "process_count"}`` (ints)."""
        return {
            "epoch": self._epoch,
            "index": self._index,
            "seed": self.seed,
            "process_index": self.process_index,
            "process_count": self.process_count,
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continue from a position saved by :meth:`get_state` (stops and discards any prefetch)."""
        missing = {"epoch", "index"} - set(state)
        if missing:
            raise ValueError(f"state lacks {sorted(missing)}; pass a dict from ImageLoader.get_state()")
        for field in ("seed", "process_index", "process_count"):
            if field in state and int(state[field]) != getattr(self, field):
                raise ValueError(
                    f"state was saved with {field}={int(state[field])} but this loader has "
                    f"{field}={getattr(self, field)}; build the loader with the same arguments"
                )
        epoch, index = int(state["epoch"]), int(state["index"])
        if epoch < 0 or not 0 <= index <= self.batches_per_epoch:
            raise ValueError(
                f"invalid position epoch={epoch}, index={index} (batches_per_epoch={self.batches_per_epoch})"
            )
        self.close()
        self._epoch, self._index = epoch, index

    # ----------------------------------------------------------------- iteration

    def __iter__(self) -> "ImageLoader":
        return self

    def __next__(self) -> dict:
        if self.prefetch == 0:
            for epoch, index in self._plan.positions(self._epoch, self._index):
                batch = self._plan.batch_at(epoch, index)
                self._epoch, self._index = self._plan.advance(epoch, index)
                return batch
            raise StopIteration
        if self._thread is None:
            self._stop = threading.Event()
            self._queue = queue.Queue(maxsize=self.prefetch)
            self._thread = threading.Thread(
                target=_produce, args=(self._plan, (self._epoch, self._index), self._queue, self._stop),
                name="jflow-image-prefetch", daemon=True,
            )
            self._thread.start()
        item = self._queue.get()
        if item is _END:
            self._queue.put(_END)
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        (self._epoch, self._index), batch = item
        return batch

    def close(self) -> None:
        """Stop the prefetch thread (if running) and drop prefetched batches; the position is kept."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = self._queue = self._stop = None

    def __enter__(self) -> "ImageLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if getattr(self, "_thread", None) is not None:
            self.close()

    def __len__(self) -> int:
        """Batches per epoch on this process."""
        return self.batches_per_epoch
