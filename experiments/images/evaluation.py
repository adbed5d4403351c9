r"""Evaluation of the image experiment: guided sampling (Algorithm 8) at every guidance scale ``w``,
scored by the classifier's Frechet distance and guided-class accuracy."""
from __future__ import annotations

import functools
from typing import Callable, Dict, List, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import Streams, Timer, progress
from experiments.images.config import ImageConfig
from jflow.integrators import uniform_grid
from jflow.metrics import classifier_accuracy, frechet_distance
from jflow.sampling import classifier_free_guidance, sample_ode
from jflow.train import shard_batch


def make_sampler(config: ImageConfig, model) -> Callable:
    r"""Jitted ``sample(params, x0, y, w) -> images``: the guided field of Algorithm 8,
    :math:`u^w_t(x|y) = (1 - w) u_t(x|\varnothing) + w u_t(x|y)`, integrated by ``jflow.sampling``
    (``sample_steps`` steps of ``sample_method``; one compile for every ``w``)."""

    def u(x, t, y, params):
        return model.apply(params, x, t, y)

    guided = classifier_free_guidance(u, model.null_label)
    ts = uniform_grid(config.sample_steps)
    # the grid is an argument (not a baked-in constant); only its length is static
    run = jax.jit(lambda params, x0, y, w, grid: sample_ode(guided, x0, grid, method=config.sample_method,
                                                              args=(y, w, params)))

    def sample(params, x0, y, w):
        return run(params, x0, y, w, ts)

    return sample


@functools.partial(jax.jit, static_argnums=2)
def _initial_noise(key, idx, shape):
    """``X_0`` of example ``i``: a standard normal image from ``fold_in(key, i)``."""
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), shape))(idx)


def generate(config: ImageConfig, sample: Callable, params, labels: np.ndarray, w: float, mesh,
             streams: Streams) -> np.ndarray:
    """Images for ``labels`` at guidance scale ``w``, in chunks of ``sample_batch`` (split over the mesh).

    The initial noise of example ``i`` is drawn from ``fold_in(key, i)`` and does not depend on
    ``w``, so the rows of different guidance scales start from the same ``X_0``. Every chunk
    has the same shape (the last one is padded), so the sampler compiles once.
    """
    n_dev = 1 if mesh is None else mesh.size
    chunk = -(-min(config.sample_batch, len(labels)) // n_dev) * n_dev
    key = streams.key("sample_noise")
    out = []
    for start in range(0, len(labels), chunk):
        idx = np.arange(start, start + chunk)
        y = labels[np.minimum(idx, len(labels) - 1)].astype(np.int32)
        x0 = np.asarray(_initial_noise(key, jnp.asarray(idx), config.image_shape))
        if mesh is not None:
            x0, y = shard_batch(x0, mesh), shard_batch(y, mesh)
        images = sample(params, x0, y, jnp.float32(w))
        out.append(np.asarray(jax.device_get(images))[: len(labels) - start])
    return np.clip(np.concatenate(out), -1.0, 1.0)


def classify_all(apply: Callable, params, x, chunk: int = 256) -> Tuple[np.ndarray, np.ndarray]:
    """``(logits, features)`` of images ``x`` by ``apply(params, x)``, in fixed-size padded chunks (one compile)."""
    x = np.asarray(x)
    logits, feats = [], []
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk]
        padded = np.concatenate([part, np.zeros((chunk - len(part),) + part.shape[1:], part.dtype)])
        lo, fe = apply(params, padded)
        logits.append(np.asarray(lo)[: len(part)])
        feats.append(np.asarray(fe)[: len(part)])
    return np.concatenate(logits), np.concatenate(feats)


class Judge(NamedTuple):
    """The trained classifier: ``apply(params, x) -> (logits, features)``, its parameters, and the
    features of the training images (the reference of the Frechet distance)."""

    apply: Callable
    params: object
    train_features: np.ndarray

    def classify(self, x) -> Tuple[np.ndarray, np.ndarray]:
        return classify_all(self.apply, self.params, x)

    def logits(self, x) -> np.ndarray:
        return self.classify(x)[0]


def make_judge(apply: Callable, params, train_x) -> Judge:
    """The :class:`Judge` of a classifier with parameters ``params``, for the training images ``train_x``."""
    return Judge(apply, params, classify_all(apply, params, train_x)[1])


def judge_summary(judge: Judge, test_x, test_y) -> dict:
    """The classifier's test accuracy and the Frechet distance of the test to the train images (the floor)."""
    _, test_feats = judge.classify(test_x)
    return {"classifier_test_accuracy": float(classifier_accuracy(judge.logits, test_x, test_y)),
            "fd_test_vs_train": frechet_distance(test_feats, judge.train_features)}


def sweep(config: ImageConfig, sample: Callable, params, mesh, judge: Judge,
          streams: Streams) -> Tuple[List[dict], Dict[float, np.ndarray]]:
    """One row per guidance scale ``w`` (Frechet distance, guided-class accuracy), and the images
    ``(classes, grid_per_class, H, W, C)`` of each ``w`` for the figures."""
    k, spc = config.num_classes, config.samples_per_class
    labels = np.repeat(np.arange(k), spc).astype(np.int32)
    rows, per_w = [], {}
    for w in progress(config.guidance_scales, desc="sample w"):
        with Timer() as t_s:
            images = generate(config, sample, params, labels, w, mesh, streams)
        _, feats = judge.classify(images)
        rows.append({
            "w": float(w),
            "frechet_distance": frechet_distance(feats, judge.train_features),
            "guided_class_accuracy": float(classifier_accuracy(judge.logits, images, labels)),
            "num_samples": int(len(labels)),
            "sample_seconds": round(t_s.seconds, 2),
        })
        per_w[w] = images.reshape((k, spc) + images.shape[1:])[:, : config.grid_per_class]
    return rows, per_w
