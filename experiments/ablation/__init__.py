r"""The main job: CondOT flow matching vs score matching and noise prediction, each with its proper
loss weighting and its own samplers, same network, budget, data and seeds.

Run::

    python -m experiments.ablation                      # default: 7 runs x 2 data sets, ~5 min on a 2-core CPU
    python -m experiments.ablation --preset naive       # the previous (naive) comparison, Euler/Heun only
    python -m experiments.ablation --preset smoke       # every code path once, small (CI)
    python -m experiments.ablation --preset full        # GPU scale: wider nets, 5 seeds, more data sets
    python -m experiments.ablation --runs flow_matching@linear,score_matching@vp:min_snr --out runs/mine

**Runs** (``runs``, each ``method@path[:weighting]``; every run trains ``seeds`` models together
with ``jax.vmap``, same MLP, optimizer, steps, batch, and the same data, times and noise per
seed): ``method`` is what the network predicts, ``flow_matching`` (velocity, Algorithms 3-4),
``score_matching`` (score, Algorithm 5), ``noise_prediction`` (DDPM) or ``data_prediction``;
``path`` a Gaussian path (``linear`` = CondOT, ``cosine``, ``vp``); ``weighting`` a name of
:data:`jflow.losses.LOSS_WEIGHTINGS` (default ``none``, the loss as written; ``noise`` makes
any loss equal DDPM's, i.e. :math:`\lambda(t) = \beta_t^2` for the score). The default set is
Lipman et al. (2023)'s comparison on toy data: FM on CondOT and on the VP (diffusion) path,
DDPM noise prediction, denoising score matching weighted by :math:`\beta_t^2`, and DSM as
written (unweighted, the naive row). Training times are ``t <= t_max`` where a target is
infinite at ``t = 1`` (score; every VP run).

**Samplers** (``samplers``; each run uses those that fit its parameterisation): the generic
flow ODE on the converted velocity (``euler``, ``heun``; grid ``[t_eps, 1 - t_eps]``) for every
run, and the diffusion samplers on ``[t_eps, 1]``: ``ddim`` and ``dpm_solver_pp`` (2M) for score,
noise and data models, ``pc`` (reverse-SDE predictor + Langevin corrector, ``pc_snr``) for
score models. Each runs at every ``sample_steps``; NFE is reported per row.

**Metrics**, mean and std over seeds, against ``n_eval`` held-out points: energy distance,
MMD, sliced W2 per sampler and step count (``results.*``); per trained model (``models.*``):
NLL of held-out data (Heun, largest step count, exact divergence), the NFE and energy distance
of an adaptive Dormand-Prince 5(4) solve of the flow ODE over ``[t_eps, 1 - t_eps]`` at
``rtol = atol = adaptive_tol`` for ``adaptive_samples`` points per seed, one step-size sequence
for the batch (Lipman et al. Table 1's NFE column), and for Gaussian-mixture data the error of the learned
velocity against the exact marginal velocity of its own path at each of ``field_times``
(ends included). A reference row gives the metrics of a second data sample (the floor) and
the exact NLL.

**Outputs** in ``--out`` (default ``runs/ablation-<preset>``): ``config.json``, ``summary.md``
(each run's best sampler at the largest step count, and the model table), ``results.{json,csv,md}``,
``models.{json,csv,md}``, ``models_field_error_by_t.json`` (the field error per time),
``training.json`` (per run: resumed from which step, wall time, loss curve), figures
``<dataset>_{samples,metrics,field_error}.png``, and ``checkpoints/`` (orbax, one directory per
run). Rerunning the same command in the same directory resumes an interrupted training from
its latest checkpoint (a finished one is only restored) and recomputes the evaluation.

Modules: :mod:`~experiments.ablation.config` (runs, samplers, presets, validation),
:mod:`~experiments.ablation.training`, :mod:`~experiments.ablation.programs` (the compiled
programs of one run, built once and passed explicitly), :mod:`~experiments.ablation.evaluation`,
:mod:`~experiments.ablation.figures`, :mod:`~experiments.ablation.run` (orchestration, ``main``).
"""
from experiments.ablation.config import DEFAULT_RUNS, METHODS, PRESETS, SAMPLERS, SCHEDULERS, AblationConfig, RunSpec
from experiments.ablation.run import main, run

__all__ = ["AblationConfig", "RunSpec", "PRESETS", "METHODS", "SCHEDULERS", "SAMPLERS", "DEFAULT_RUNS", "main", "run"]
