"""Class-conditional image generation with classifier-free guidance (CFG).

A class-conditional U-Net (:mod:`jflow.models`) is trained by flow matching on the CondOT
path with label dropout (classifier-free guidance training, Algorithm 5 of the 2025
slides), then sampled with the guided field of Algorithm 8,

    u^w_t(x | y) = (1 - w) u_t(x | null) + w u_t(x | y),

(``w = 0``: unconditional, ``w = 1``: plain conditional, ``w > 1``: guided) for every
guidance scale ``w`` of the config. Each ``w`` is scored with a small classifier trained
on the same data (its checkpoint is cached in the run directory): the Frechet distance
between the classifier's penultimate features of the generated images and of the training
images, and the guided-class accuracy (how often the classifier recognises the class the
samples were generated for).

Data: ``digits`` (scikit-learn's 8x8 digits, offline, the default), or ``mnist``,
``fashion_mnist``, ``cifar10`` through TFDS when prepared (otherwise a one-line error that
names the command preparing it, before anything is written). Training runs on one device
or data-parallel over all local devices (``--devices``), and is resumable: a checkpoint is
written every ``save_every`` steps and re-running the same command (possibly with a larger
``--steps``) continues from the latest one.

Outputs in the run directory: ``config.json``, ``checkpoints/`` and ``classifier/``
(orbax), ``results.{json,csv,md}`` (one row per ``w``), ``summary.json``,
``samples_w<w>.png`` (rows = classes) and ``samples_class<c>.png`` (rows = ``w``), and
``loss.png`` (with ``--evaluate false``: ``config.json``, ``checkpoints/``, ``summary.json``
and ``loss.png``).

Run::

    python -m experiments.images                     # digits, a few minutes on a 2-core CPU
    python -m experiments.images --preset smoke      # ~35 s of CPU time, mostly compiling (tests)
    python -m experiments.images --preset mnist      # TFDS mnist, GPU scale
    python -m experiments.images --steps 4000        # continue the default run to 4000 steps

Modules: :mod:`~experiments.images.config` (data sets, config, presets, random streams),
:mod:`~experiments.images.data`, :mod:`~experiments.images.training` (U-Net and
classifier), :mod:`~experiments.images.evaluation` (guided sampling and its scores),
:mod:`~experiments.images.figures`, :mod:`~experiments.images.job` (:func:`run`, :func:`main`).
"""
from experiments.images.config import DATASETS, PRESETS, ImageConfig
from experiments.images.job import main, run

__all__ = ["DATASETS", "PRESETS", "ImageConfig", "main", "run"]
