r"""The figures of the lectures' three labs, as one script on top of jflow.

=========== ===========================================================================================
``which``   figure(s)
=========== ===========================================================================================
brownian    Brownian motion :math:`dX_t = \sigma dW_t` (Euler-Maruyama, ``jflow.integrators.sdeint``) with
            the exact envelope :math:`\pm 2\sigma\sqrt t`
ou          Ornstein-Uhlenbeck :math:`dX_t = -\theta X_t dt + \sigma dW_t` for several :math:`\theta`
            (``jflow.sampling.ou_process``): trajectories, and the law of :math:`X_T` against the stationary
            density :math:`\mathcal N(0, \sigma^2 / 2\theta)`
langevin    Langevin dynamics :math:`dX_s = \frac{\sigma^2}{2}\nabla\log p(X_s) ds + \sigma dW_s` on the
            labs' Gaussian mixture (``jflow.sampling.langevin``): particles at several times over the
            stationary density, and trajectories
fm_gmm      flow matching (CondOT, Algorithm 4) on the Gaussian mixture: samples and trajectories of the
            learned ODE next to those of the exact marginal field (``jflow.marginals``)
sm_gmm      denoising score matching (Algorithm 5) on the Gaussian mixture, sampled with the SDE
            extension trick (``jflow.sampling.sample_sde``); samples and trajectories
moons       flow matching and score matching on moons and on the checkerboard: samples + trajectories
bridge      flow matching from :math:`p_{init}` = circles to :math:`p_{data}` = checkerboard
            (``jflow.paths.bridge``): samples at several times and trajectories
cfg         digits with classifier-free guidance: ``experiments.images`` at the preset ``cfg_preset``
=========== ===========================================================================================

Run::

    python -m experiments.labs                          # every lab (a few minutes on a 2-core CPU)
    python -m experiments.labs --which ou,langevin      # some of them
    python -m experiments.labs --preset smoke           # ~75 s of CPU time, mostly compiling (half: cfg)

Every lab writes PNG files into the run directory (``runs/labs-<preset>`` by default) and
prints their paths.

Modules: :mod:`~experiments.labs.config` (config, presets, random streams),
:mod:`~experiments.labs.sdes` (lab 1), :mod:`~experiments.labs.training` (the MLP programs
of labs 2-3), :mod:`~experiments.labs.learned` (labs 2-3 and the guidance lab),
:mod:`~experiments.labs.figures` (drawing helpers), :mod:`~experiments.labs.job`
(:func:`run`, :func:`main`).
"""
from experiments.labs.config import LABS, PRESETS, LabsConfig
from experiments.labs.job import main, run

__all__ = ["LABS", "PRESETS", "LabsConfig", "main", "run"]
