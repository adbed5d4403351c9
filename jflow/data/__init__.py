"""Data for jflow: toy distributions (pure JAX samplers) and image pipelines (numpy, host side).

- :mod:`jflow.data.toy`: 2-D toy distributions, ``get_toy(name, **params)``, and the
  presets that reproduce other libraries' toy sets (``torchcfm_eight_gaussians``, ...).
- :mod:`jflow.data.sources`: image record sources: TFDS, in-memory arrays, and the offline
  scikit-learn 8x8 digits (no download).
- :mod:`jflow.data.preprocessing`: pixel range, resize, pad (numpy).
- :mod:`jflow.data.loader`: :class:`ImageLoader`, the resumable sharded batch iterator.

Dependencies point one way: ``preprocessing <- sources``, ``preprocessing <- loader``.

``tensorflow_datasets`` and ``sklearn`` are imported only when an image source is built.
"""
from jflow.data.loader import ImageLoader
from jflow.data.preprocessing import pad_images, preprocess_images, resize_images
from jflow.data.sources import (
    ArraySource,
    DatasetNotPreparedError,
    image_source,
    load_digits,
    tfds_source,
)
from jflow.data.toy import (
    TOYS,
    Checkerboard,
    Circles,
    Moons,
    Spirals,
    SwissRoll,
    eight_gaussians,
    get_toy,
    symmetric_mixture,
)

__all__ = [
    "TOYS",
    "get_toy",
    "symmetric_mixture",
    "eight_gaussians",
    "Moons",
    "Circles",
    "Checkerboard",
    "Spirals",
    "SwissRoll",
    "ArraySource",
    "DatasetNotPreparedError",
    "ImageLoader",
    "image_source",
    "tfds_source",
    "load_digits",
    "resize_images",
    "pad_images",
    "preprocess_images",
]
