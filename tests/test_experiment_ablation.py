"""End-to-end tests of the main job, ``python -m experiments.ablation``, on its ``smoke`` preset."""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import ablation
from experiments.ablation.config import GENERIC_SAMPLERS
from experiments.ablation.evaluation import sampler_nfe
from experiments.ablation.config import STREAMS, streams
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
    for name in ("config.json", "summary.md", "results.json", "results.csv", "results.md", "models.json",
                 "models.csv", "models.md", "models_field_error_by_t.json", "training.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    expected = [f"symmetric_mixture_{kind}.png" for kind in ("samples", "metrics", "field_error")]
    assert sorted(Path(p).name for p in result["figures"]) == sorted(expected)
    for name in expected:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    config = json.loads((out / "config.json").read_text())
    cfg = _smoke_config()
    assert config["preset"] == "smoke" and config["runs"] == list(cfg.runs)
    rows = json.loads((out / "results.json").read_text())
    assert len((out / "results.csv").read_text().strip().splitlines()) == 1 + len(rows)


def test_every_run_sampler_and_step_count_has_finite_metrics(smoke_run):
    out, _ = smoke_run
    cfg = _smoke_config()
    rows = json.loads((out / "results.json").read_text())
    reference = [r for r in rows if r["run"].startswith("reference")]
    assert len(reference) == 1 and reference[0]["nll_exact"] > 0  # exact NLL of the mixture
    rows = [r for r in rows if not r["run"].startswith("reference")]
    wanted = {(s.name, sampler, n) for s in cfg.specs for sampler in cfg.sampler_runs(s) for n in cfg.sample_steps}
    assert {(r["run"], r["sampler"], r["steps"]) for r in rows} == wanted and len(rows) == len(wanted)
    # each parameterisation gets the generic ODE samplers and its own ones
    assert {r["sampler"] for r in rows if r["run"] == "score_matching@linear:noise"} == set(ablation.SAMPLERS)
    assert {r["sampler"] for r in rows if r["run"] == "flow_matching@linear"} == set(GENERIC_SAMPLERS)
    for r in rows:
        for m in ("energy", "mmd", "sw2"):
            assert math.isfinite(r[f"{m}_mean"]) and r[f"{m}_mean"] >= 0, (r, m)
        assert r["nfe"] == sampler_nfe(r["sampler"], r["steps"])
    assert sampler_nfe("heun", 4) == 8 and sampler_nfe("pc", 4) == 8 and sampler_nfe("ddim", 4) == 4
    models = json.loads((out / "models.json").read_text())
    assert [m["run"] for m in models] == list(cfg.runs)
    for m in models:
        for k in ("final_loss", "nll_mean", "field_mse_mean", "dopri5_energy_mean"):
            assert math.isfinite(m[k]), (m["run"], k)
        assert m["dopri5_nfe_mean"] >= 8  # at least one Dormand-Prince step (6) plus the start (2)
    by_t = json.loads((out / "models_field_error_by_t.json").read_text())
    assert all(sorted(map(float, m["field_mse_by_t"])) == sorted(cfg.field_times) for m in by_t)


def test_run_specs_parse_and_name():
    spec = ablation.RunSpec.parse("score_matching@vp:min_snr")
    assert (spec.method, spec.scheduler, spec.weighting, spec.parameterization) == ("score_matching", "vp", "min_snr", "score")
    assert spec.name == "score_matching@vp:min_snr" and ablation.RunSpec.parse("flow_matching@linear").weighting == "none"
    cfg = ablation.AblationConfig()
    assert cfg.train_t_max(ablation.RunSpec.parse("flow_matching@linear")) is None
    assert cfg.train_t_max(ablation.RunSpec.parse("flow_matching@vp")) == cfg.t_max  # VP derivatives blow up at 1


def test_named_streams_keep_their_derivations():
    s = streams(ablation.AblationConfig(seed=7))
    np.testing.assert_array_equal(s.key("heldout"), jax.random.PRNGKey(7 + 1_000_003))
    want = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(7), 1), 1)  # run 1 of stream "train"
    np.testing.assert_array_equal(s.keys("train", 2)[1], want)
    keys = {str(np.asarray(s.key(name, 0))) for name in STREAMS}
    assert len(keys) == len(STREAMS)  # no two streams share a key


@pytest.mark.parametrize(
    "flags, field",
    [
        (["--runs", "flow_matching@linear,score_matching@bogus"], "runs"),
        (["--runs", "score_matching@linear:beta"], "runs"),
        (["--runs", "diffusion@linear"], "runs"),
        (["--train_steps", "-5"], "train_steps"),
        (["--sample_steps", "4,-2"], "sample_steps"),
        (["--samplers", "euler,rk45"], "samplers"),
        (["--datasets", "mnist"], "datasets"),
    ],
)
def test_bad_config_is_rejected_before_anything_runs(tmp_path, flags, field):
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=f"'{field}'"):
        ablation.main(SMOKE + flags + ["--out", str(out)])
    assert not out.exists()  # nothing was trained or written


def test_command_line_reports_a_bad_value_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.ablation", "--preset", "smoke", "--runs", "flow_matching@bogus",
         "--out", str(tmp_path / "x")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 2
    assert "runs" in proc.stderr and "bogus" in proc.stderr and "Traceback" not in proc.stderr


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
    fast = ["--samplers", "euler", "--figures", "false"]
    second = ablation.main(SMOKE + fast + ["--out", str(resumed)])
    for info in second["training"]:
        assert info["resumed_from_step"] == cfg.save_every
        assert info["steps_trained_now"] == cfg.train_steps - cfg.save_every
        assert info["final_step"] == cfg.train_steps
    # same keys, same data position: the resumed run ends where the uninterrupted one did
    euler = [r for r in first["rows"] if r["sampler"] in ("euler", "-")]
    assert len(euler) == len(second["rows"])
    for a, b in zip(euler, second["rows"]):
        assert {k: v for k, v in a.items() if not isinstance(v, float)} == \
            {k: v for k, v in b.items() if not isinstance(v, float)}
        for k, v in a.items():
            if isinstance(v, float):
                np.testing.assert_allclose(b[k], v, rtol=1e-4, atol=1e-6, err_msg=k)
    # a finished run is only restored: nothing is trained again
    third = ablation.main(SMOKE + fast + ["--out", str(resumed)])
    assert all(info["steps_trained_now"] == 0 for info in third["training"])
