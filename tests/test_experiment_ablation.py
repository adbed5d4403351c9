"""End-to-end tests of the main job, experiments/ablation.py, on its ``smoke`` preset."""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import ablation
from experiments.common import ConfigError

SMOKE = ["--preset", "smoke"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One complete smoke run (shared by the tests below): its output directory and return value."""
    out = tmp_path_factory.mktemp("ablation") / "run"
    result = ablation.main(SMOKE + ["--out", str(out)])
    return out, result


def _smoke_config():
    return ablation.AblationConfig(**ablation.PRESETS["smoke"])


def test_writes_every_output(smoke_run):
    out, result = smoke_run
    for name in ("config.json", "results.json", "results.csv", "results.md", "models.json",
                 "models.csv", "models.md", "training.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    expected = [f"symmetric_mixture_{kind}.png"
                for kind in ("samples", "metrics", "trajectories", "vector_field", "field_error")]
    assert sorted(Path(p).name for p in result["figures"]) == sorted(expected)
    for name in expected:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    config = json.loads((out / "config.json").read_text())
    cfg = _smoke_config()
    assert config["preset"] == "smoke"
    assert config["train_steps"] == cfg.train_steps and config["sample_steps"] == list(cfg.sample_steps)
    assert config["runs"] == ["flow_matching@linear", "score_matching@linear", "noise_prediction@linear"]
    # the CSV has the rows of the JSON table
    rows = json.loads((out / "results.json").read_text())
    assert len((out / "results.csv").read_text().strip().splitlines()) == 1 + len(rows)


def test_every_method_sampler_and_step_count_has_finite_metrics(smoke_run):
    out, _ = smoke_run
    cfg = _smoke_config()
    rows = json.loads((out / "results.json").read_text())
    reference = [r for r in rows if r["method"].startswith("reference")]
    assert len(reference) == 1 and reference[0]["nll_mean"] > 0  # exact NLL of the mixture
    rows = [r for r in rows if not r["method"].startswith("reference")]
    settings = [("euler", 0.0), ("heun", 0.0)] + [("euler_maruyama", s) for s in cfg.sigmas]
    wanted = {(m, s, sig, n) for m in ablation.METHODS for s, sig in settings for n in cfg.sample_steps}
    got = {(r["method"], r["sampler"], r["sigma"], r["steps"]) for r in rows}
    assert got == wanted and len(rows) == len(wanted)
    for r in rows:
        assert r["parameterization"] == ablation.METHODS[r["method"]].parameterization
        for m in ("energy", "mmd", "sw2"):
            assert math.isfinite(r[f"{m}_mean"]) and r[f"{m}_mean"] >= 0, (r, m)
            assert math.isfinite(r[f"{m}_std"]) and r[f"{m}_std"] >= 0, (r, m)
        if r["sampler"] == "euler_maruyama":
            assert r["nll_mean"] is None  # no likelihood for the SDE
        else:
            assert math.isfinite(r["nll_mean"]), r
        assert r["nfe"] == r["steps"] * (2 if r["sampler"] == "heun" else 1)
    models = json.loads((out / "models.json").read_text())
    assert [m["run"] for m in models] == ["flow_matching@linear", "score_matching@linear", "noise_prediction@linear"]
    for m in models:
        assert math.isfinite(m["field_mse_mean"]) and m["field_mse_mean"] > 0
        assert math.isfinite(m["final_loss"])


def test_padded_grid_is_the_sampling_grid_plus_inert_points():
    cfg = _smoke_config()
    n_max = max(cfg.sample_steps)
    ts, window = ablation.padded_grid(cfg, 2)
    ts, window = np.asarray(ts), np.asarray(window)
    assert ts.shape == (n_max + 1,)
    np.testing.assert_allclose(ts[:3], [cfg.t_eps, 0.5, 1 - cfg.t_eps], rtol=1e-6)
    assert np.all(np.diff(ts) > 0) and np.all(ts[3:] > window[1]) and np.all(ts[:3] <= window[1])
    back, window_back = ablation.padded_grid(cfg, 2, reverse=True)
    back = np.asarray(back)
    assert np.all(np.diff(back) < 0) and np.all(back[3:] < window_back[0]) and np.all(back[:3] >= window_back[0])


@pytest.mark.parametrize(
    "flags, field",
    [
        (["--schedulers", "linear,bogus"], "schedulers"),
        (["--train_steps", "-5"], "train_steps"),
        (["--sample_steps", "4,-2"], "sample_steps"),
        (["--methods", "flow_matching,diffusion"], "methods"),
        (["--datasets", "mnist"], "datasets"),
        (["--sigmas", "0"], "sigmas"),
    ],
)
def test_bad_config_is_rejected_before_anything_runs(tmp_path, flags, field):
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=f"'{field}'"):
        ablation.main(SMOKE + flags + ["--out", str(out)])
    assert not out.exists()  # nothing was trained or written


def test_command_line_reports_a_bad_value_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.ablation", "--preset", "smoke", "--schedulers", "bogus",
         "--out", str(tmp_path / "x")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode != 0
    assert "schedulers" in proc.stderr and "bogus" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_interrupted_training_resumes_and_matches_the_uninterrupted_run(smoke_run, tmp_path):
    out, first = smoke_run
    cfg = _smoke_config()
    resumed = tmp_path / "resumed"
    shutil.copytree(out / "checkpoints", resumed / "checkpoints")
    # Simulate a crash after the first checkpoint: drop the final one of every run.
    for run in (resumed / "checkpoints").iterdir():
        steps = sorted(int(p.name) for p in run.iterdir() if p.name.isdigit())
        assert steps == [cfg.save_every, cfg.train_steps]
        shutil.rmtree(run / str(cfg.train_steps))
    second = ablation.main(SMOKE + ["--out", str(resumed), "--figures", "false"])
    for info in second["training"]:
        assert info["resumed_from_step"] == cfg.save_every
        assert info["steps_trained_now"] == cfg.train_steps - cfg.save_every
        assert info["final_step"] == cfg.train_steps
    # same keys, same data position: the resumed run ends where the uninterrupted one did
    for a, b in zip(first["rows"], second["rows"]):
        assert {k: v for k, v in a.items() if not isinstance(v, float)} == \
            {k: v for k, v in b.items() if not isinstance(v, float)}
        for k, v in a.items():
            if isinstance(v, float):
                np.testing.assert_allclose(b[k], v, rtol=1e-4, atol=1e-6, err_msg=k)
    # a finished run is only restored: nothing is trained again
    third = ablation.main(SMOKE + ["--out", str(resumed), "--figures", "false"])
    assert all(info["steps_trained_now"] == 0 for info in third["training"])
