"""torchcfm's own matchers on the Tong et al. (2023) 2-D reproduction, beside ``experiments.couplings``.

Usage (repository root, an environment with the ``bench`` extra: torch, torchcfm 1.0.7)::

    python -m benchmarks.couplings_torchcfm                          # default preset (same as the experiment's)
    python -m benchmarks.couplings_torchcfm --preset smoke --out /tmp/tcfm
    python -m benchmarks.couplings_torchcfm --seeds 2 --compare runs/couplings-default

Same everything as ``python -m experiments.couplings`` with the same preset and flags
(they share ``CouplingsConfig``): the same numpy training batches
(``experiments.couplings.data.pair_batch``: source and target draws per seed and step), the
same initial weights (``model.init_params([seed, r])`` copied into torchcfm's
``MLP(dim=2, w=width, time_varying=True)``, 3 hidden layers, SELU), Adam with the same
learning rate, steps and batch, and the same evaluation: the trained torch weights are
loaded into the experiment's JAX network and scored by ``experiments.couplings.evaluate``
(jflow's exact W2, path straightness, Euler steps). What differs is only the training
objective's implementation: torchcfm's ``ConditionalFlowMatcher`` (I-CFM),
``ExactOptimalTransportConditionalFlowMatcher`` (OT-CFM; POT's ``emd``),
``SchrodingerBridgeConditionalFlowMatcher(ot_method="sinkhorn")`` (SB-CFM; POT's Sinkhorn
with ``reg = 2 sigma^2``; torchcfm's default is ``"exact"``, which is not the Schrodinger
bridge coupling) and ``TargetConditionalFlowMatcher`` (FM), with torch's random times and
noise, and torchcfm's pairing: it draws ``B`` pairs *with replacement* from the plan (jflow's
``exact_ot`` keeps each target once and permutes the sources). torchcfm's loss is
``mean((v - u)^2)`` over coordinates, jflow's sums them (a factor ``d = 2``, no effect on
Adam); ``final_loss`` is reported in jflow's convention.

Writes ``results.{json,md}`` and ``trajectories.png`` into ``--out`` (default
``runs/couplings-torchcfm-<preset>``); with ``--compare DIR`` (a run directory of the
experiment) also ``comparison.md``: the two runs side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from experiments.common import ConfigError, cli, parse_config, require, run_dir
from experiments.couplings import data, model, report
from experiments.couplings.run import PRESETS, CouplingsConfig, run


def matcher(method: str, cfg: CouplingsConfig):
    """torchcfm's flow matcher of ``method`` (a key of ``experiments.couplings.methods.METHODS``)."""
    from torchcfm import conditional_flow_matching as cfm

    if method == "I-CFM":
        return cfm.ConditionalFlowMatcher(sigma=cfg.sigma)
    if method == "OT-CFM":
        return cfm.ExactOptimalTransportConditionalFlowMatcher(sigma=cfg.sigma)
    if method == "SB-CFM":
        return cfm.SchrodingerBridgeConditionalFlowMatcher(sigma=cfg.sb_sigma, ot_method="sinkhorn")
    if method == "FM":
        return cfm.TargetConditionalFlowMatcher(sigma=cfg.sigma)
    raise ValueError(f"no torchcfm matcher for method {method!r}")


def torch_network(cfg: CouplingsConfig, params):
    """torchcfm's ``MLP(dim=2, w=width, time_varying=True)`` holding ``params`` (``w`` is ``weight.T``)."""
    import torch
    from torchcfm.models.models import MLP

    net = MLP(dim=2, w=cfg.width, time_varying=True)
    layers = [m for m in net.net if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for layer, p in zip(layers, params, strict=True):
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(p["w"].T)))
            layer.bias.copy_(torch.from_numpy(p["b"]))
    return net


def export(net):
    """The parameters of a torch ``MLP`` in ``experiments.couplings.model``'s format."""
    import torch

    layers = [m for m in net.net if isinstance(m, torch.nn.Linear)]
    return tuple({"w": layer.weight.detach().numpy().T.copy(), "b": layer.bias.detach().numpy().copy()}
                 for layer in layers)


def train_torchcfm(cfg: CouplingsConfig, pair: str, method: str, bar):
    """The experiment's ``train`` with torchcfm: seeds one after another, a plain PyTorch loop."""
    import torch

    # one intra-op thread: for a 64-wide MLP torch's thread pool only spins, and on a loaded
    # 2-core machine it made a step 20x slower (174 ms against 7 ms, measured)
    torch.set_num_threads(1)
    per_seed, tails = [], []
    start = time.perf_counter()
    for r in range(cfg.seeds):
        torch.manual_seed(cfg.seed * 10_000 + r)
        np.random.seed(cfg.seed * 10_000 + r)  # torchcfm's OTPlanSampler draws its pairs with np.random
        net = torch_network(cfg, model.init_params([cfg.seed, r], 2, cfg.width, cfg.depth))
        opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
        fm, losses = matcher(method, cfg), []
        for step in range(cfg.train_steps):
            x0, x1 = (torch.from_numpy(a) for a in data.pair_batch(pair, cfg.seed, r, step, cfg.batch_size))
            t, xt, ut = fm.sample_location_and_conditional_flow(x0, x1)
            loss = torch.mean((net(torch.cat([xt, t[:, None]], dim=-1)) - ut) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss) * x1.shape[1])
            if (step + 1) % cfg.steps_per_call == 0:
                bar.update(cfg.steps_per_call // cfg.seeds + (r < cfg.steps_per_call % cfg.seeds))
                bar.set_postfix_str(f"{pair} {method} seed {r} loss={np.mean(losses[-cfg.steps_per_call:]):.4g}")
        per_seed.append(export(net))
        tails.append(np.mean(losses[-max(1, len(losses) // 10):]))
    return model.stack_params(per_seed), {"train_seconds": time.perf_counter() - start, "final_loss": float(np.mean(tails))}


def main(argv=None) -> dict:
    """Parse the experiment's flags (plus ``--compare DIR``), train with torchcfm, evaluate, write tables."""
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--compare", default=None, help="run directory of python -m experiments.couplings")
    known, rest = extra.parse_known_args(argv)
    cfg, args = parse_config(CouplingsConfig, PRESETS, rest, description=__doc__.splitlines()[0])
    require(cfg.depth == 3, "depth", f"torchcfm's MLP has 3 hidden layers; got depth={cfg.depth}")
    out = run_dir(args.out, f"couplings-torchcfm-{args.preset}")
    result = run(cfg, out, args.preset, trainer=train_torchcfm, label="torchcfm")
    if known.compare:
        other = os.path.join(known.compare, "results.json")
        if not os.path.isfile(other):
            raise ConfigError(f"--compare {known.compare!r}: no results.json there; run python -m experiments.couplings first")
        runs = [json.load(open(other)), json.load(open(out / "results.json"))]
        table = report.side_by_side(runs)
        (out / "comparison.md").write_text(table + "\n")
        print("\n## Side by side\n\n" + table)
    return result


if __name__ == "__main__":
    cli(main)
