"""Data for jflow: toy distributions (pure JAX samplers) and image pipelines (numpy, host side).

- :mod:`jflow.data.toy`: 2-D toy distributions, ``get_toy(name, **params)``.
- :mod:`jflow.data.images`: TFDS / in-memory record sources and :class:`ImageLoader`.
- :mod:`jflow.data.digits`: the offline scikit-learn 8x8 digits (no download).

``tensorflow_datasets`` and ``sklearn`` are imported only when an image source is built.
"""
from jflow.data.digits import load_digits
from jflow.data.images import (
    ArraySource,
    DatasetNotPreparedError,
    ImageLoader,
    image_source,
    pad_images,
    preprocess_images,
    resize_images,
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
