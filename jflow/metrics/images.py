"""Image metrics: Frechet distance of classifier features and classifier accuracy (see :mod:`jflow.metrics`)."""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jflow._checks import check_positive_int, is_concrete
from jflow.metrics._common import Array, all_finite, all_finite_jit, check_finite, host_array

__all__ = ["feature_statistics", "frechet_distance_from_statistics", "frechet_distance", "classifier_accuracy"]


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of ``(N, D)`` features, float64 on the host."""
    f = host_array(features, "features", "feature_statistics")
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape (N, D) with N >= 2; got {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or inf")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root by ``eigh`` (negative round-off eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh(0.5 * (a + a.T))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance_from_statistics(mu1, sigma1, mu2, sigma2) -> float:
    r"""Frechet distance between two Gaussians given their means and covariances.

    .. math:: \|\mu_1 - \mu_2\|^2 + \operatorname{tr}\big(\Sigma_1 + \Sigma_2
              - 2(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2})^{1/2}\big),

    the squared W2 distance between :math:`\mathcal N(\mu_1, \Sigma_1)` and
    :math:`\mathcal N(\mu_2, \Sigma_2)` (the FID formula). Computed on the host in float64
    with symmetric eigendecompositions (``tr (\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2})^{1/2}``
    equals ``tr (\Sigma_1\Sigma_2)^{1/2}`` but stays real and stable for singular
    covariances). Returns a Python float (clipped at 0).
    """
    named = {"mu1": mu1, "sigma1": sigma1, "mu2": mu2, "sigma2": sigma2}
    mu1, s1, mu2, s2 = (host_array(v, k, "frechet_distance_from_statistics") for k, v in named.items())
    dim = mu1.shape[0] if mu1.ndim == 1 else -1
    if mu1.ndim != 1 or mu2.shape != (dim,) or s1.shape != (dim, dim) or s2.shape != (dim, dim):
        raise ValueError(
            f"need mu1, mu2 of shape (D,) and sigma1, sigma2 of shape (D, D); got {mu1.shape}, {mu2.shape}, "
            f"{s1.shape}, {s2.shape}"
        )
    for name, v in zip(named, (mu1, s1, mu2, s2)):
        if not np.isfinite(v).all():
            raise ValueError(f"{name} contains NaN or inf; the Frechet distance needs finite statistics")
    root1 = _psd_sqrt(s1)
    middle = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh(0.5 * (middle + middle.T))
    tr_cross = np.sum(np.sqrt(np.clip(eig, 0.0, None)))
    value = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * tr_cross
    return float(max(value, 0.0))


def frechet_distance(features1, features2) -> float:
    """Frechet distance between two ``(N, D)`` feature sets (Gaussian fits by :func:`feature_statistics`).

    With features of a classifier trained on the data set (penultimate layer), this is the
    FID-style image metric; state the classifier and the sample counts with the number
    (the value is biased upwards for small ``N``).
    """
    f1, f2 = (host_array(f, "features", "frechet_distance") for f in (features1, features2))
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"features must have shapes (N, D) and (M, D); got {f1.shape} and {f2.shape}")
    return frechet_distance_from_statistics(*feature_statistics(f1), *feature_statistics(f2))


def classifier_accuracy(classify: Callable, x, labels, *, batch_size: Optional[int] = None) -> Array:
    r"""Fraction of samples ``x`` that ``classify`` assigns to their requested class ``labels``.

    ``classify(x_batch) -> logits (B, num_classes)`` (e.g. ``lambda x: model.apply(params,
    x)``); accuracy :math:`\frac1N\sum_i [\arg\max_c \text{logits}_{ic} = y_i]`. With samples
    generated for class ``y_i`` (guidance, Algorithm 8) this measures how well the guidance
    works. ``batch_size`` evaluates in chunks (the last one may be smaller). Returns a
    float32 scalar.

    Labels must be classes of the classifier, ``0 <= y < num_classes``; ``x`` and the logits
    must be finite and ``x`` non-empty. Outside ``jit`` a violation raises ``ValueError``;
    under ``jit`` the accuracy is NaN (an argmax of NaN logits, or a label no class can
    match, would otherwise count as a plausible score).
    """
    x = jnp.asarray(x)
    labels = jnp.asarray(labels)
    if x.ndim < 1 or labels.shape != x.shape[:1] or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"labels must be integers of shape (N,) = ({x.shape[0] if x.ndim else '?'},); got dtype "
            f"{labels.dtype} and shape {tuple(labels.shape)}"
        )
    n = x.shape[0]
    if n < 1:
        raise ValueError("x must hold at least one sample (the accuracy of an empty set is undefined)")
    step = n if batch_size is None else check_positive_int(batch_size, "batch_size")
    if jnp.issubdtype(x.dtype, jnp.inexact):
        check_finite("x", x)
    correct, valid = [], [all_finite(x) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True)]
    for start in range(0, n, step):
        logits = jnp.asarray(classify(x[start : start + step]))
        if logits.ndim != 2 or logits.shape[0] != min(step, n - start) or logits.shape[1] < 1:
            raise ValueError(f"classify must return logits of shape (B, num_classes); got {tuple(logits.shape)}")
        batch_labels = labels[start : start + step]
        _check_logits_and_labels(logits, batch_labels)
        count, ok = _num_correct(logits, batch_labels)
        correct.append(count)
        valid.append(ok)
    accuracy = (sum(correct) / n).astype(jnp.float32)
    return jnp.where(jnp.all(jnp.stack(valid)), accuracy, jnp.nan)


def _check_logits_and_labels(logits, labels) -> None:
    num_classes = logits.shape[1]
    if is_concrete(labels):
        v = np.asarray(labels)
        if v.min() < 0 or v.max() >= num_classes:
            raise ValueError(
                f"labels must be classes of the classifier, in [0, {num_classes}) (it returns {num_classes} "
                f"logits); got values in [{v.min()}, {v.max()}]"
            )
    if is_concrete(logits) and not bool(all_finite_jit(logits)):
        raise ValueError("classify returned NaN or inf logits (are the samples or the classifier broken?)")


@jax.jit
def _num_correct(logits: Array, labels: Array) -> tuple[Array, Array]:
    """Number of argmax hits and whether the batch is valid (finite logits, labels in range)."""
    ok = jnp.all(jnp.isfinite(logits)) & jnp.all((labels >= 0) & (labels < logits.shape[1]))
    return jnp.sum(jnp.argmax(logits, axis=-1) == labels), ok
