r"""The image loader: a resumable, sharded, prefetching numpy batch iterator over a record source.

:class:`ImageLoader` turns a source (:mod:`jflow.data.sources`) into batches
``{"x": float32 (B, H, W, C) in [-1, 1], "y": int32 (B,)}`` with

- a deterministic shuffled order per epoch, a function of ``(seed, epoch)`` only;
- a position ``(epoch, index)`` (``index`` = batches already delivered in that epoch) that
  :meth:`ImageLoader.get_state` / :meth:`ImageLoader.set_state` save and restore as a small
  dict of ints, so a resumed run gets exactly the batches it would have got;
- sharding across the processes of a multi-host run: the epoch's permutation of the whole
  data set is cut into ``process_count`` equal contiguous blocks and process ``p`` reads
  block ``p`` (disjoint, ``len(source) // process_count`` examples each, so all processes
  run the same number of steps; the few left-over examples change every epoch);
- optional resizing (bilinear, antialiased when shrinking) and padding (e.g. 28 -> 32 with
  the black value -1), :mod:`jflow.data.preprocessing`;
- a background thread that prepares up to ``prefetch`` batches ahead (bounded queue), so
  the accelerator does not wait for the host.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Iterator, Mapping, Optional

import numpy as np

from jflow._checks import check_positive_int
from jflow.data.preprocessing import image_size, pixel_range, preprocess_images

__all__ = ["ImageLoader"]

_END = object()


def _default_range(source, image_key: str) -> tuple:
    """The source's ``value_range`` if it has one, else ``(0, 255)`` for uint8 images."""
    if getattr(source, "value_range", None) is not None:
        return source.value_range
    dtype = np.asarray(source[0][image_key]).dtype
    if dtype != np.uint8:
        raise ValueError(f"cannot infer the pixel range of {dtype} images; pass value_range=(lo, hi)")
    return (0, 255)


class _Plan:
    """The loader's immutable settings and everything that is a pure function of them.

    Kept apart from :class:`ImageLoader` so that the prefetch thread holds only this
    object: an abandoned loader is then garbage collected, and its ``__del__`` stops the
    thread.
    """

    def __init__(self, source, batch_size, seed, shuffle, drop_remainder, num_epochs, resize_to, pad_to,
                 pad_value, value_range, image_key, label_key, process_index, process_count):
        self.source = source
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.seed = check_positive_int(seed, "seed", minimum=0)
        self.process_count = check_positive_int(process_count, "process_count")
        if not isinstance(process_index, (int, np.integer)) or not 0 <= process_index < process_count:
            raise ValueError(
                f"process_index must be an int in [0, process_count={process_count}); got {process_index!r}"
            )
        self.process_index = int(process_index)
        self.num_epochs = None if num_epochs is None else check_positive_int(num_epochs, "num_epochs")
        self.shuffle = bool(shuffle)
        self.drop_remainder = bool(drop_remainder)
        self.resize_to = None if resize_to is None else image_size(resize_to, "resize_to")
        self.pad_to = None if pad_to is None else image_size(pad_to, "pad_to")
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
        self.value_range = pixel_range(_default_range(source, image_key) if value_range is None else value_range)

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
        self.prefetch = check_positive_int(prefetch, "prefetch", minimum=0, why="0 reads in the calling thread")
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
