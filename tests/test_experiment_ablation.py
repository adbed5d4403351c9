"""End-to-end tests of the main job, experiments/ablation/, on its ``smoke`` preset."""
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import ablation
from experiments.common import ConfigError
from jflow.losses import SCORE_T_MAX

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
                 "models.csv", "models.md", "models_field_error_by_t.json", "training.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    # the package docstring lists every file the run writes
    documented = {word.strip("_") for word in re.findall(r"\w+", ablation.__doc__)}
    for path in out.iterdir():
        if path.is_file():
            assert path.name.split(".")[0].removeprefix("symmetric_mixture_") in documented, path.name
    expected = [f"symmetric_mixture_{kind}.png"
                for kind in ("samples", "metrics", "trajectories", "vector_field", "field_error")]
    assert sorted(Path(p).name for p in result["figures"]) == sorted(expected)
    for name in expected:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    config = json.loads((out / "config.json").read_text())
    cfg = _smoke_config()
    assert config["preset"] == "smoke"
    assert config["train_steps"] == cfg.train_steps and config["sample_steps"] == list(cfg.sample_steps)
    assert config["runs"] == [f"{m}@linear" for m in cfg.methods]
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
    settings = [("euler", 0.0)] + [("euler_maruyama", s) for s in cfg.sigmas]
    assert cfg.sampler_settings() == settings
    wanted = {(m, s, sig, n) for m in cfg.methods for s, sig in settings for n in cfg.sample_steps}
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
    assert [m["run"] for m in models] == [f"{m}@linear" for m in cfg.methods]
    by_t = json.loads((out / "models_field_error_by_t.json").read_text())
    assert [list(m["field_mse_by_t"]) for m in by_t] == [[f"{t:g}" for t in cfg.field_times]] * len(models)
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


@pytest.mark.parametrize("flags, words", [
    (["--schedulers", "bogus"], ["schedulers", "bogus"]),
    (["--preset", "nope"], ["--preset", "nope", "smoke"]),  # argparse's own check, one line too
])
def test_command_line_reports_a_bad_value_in_one_line(tmp_path, flags, words):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.ablation", *flags, "--out", str(tmp_path / "x")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and all(w in line for w in words), line
    assert not (tmp_path / "x").exists()


def test_interrupted_training_resumes_and_matches_the_uninterrupted_run(smoke_run, tmp_path):
    out, first = smoke_run
    cfg = _smoke_config()
    run = "symmetric_mixture-flow_matching-linear"
    resumed = tmp_path / "resumed"
    shutil.copytree(out / "checkpoints" / run, resumed / "checkpoints" / run)
    shutil.copy(out / "training.json", resumed / "training.json")
    # Simulate a crash after the first checkpoint: drop the final one.
    steps = sorted(int(p.name) for p in (resumed / "checkpoints" / run).iterdir() if p.name.isdigit())
    assert steps == [cfg.save_every, cfg.train_steps]
    shutil.rmtree(resumed / "checkpoints" / run / str(cfg.train_steps))
    # one method only (the others' checkpoints are not there): half the compiling
    argv = SMOKE + ["--out", str(resumed), "--figures", "false", "--methods", "flow_matching"]
    second = ablation.main(argv)
    (info,) = second["training"]
    assert info["resumed_from_step"] == cfg.save_every
    assert info["steps_trained_now"] == cfg.train_steps - cfg.save_every
    assert info["final_step"] == cfg.train_steps
    # the loss curve before the checkpoint comes from the earlier run's training.json
    np.testing.assert_allclose(np.asarray(info["loss_curve"]), np.asarray(first["training"][0]["loss_curve"]),
                               rtol=1e-5)
    # same keys, same data position: the resumed run ends where the uninterrupted one did
    rows = [r for r in first["rows"] if r["method"] in ("flow_matching", "reference (data vs data)")]
    assert len(rows) == len(second["rows"])
    for a, b in zip(rows, second["rows"]):
        assert {k: v for k, v in a.items() if not isinstance(v, float)} == \
            {k: v for k, v in b.items() if not isinstance(v, float)}
        for k, v in a.items():
            if isinstance(v, float):
                np.testing.assert_allclose(b[k], v, rtol=1e-4, atol=1e-6, err_msg=k)
    # a finished run is only restored: nothing is trained again
    third = ablation.main(argv)
    assert third["training"][0]["steps_trained_now"] == 0


def test_every_method_and_sampler_is_a_registry_entry():
    """Adding a method or a sampler is one entry: the config, the runs and the rows follow the registries."""
    cfg = ablation.AblationConfig(methods=("noise_prediction", "flow_matching"), schedulers=("cosine", "vp"),
                                  samplers=("heun", "euler_maruyama"), sigmas=(0.5, 1.0))
    cfg.validate()
    assert [s.name for s in ablation.run_specs(cfg)] == ["noise_prediction@cosine", "noise_prediction@vp",
                                                         "flow_matching@linear"]
    assert cfg.sampler_settings() == [("heun", 0.0), ("euler_maruyama", 0.5), ("euler_maruyama", 1.0)]
    assert [ablation.SAMPLERS[s].nfe(8) for s in ("euler", "heun", "euler_maruyama")] == [8, 16, 8]
    assert [ablation.SAMPLERS[s].build_likelihood is None for s in ablation.SAMPLERS] == [False, False, True]
    # only score matching trains on t <= score_t_max (its target is infinite at t = 1)
    assert [cfg.training_signature("moons", m, "linear")["score_t_max"] for m in ablation.METHODS] == \
        [None, SCORE_T_MAX, None]
