r"""A reproduction of Tong et al. (2023), "Improving and generalizing flow-based generative models
with minibatch optimal transport", 2-D experiments, on jflow's couplings.

Run::

    python -m experiments.couplings                    # default preset: a few minutes on a 2-core CPU
    python -m experiments.couplings --preset smoke     # seconds (tests)
    python -m experiments.couplings --preset full      # the paper's budget: 20000 steps, 5 seeds
    python -m experiments.couplings --methods I-CFM,OT-CFM --pairs normal-moons --seeds 5

Methods (:mod:`.methods`): I-CFM, OT-CFM, SB-CFM and FM with ``sigma_min`` (Lipman et al.;
N(0, I) sources only), each :func:`jflow.losses.make_loss` with a coupling from
:mod:`jflow.couplings` and a path from :mod:`jflow.paths`. Pairs (:mod:`.data`, torchcfm's
exact samplers): N(0, I) -> 8 gaussians, N(0, I) -> moons, 8 gaussians -> moons. Network
(:mod:`.model`): torchcfm's MLP, 3 hidden layers of width 64, SELU. Seeds train together under
``jax.vmap`` (:mod:`.run`). Metrics (:mod:`.evaluate`): exact W2 to held-out data after the ODE
and after 2/4/8/20 Euler steps, Euler steps to reach the ODE's end points, the NFE of an adaptive
Dormand-Prince 5(4) solve (``rtol = atol = adaptive_tol``, 1e-5 by default), path energy,
straightness and Tong et al.'s normalised path energy, mean and std over seeds.

Outputs in ``--out`` (default ``runs/couplings-<preset>``): ``results.json``, ``results.md``
(our table, the paired OT-CFM vs I-CFM comparison, published numbers beside ours) and
``trajectories.png``. ``python -m benchmarks.couplings_torchcfm`` trains torchcfm's own matchers on
the same arrays, initial weights and budget and evaluates them with this package.
"""
from experiments.couplings.run import PRESETS, CouplingsConfig, main, run

__all__ = ["CouplingsConfig", "PRESETS", "main", "run"]
