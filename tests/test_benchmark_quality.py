"""The quality benchmark's pieces (``benchmarks/quality``): the toy sets against the definitions of
the PyTorch libraries' examples, run names and swaps, the summary statistics, and a tiny end-to-end
jflow run. torch is not needed (the peers' runner is exercised by the benchmark itself)."""
import json
import math

import numpy as np
import pytest

from benchmarks.quality import report, spec
from benchmarks.quality.toy_sets import EIGHT_CENTERS, checkerboard, eight_gaussians, moons


def test_checkerboard_fills_the_eight_black_squares_of_a_4x4_board_uniformly():
    x = checkerboard(np.random.default_rng(0), 40_000) * 0.45  # undo the example's / 0.45
    assert x.dtype == np.float32 and x.shape == (40_000, 2)
    assert x.min() >= -2 and x.max() < 2
    cells = np.floor(x).astype(int)
    assert np.all((cells[:, 0] + cells[:, 1]) % 2 == 0)
    _, counts = np.unique(cells, axis=0, return_counts=True)
    assert len(counts) == 8
    np.testing.assert_allclose(counts / len(x), 1 / 8, atol=0.01)


def test_eight_gaussians_modes_radius_five_and_std_tenth_to_the_quarter():
    x = eight_gaussians(np.random.default_rng(0), 40_000)
    centers = 5.0 * EIGHT_CENTERS
    nearest = np.argmin(((x[:, None, :] - centers[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_allclose(np.bincount(nearest, minlength=8) / len(x), 1 / 8, atol=0.01)
    residual = x - centers[nearest]
    # torchcfm's MultivariateNormal(0, sqrt(var) I) with var = 0.1: covariance sqrt(0.1) I
    np.testing.assert_allclose(residual.std(axis=0), 0.1**0.25, rtol=0.02)
    np.testing.assert_allclose(np.linalg.norm(centers, axis=1), 5.0)


def test_moons_are_evenly_spaced_half_circles_shifted_along_the_diagonal():
    n = 1001
    x = moons(np.random.default_rng(0), n)
    y = (x.astype(np.float64) + 1.0) / 3.0
    n_out, n_in = n // 2, n - n // 2
    arcs = np.concatenate([
        np.stack([np.cos(np.linspace(0, np.pi, n_out)), np.sin(np.linspace(0, np.pi, n_out))], axis=1),
        np.stack([1 - np.cos(np.linspace(0, np.pi, n_in)), 0.5 - np.sin(np.linspace(0, np.pi, n_in))], axis=1),
    ])
    shift = y - arcs
    np.testing.assert_allclose(shift[:, 0], shift[:, 1], atol=1e-6)  # one draw for both coordinates
    assert shift.min() >= -1e-6 and shift.max() < 0.2 + 1e-6


def test_shared_data_is_reproducible_and_identical_for_every_library():
    a = spec.train_batches("moons", 3, steps=2, batch=16)
    np.testing.assert_array_equal(a, spec.train_batches("moons", 3, steps=2, batch=16))
    assert a.shape == (2, 16, 2) and not np.array_equal(a, spec.train_batches("moons", 4, steps=2, batch=16))
    np.testing.assert_array_equal(spec.held_out("8gaussians", 10), spec.held_out("8gaussians", 10))
    z = spec.initial_noise(0, 5000)
    assert z.dtype == np.float32 and abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05


def test_run_names_apply_swaps_and_reject_unknown_names():
    run = spec.parse_run("jflow+lecun_normal+ema", "moons", steps=10)
    assert (run.library, run.initializer, run.ema_decay, run.steps, run.optimizer) == ("jflow", "lecun_normal", 0.999, 10, "adam")
    assert spec.RunSpec.from_json(run.to_json()) == run
    assert spec.parse_run("torchcfm+adamw_1e-2", "moons").weight_decay == 1e-2
    shared = spec.parse_run("flow_matching+shared_init", "moons")  # PyTorch's law, drawn by jflow
    assert shared.initializer == "torch_shared" and spec.jflow_initializer(shared) == "torch"
    assert spec.jflow_initializer(run) == "lecun_normal"
    with pytest.raises(ValueError, match="unknown library"):
        spec.parse_run("jax", "moons")
    with pytest.raises(ValueError, match="unknown swap"):
        spec.parse_run("jflow+sgd", "moons")
    with pytest.raises(ValueError, match="jflow only"):
        spec.parse_run("flow_matching+ema", "moons")
    with pytest.raises(ValueError, match="unknown toy set"):
        spec.parse_run("jflow", "spirals")


def test_summary_statistics_and_welch_test():
    mean, std, se = report.summary([1.0, 2.0, 3.0])
    assert (mean, std) == (2.0, 1.0) and se == pytest.approx(1 / math.sqrt(3))
    assert report.welch_p([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert report.welch_p([1.0, 1.1, 0.9, 1.0], [5.0, 5.1, 4.9, 5.0]) < 1e-6
    assert math.isnan(report.welch_p([1.0], [2.0, 3.0]))
    x = spec.held_out("checkerboard", 200)
    assert report.score(x, x) == pytest.approx({"energy": 0.0, "sliced_w2": 0.0, "mmd": 0.0}, abs=1e-6)
    assert all(math.isnan(v) for v in report.score(np.full_like(x, np.nan), x).values())


def test_paired_difference_and_load_keep_one_line_per_seed(tmp_path):
    ours = [dict(seed=s, energy=e) for s, e in [(0, 1.0), (1, 3.0), (2, 5.0)]]
    theirs = [dict(seed=s, energy=e) for s, e in [(0, 0.5), (1, 2.0), (3, 9.0)]]
    mean, se = report.paired_difference(ours, theirs)  # seeds 0 and 1 only: differences 0.5 and 1.0
    assert mean == pytest.approx(0.75) and se == pytest.approx(0.25)
    assert all(math.isnan(v) for v in report.paired_difference(ours[:1], theirs))
    path = tmp_path / "results.jsonl"
    line = dict(run="jflow", set="moons", seed=0, settings="s", energy=1.0)
    path.write_text("\n".join(json.dumps(dict(line, energy=e)) for e in (1.0, 2.0)) + "\n")
    assert report.load(str(path)) == [line]  # the first score of a seed wins


def test_jflow_runner_trains_and_samples_a_tiny_model():
    from benchmarks.quality.jflow_runner import run_seeds

    tiny = spec.RunSpec(library="jflow", toy_set="8gaussians", steps=4, batch=8, width=8, depth=1, euler_steps=2)
    (out,) = run_seeds(tiny, [0])
    assert out["seed"] == 0 and out["seconds"] > 0
    assert out["samples"].shape == (spec.N_EVAL, 2) and np.all(np.isfinite(out["samples"]))
