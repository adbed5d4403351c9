r"""The main job: CondOT flow matching vs (denoising) score matching, same network, budget and seeds.

Run::

    python -m experiments.ablation                       # default preset, a few minutes on a 2-core CPU
    python -m experiments.ablation --preset smoke        # every code path once, ~30 s of CPU time (CI)
    python -m experiments.ablation --preset gpu          # the same comparison at GPU scale
    python -m experiments.ablation --schedulers linear,cosine,vp --train_steps 5000 --out runs/my-ablation

Methods (the config tuple ``methods``), each trained with the jflow MLP, the same optimizer,
learning rate, number of steps, batch size, seeds, and the same stream of data, times and
noise per seed (run ``r`` of every method uses the keys ``fold_in(fold_in(PRNGKey(seed), r), stream)``,
the streams named in :data:`experiments.ablation.config.STREAMS`):

- ``flow_matching``: velocity parameterisation on the CondOT path
  :math:`x_t = t z + (1 - t)\epsilon` (Algorithm 4, loss :math:`\|u^\theta_t(x_t) - (z - \epsilon)\|^2`).
- ``score_matching``: score parameterisation, denoising score matching on a Gaussian path
  (Algorithm 5, loss :math:`\|s^\theta_t(x_t) + \epsilon/\beta_t\|^2`, ``t <= score_t_max``).
- ``noise_prediction``: DDPM noise prediction on a Gaussian path (:math:`\|\epsilon^\theta_t(x_t) - \epsilon\|^2`).

The Gaussian path of the two score-based methods is ``schedulers`` (a tuple: ``linear``,
``cosine``, ``vp``; each entry is a separate training run). Flow matching always uses the
CondOT (``linear``) path.

Sampling: every trained model (all seeds at once, ``vmap``) is integrated with the flow ODE
(``euler``, ``heun``) and with the SDE extension trick (``euler_maruyama``, constant
diffusion coefficient ``sigma`` for each value of ``sigmas``), for each number of steps in
``sample_steps``. The network output is turned into the velocity and the score by
:func:`jflow.sampling.as_velocity` / :func:`jflow.sampling.as_score` (closed-form
conversions of :func:`jflow.paths.convert`).

**Time grid (documented choice).** Every sampler of every method uses the same uniform grid
from ``t_eps`` to ``1 - t_eps`` (default ``1e-3``). Score-based fields are singular at both
ends (the score at ``t = 1`` where :math:`\beta_1 = 0`, the velocity converted from a score
or noise prediction at ``t = 0`` where :math:`\alpha_0 = 0`), and Heun evaluates the right
end of each step; one grid for all methods keeps the comparison fair. ``x0 ~ N(0, I)``
stands for :math:`p_{t_{\rm eps}}`.

Metrics against held-out data (``n_eval`` points, independent of training), mean and std
over seeds: energy distance, MMD (RBF mixture, ``jflow.metrics.DEFAULT_BANDWIDTHS``),
sliced Wasserstein-2, and for ODE rows the negative log-likelihood (nats) of ``nll_samples``
held-out points by the instantaneous change of variables with the exact divergence,
integrated with the row's method and number of steps over the reversed grid. For Gaussian
mixture data (``symmetric_mixture``, ``eight_gaussians``) the learned velocity field is
compared with the exact marginal velocity of its own path (``jflow.marginals``): mean
squared error :math:`E\|u^\theta_t(x) - u_t(x)\|^2` over :math:`x \sim p_t`, averaged over
the times ``field_times`` (relative error: divided by :math:`E\|u_t(x)\|^2`). A
``reference`` row gives the metrics of a second independent data sample (the floor set by
the sample size) and, for a mixture, the exact NLL.

Outputs in the run directory (``--out``, default ``runs/ablation-<preset>``):

- ``config.json``: the resolved config, the preset, the runs, the sampling grid, the devices;
- ``results.{json,csv,md}``: one row per dataset x method x scheduler x sampler x sigma x
  steps, plus a ``reference`` row per dataset;
- ``models.{json,csv,md}``: per trained model, the final training loss, the training time
  and the field error (mean and relative, over ``field_times``);
- ``models_field_error_by_t.json``: the same rows with the field error at each time of
  ``field_times`` (``field_mse_by_t``);
- ``training.json``: per run, the step it resumed from, the steps trained now, the wall
  time, the final loss and the loss curve;
- figures ``<dataset>_{samples,metrics,trajectories,vector_field}.png``, and
  ``<dataset>_field_error.png`` for a Gaussian mixture (with ``figures`` on);
- ``checkpoints/``: orbax, one directory per dataset and trained method.

Rerunning the same command in the same directory resumes an interrupted training from its
latest checkpoint (a finished one is only restored) and recomputes the evaluation.

Modules: :mod:`~experiments.ablation.config` (methods, paths, config, presets, random
streams), :mod:`~experiments.ablation.samplers` (the sampler registry and the time grid),
:mod:`~experiments.ablation.training`, :mod:`~experiments.ablation.evaluation`,
:mod:`~experiments.ablation.figures`, :mod:`~experiments.ablation.job` (:func:`run`,
:func:`main`).
"""
from experiments.ablation.config import METHODS, PRESETS, SCHEDULERS, AblationConfig, RunSpec, run_specs
from experiments.ablation.job import main, run
from experiments.ablation.samplers import SAMPLERS, padded_grid, sample_grid

__all__ = ["AblationConfig", "PRESETS", "METHODS", "SCHEDULERS", "SAMPLERS", "RunSpec", "run_specs", "padded_grid",
           "sample_grid", "main", "run"]
