"""The Tong et al. (2023) 2-D reproduction, experiments/couplings: smoke run end to end, and the wiring
of the couplings into its losses checked against closed forms."""
import json
import math

import jax
import numpy as np
import pytest

from experiments.common import ConfigError
from experiments.couplings import data, model, report
from experiments.couplings.evaluate import _velocity, evaluate
from experiments.couplings.methods import make_method_loss
from experiments.couplings.run import PRESETS, CouplingsConfig, main, run_specs
from jflow.integrators import odeint_adaptive
from jflow.metrics import wasserstein2


def test_smoke_preset_writes_tables_and_figure(tmp_path):
    out = tmp_path / "run"
    result = main(["--preset", "smoke", "--out", str(out), "--figures", "true"])
    cfg = CouplingsConfig(**PRESETS["smoke"])
    saved = json.loads((out / "results.json").read_text())
    specs = run_specs(cfg)
    assert ("8gaussians-moons", "FM") not in specs and len(specs) == 11  # FM needs a N(0, I) source
    assert [(r["pair"], r["method"]) for r in saved["records"]] == specs
    for rec in saved["records"]:
        assert len(rec["per_seed"]) == cfg.seeds
        for row in rec["per_seed"]:
            for key in ("w2_ode", "w2_euler_2", "w2_euler_4", "npe", "straightness", "path_energy", "w2_dopri5"):
                assert math.isfinite(row[key]) and row[key] >= 0, (rec["pair"], rec["method"], key)
            nfe = row["dopri5_nfe"]
            assert isinstance(nfe, int) and nfe >= 8 and (nfe - 2) % 6 == 0, (rec["pair"], rec["method"], nfe)
    markdown = (out / "results.md").read_text()
    for heading in ("OT-CFM against I-CFM", "Published numbers", "floor: 2nd data sample"):
        assert heading in markdown
    assert len(saved["paired"]) == 3 * 6  # 3 pairs x (straightness, npe, dopri5 NFE, two few-step W2, ODE W2)
    assert f"dopri5 NFE ({cfg.adaptive_tol:g})" in markdown
    assert (out / "trajectories.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["meta"]["cpu_seconds"] > 0


def test_couplings_are_wired_into_the_losses():
    """On one batch the loss's mean squared target is the pairs' mean squared distance: as drawn for
    I-CFM, the exact minibatch W2^2 for OT-CFM, and |x1 - (1 - sigma_min) x0|^2 for Lipman's FM."""
    x0, x1 = data.pair_batch("normal-moons", 0, 0, 0, 64)
    params = model.init_params(0, width=8, depth=1)
    batch, key = {"x": x1, "x0": x0}, jax.random.PRNGKey(0)

    def target_sq_norm(name):
        return float(make_method_loss(name, sigma=0.1, sb_sigma=1.0)(params, batch, key)[1]["target_sq_norm"])

    independent, optimal = target_sq_norm("I-CFM"), target_sq_norm("OT-CFM")
    assert independent == pytest.approx(np.mean(np.sum((x1 - x0) ** 2, axis=1)), rel=1e-5)
    assert optimal == pytest.approx(wasserstein2(x0, x1) ** 2, rel=1e-5)
    assert optimal < 0.5 * independent
    assert target_sq_norm("FM") == pytest.approx(np.mean(np.sum((x1 - 0.9 * x0) ** 2, axis=1)), rel=1e-5)


def test_samplers_follow_torchcfm_definitions():
    rng = np.random.default_rng(0)
    x = data.sample("8gaussians", rng, 20000)
    residual = x - 5.0 * data.EIGHT_CENTRES[np.argmin(((x[:, None] - 5.0 * data.EIGHT_CENTRES) ** 2).sum(-1), 1)]
    assert np.std(residual) == pytest.approx(0.1**0.25, rel=0.02)  # covariance sqrt(0.1) I, as torchcfm
    moons = data.sample("moons", rng, 100)
    s = np.linspace(0.0, np.pi, 50)
    # the uniform shift is added to both coordinates, so x - y is deterministic (torchdyn's moons)
    expected = 3.0 * np.concatenate([np.cos(s) - np.sin(s), 1.0 - np.cos(s) - 0.5 + np.sin(s)])
    np.testing.assert_allclose(moons[:, 0] - moons[:, 1], expected, atol=1e-5)


def test_bad_config_is_rejected_before_training(tmp_path):
    with pytest.raises(ConfigError, match="methods.*unknown entry 'OT'"):
        main(["--preset", "smoke", "--methods", "OT", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="w2_steps"):
        main(["--preset", "smoke", "--w2_steps", "3", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="adaptive_tol.*got 0.0"):
        main(["--preset", "smoke", "--adaptive_tol", "0", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="adaptive_max_steps"):
        main(["--preset", "smoke", "--adaptive_max_steps", "0", "--out", str(tmp_path)])


def _constant_field(c, width=8):
    """Parameters of the experiment's network whose output is the constant velocity ``c`` everywhere."""
    params = model.init_params(0, 2, width, 1)
    return params[:-1] + ({"w": np.zeros_like(params[-1]["w"]), "b": np.asarray(c, np.float32)},)


def test_dopri5_nfe_is_counted_per_seed_with_the_configured_tolerance():
    """Seeds vmapped together, each with its own NFE (jflow/adaptive.py: 2 evaluations at the start, the
    first one and Hairer's trial; then 6 per attempted step, first-same-as-last):

    - constant velocity c: every stage is c, the error estimate h sum (b - b_hat) c is ~0 and the
      heuristic's d2 = |f1 - f0| = 0, so the first step is min(d0/d1, (0.01/d1)^(1/5)); where that is
      >= 1 one step reaches t = 1: NFE = 2 + 6 = 8, end points x0 + c exactly;
    - zero velocity: d1 = 0, so the first step is 1e-6; the error is exactly 0 (clipped to 1e-10), so the
      PI controller grows h by 10 (prev_err = 1), then by 0.9 * 10^(1.4 - 0.8) = 3.58 a step: after
      11 steps 1e-6 + 1e-5 (3.58^10 - 1) / 2.58 > 1 (10 reach 0.38): NFE = 2 + 6 * 11 = 68, at any tolerance;
    - a random network: the NFE of its own unbatched solve (a batched while_loop must stop counting a seed
      that has finished).
    """
    sets = data.eval_sets("normal-moons", 0, 32)
    x0, target = sets["x0"], sets["target"]
    c, tol = np.array([2e-4, -1e-4], np.float32), 0.05
    scale = tol * (1.0 + np.abs(x0.astype(np.float64)))
    d0, d1 = np.sqrt(np.mean((x0 / scale) ** 2)), np.sqrt(np.mean((c / scale) ** 2))
    assert d1 >= 1e-5 and min(d0 / d1, (0.01 / d1) ** 0.2) >= 1.0  # one step covers [0, 1] at this tolerance
    network = model.init_params([0, 2], 2, 8, 1)
    params = model.stack_params([_constant_field(c), _constant_field([0.0, 0.0]), network])
    kwargs = dict(ref_steps=4, euler_steps=(1, 2), w2_steps=(2,), euler_tol=0.1)
    rows, _ = evaluate(params, sets, adaptive_tol=tol, **kwargs)
    own = int(odeint_adaptive(_velocity, x0, 0.0, 1.0, rtol=tol, atol=tol, args=(network,)).nfe)
    assert [row["dopri5_nfe"] for row in rows] == [8, 68, own]
    assert all(type(row["dopri5_nfe"]) is int for row in rows)
    assert rows[0]["w2_dopri5"] == pytest.approx(wasserstein2(x0 + c, target), rel=1e-5)
    assert rows[1]["w2_dopri5"] == pytest.approx(wasserstein2(x0, target), rel=1e-5)
    assert rows[0]["err_dopri5"] < 1e-6 and rows[1]["err_dopri5"] == 0.0  # RK4 is exact here too
    # the tolerance reaches the solver: at 1e-5 the constant field's first step is (0.01/d1)^(1/5) < 1
    tight, _ = evaluate(params, sets, adaptive_tol=1e-5, **kwargs)
    assert tight[0]["dopri5_nfe"] > 8 and tight[1]["dopri5_nfe"] == 68 and tight[2]["dopri5_nfe"] > own


def test_unfinished_dopri5_solve_is_reported_missing_not_averaged():
    """With too few attempted steps the solve's state is NaN: no NFE or W2 for that seed, and the table says so."""
    sets = data.eval_sets("normal-moons", 0, 32)
    params = model.stack_params([model.init_params([0, r], 2, 8, 1) for r in range(2)])
    cfg = CouplingsConfig(pairs=("normal-moons",), methods=("I-CFM",), seeds=2, ref_steps=4, euler_steps=(1, 2),
                          w2_steps=(2,), euler_tol=0.1, adaptive_max_steps=1)
    rows, facts = evaluate(params, sets, ref_steps=cfg.ref_steps, euler_steps=cfg.euler_steps, w2_steps=cfg.w2_steps,
                           euler_tol=cfg.euler_tol, adaptive_tol=cfg.adaptive_tol,
                           adaptive_max_steps=cfg.adaptive_max_steps)
    assert all(row["dopri5_nfe"] is None and row["w2_dopri5"] is None for row in rows)
    table = report.summary_rows([{"pair": "normal-moons", "method": "I-CFM", "per_seed": rows, "train_seconds": 0.0}],
                                {"normal-moons": facts}, cfg)
    assert table[0]["dopri5 NFE (1e-05)"] == "> 1 steps (unfinished) in 2 seed(s)"
