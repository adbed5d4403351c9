"""Data for jflow: toy distributions (pure JAX samplers) and image pipelines (numpy, host side).

- :mod:`jflow.data.toy`: 2-D toy distributions; :mod:`jflow.data.peers`: presets that
  reproduce other libraries' toy sets of the same names (``torchcfm_eight_gaussians``, ...);
  :mod:`jflow.data.registry`: ``get_toy(name, **params)`` over both.
- :mod:`jflow.data.sources`: image record sources: TFDS, in-memory arrays, and the offline
  scikit-learn 8x8 digits (no download).
- :mod:`jflow.data.preprocessing`: pixel range, resize, pad (numpy).
- :mod:`jflow.data.loader`: :class:`ImageLoader`, the resumable sharded batch iterator.

Dependencies point one way: ``toy <- peers <- registry``, ``preprocessing <- sources``,
``preprocessing <- loader``.

``tensorflow_datasets`` and ``sklearn`` are imported only when an image source is built.
"""
from jflow.data.loader import ImageLoader
from jflow.data.peers import (
    TorchdynMoons,
    flow_matching_checkerboard,
    flow_matching_moons,
    torchcfm_eight_gaussians,
    torchcfm_moons,
)
from jflow.data.preprocessing import pad_images, preprocess_images, resize_images
from jflow.data.registry import TOYS, get_toy
from jflow.data.sources import (
    ArraySource,
    DatasetNotPreparedError,
    image_source,
    load_digits,
    tfds_source,
)
from jflow.data.toy import (
    Checkerboard,
    Circles,
    Moons,
    Spirals,
    SwissRoll,
    eight_gaussians,
    symmetric_mixture,
)

__all__ = [
    "TOYS",
    "get_toy",
    # the same names as jflow.data.toy's __all__: the package lists its whole public API here, by name
    "symmetric_mixture",
    "eight_gaussians",
    "Moons",
    "Circles",
    "Checkerboard",
    "Spirals",
    "SwissRoll",
    "TorchdynMoons",
    "torchcfm_eight_gaussians",
    "torchcfm_moons",
    "flow_matching_checkerboard",
    "flow_matching_moons",
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
