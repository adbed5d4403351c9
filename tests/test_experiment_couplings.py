"""The Tong et al. (2023) 2-D reproduction, experiments/couplings: smoke run end to end, and the wiring
of the couplings into its losses checked against closed forms."""
import json
import math

import jax
import numpy as np
import pytest

from experiments.common import ConfigError
from experiments.couplings import data, model
from experiments.couplings.methods import make_method_loss
from experiments.couplings.run import PRESETS, CouplingsConfig, main, run_specs
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
            for key in ("w2_ode", "w2_euler_2", "w2_euler_4", "npe", "straightness", "path_energy"):
                assert math.isfinite(row[key]) and row[key] >= 0, (rec["pair"], rec["method"], key)
    markdown = (out / "results.md").read_text()
    for heading in ("OT-CFM against I-CFM", "Published numbers", "floor: 2nd data sample"):
        assert heading in markdown
    assert len(saved["paired"]) == 3 * 5  # 3 pairs x (straightness, npe, two few-step W2, ODE W2)
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
