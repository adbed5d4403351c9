"""The image experiment's data: train and test sources (checked before anything is written) and batches."""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import NamedTuple, Tuple

import numpy as np

from experiments.common import ConfigError
from experiments.images.config import ImageConfig
from jflow.data import DatasetNotPreparedError, ImageLoader, image_source


class Sources(NamedTuple):
    """The train and test sources of a data set."""

    train: object
    test: object


@contextlib.contextmanager
def _quiet_absl():
    """TFDS logs a warning per data-set version it looks for before it reports a missing one."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def open_sources(config: ImageConfig) -> Sources:
    """The sources of ``config.dataset``; a one-line :class:`ConfigError` if a TFDS data set is not prepared."""
    data_dir = config.data_dir or None
    try:
        with _quiet_absl():
            return Sources(image_source(config.dataset, "train", data_dir=data_dir),
                           image_source(config.dataset, "test", data_dir=data_dir))
    except DatasetNotPreparedError:
        where = data_dir or os.environ.get("TFDS_DATA_DIR") or str(Path.home() / "tensorflow_datasets")
        raise ConfigError(
            f"config field 'dataset': {config.dataset!r} is not prepared in {where}; prepare it with "
            f"`tfds build {config.dataset} --data_dir={where} --file_format=array_record` (needs internet), "
            f"or use the offline --dataset digits") from None


def batch_fn(loader: ImageLoader):
    """``step -> batch``: a pure function of the step (so a resumed run sees the same batches)."""
    steps_per_epoch = loader.batches_per_epoch

    def batch_at(step: int):
        return loader.batch_at(step // steps_per_epoch, step % steps_per_epoch)

    return batch_at


def all_images(source) -> Tuple[np.ndarray, np.ndarray]:
    """Every image and label of ``source``, in order, as one batch ``(x, y)``."""
    loader = ImageLoader(source, len(source), shuffle=False, drop_remainder=False, prefetch=0,
                         process_index=0, process_count=1)
    batch = loader.batch_at(0, 0)
    return batch["x"], batch["y"]
