r"""Sample-quality metrics: two-sample distances, likelihood, path straightness, image metrics.

One namespace over three modules: :mod:`~jflow.metrics.two_sample`, :mod:`~jflow.metrics.flows`
and :mod:`~jflow.metrics.images` (shared checks in ``_common``).

Two-sample metrics compare samples ``x`` of shape ``(N, ...)`` and ``y`` of shape
``(M, ...)`` (trailing axes are flattened to vectors of dimension ``d``):

- :func:`energy_distance` and :func:`mmd` (RBF kernel mix): V-statistics, so they are
  exactly 0 for identical samples and >= 0 always; jittable; O(N M) memory.
- :func:`sliced_wasserstein`: sliced Wasserstein-2 with random directions from an explicit
  ``key``; exact 1-D transport along each direction (also for ``N != M``); jittable.
- :func:`wasserstein2`: exact Wasserstein-2 between two equal-size samples by optimal
  assignment on the host (``scipy.optimize.linear_sum_assignment``, O(N^3): small N).

Flow diagnostics: :func:`negative_log_likelihood` (held-out NLL through
:func:`jflow.likelihood.log_likelihood`) and :func:`path_straightness` (of sampled
trajectories, e.g. ``odeint(..., trajectory=True)``).

Images: :func:`frechet_distance` between two feature sets (features of a classifier,
passed in as arrays; host float64 math) and :func:`classifier_accuracy` of a classifier
function on generated samples of requested classes.

Precision: the jittable metrics compute in float32 at least (float16 and bfloat16 samples
are promoted: their pairwise sums overflow half precision; float64 stays float64); the
host metrics compute in float64 and return Python floats.

Non-finite samples: outside ``jit`` a NaN or inf in the inputs raises ``ValueError``.
Under ``jit`` or ``vmap`` the values cannot be checked, so every jittable metric returns
NaN when any input is non-finite (never a finite number computed from NaN; a reduction
such as ``where(d > 0, sqrt(d), 0)`` would otherwise turn NaN into a plausible score).
The host metrics (:func:`wasserstein2`, :func:`frechet_distance`) are not jittable and
say so under a trace.
"""
from jflow.metrics.flows import PathStraightness, negative_log_likelihood, path_straightness
from jflow.metrics.images import (
    classifier_accuracy,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_statistics,
)
from jflow.metrics.two_sample import (
    DEFAULT_BANDWIDTHS,
    energy_distance,
    median_bandwidth,
    mmd,
    sliced_wasserstein,
    wasserstein2,
)

__all__ = [
    "energy_distance",
    "mmd",
    "DEFAULT_BANDWIDTHS",
    "median_bandwidth",
    "sliced_wasserstein",
    "wasserstein2",
    "negative_log_likelihood",
    "PathStraightness",
    "path_straightness",
    "feature_statistics",
    "frechet_distance_from_statistics",
    "frechet_distance",
    "classifier_accuracy",
]
