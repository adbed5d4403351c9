"""End-to-end checks of ``experiments.images`` at its smoke size (8 fake CPU devices: data-parallel path)."""
import json
import math

import pytest

from experiments import images
from experiments.common import ConfigError, cli
from experiments.images.figures import w_name
from experiments.images.training import classifier_loss


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke run (4 steps, data-parallel over the 8 fake devices), then the same command
    with --steps 8 on one device: it must resume at step 4 from the 8-device checkpoint."""
    out = tmp_path_factory.mktemp("images")
    first = images.main(["--preset", "smoke", "--out", str(out)])
    second = images.main(["--preset", "smoke", "--out", str(out), "--steps", "8", "--evaluate", "false",
                          "--devices", "1"])
    return out, first, second


def test_smoke_writes_every_output(smoke_run):
    out, first, _ = smoke_run
    scales = images.PRESETS["smoke"]["guidance_scales"]
    for name in ("config.json", "summary.json", "results.json", "results.csv", "results.md", "loss.png"):
        assert (out / name).is_file(), name
    for w in scales:
        assert (out / f"samples_w{w_name(w)}.png").stat().st_size > 0
    for c in range(10):
        assert (out / f"samples_class{c}.png").stat().st_size > 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["w"] for r in rows] == list(scales)
    for row in rows:
        assert math.isfinite(row["frechet_distance"]) and row["frechet_distance"] >= 0
        assert 0.0 <= row["guided_class_accuracy"] <= 1.0
        # 2 samples per class, 10 classes
        assert row["num_samples"] == 20
    assert len((out / "results.csv").read_text().strip().splitlines()) == 1 + len(scales)
    assert first["devices"] == 8 and first["start_step"] == 0 and first["end_step"] == 4
    assert (out / "classifier").is_dir()


def test_rerun_resumes_from_checkpoint(smoke_run):
    out, _, second = smoke_run
    assert second["start_step"] == 4 and second["end_step"] == 8 and second["devices"] == 1
    assert (out / "checkpoints" / "8").is_dir()
    # the second invocation ran only steps 4..8: 2 fused calls of 2 steps, logged after each
    assert second["final_loss"] > 0


@pytest.mark.parametrize(
    "flag, value, field",
    [
        ("--dataset", "imagenet", "dataset"),
        ("--steps", "-2", "steps"),
        ("--guidance_scales", "", "guidance_scales"),
        ("--guidance_scales", "1,nan", "guidance_scales"),
        ("--sample_method", "leapfrog", "sample_method"),
        ("--norm_groups", "3", "norm_groups"),
        ("--label_dropout", "1.5", "label_dropout"),
    ],
)
def test_bad_config_is_rejected_before_training(tmp_path, flag, value, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        images.main(["--preset", "smoke", "--out", str(tmp_path), flag, value])
    assert not (tmp_path / "checkpoints").exists()


def test_batch_must_split_over_devices(tmp_path):
    # 8 fake devices: a batch of 12 cannot be split evenly; rejected before any training
    with pytest.raises(ConfigError, match="'batch_size'"):
        images.main(["--preset", "smoke", "--out", str(tmp_path), "--batch_size", "12"])
    assert not (tmp_path / "checkpoints").exists()


def test_steps_below_checkpoint_is_rejected(smoke_run):
    out, _, _ = smoke_run
    with pytest.raises(ConfigError, match="'steps'"):
        images.main(["--preset", "smoke", "--out", str(out), "--steps", "2", "--evaluate", "false"])


def test_classifier_loss_is_nan_for_labels_out_of_range():
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jflow.models import Classifier

    model = Classifier(num_classes=3, channels=(4,), features=8)
    x = jnp.zeros((2, 8, 8, 1))
    params = model.init(jax.random.PRNGKey(0), x)
    loss = jax.jit(classifier_loss(model))
    good, _ = loss(params, {"x": x, "y": jnp.array([0, 2])}, jax.random.PRNGKey(1))
    np.testing.assert_allclose(good, -np.mean(np.take_along_axis(
        np.asarray(jax.nn.log_softmax(model.apply(params, x))), np.array([[0], [2]]), axis=1)), rtol=1e-6)
    for bad in ([0, 3], [-1, 1]):
        value, _ = loss(params, {"x": x, "y": jnp.array(bad)}, jax.random.PRNGKey(1))
        assert np.isnan(value), bad


def test_mnist_preset_data_path_through_tfds(tmp_path):
    """The TFDS path end to end (mnist records from tfds.testing.mock_data: no download):
    28x28 images padded to 32, trained two steps, checkpointed."""
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=32, policy=tfds.testing.MockPolicy.USE_CODE):
        result = images.main(["--preset", "smoke", "--dataset", "mnist", "--out", str(tmp_path), "--steps", "2",
                              "--save_every", "2", "--evaluate", "false", "--devices", "1"])
    assert result["end_step"] == 2 and math.isfinite(result["final_loss"])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["dataset"] == "mnist"
    assert (tmp_path / "checkpoints" / "2").is_dir()


def test_missing_tfds_data_is_one_short_error_and_writes_nothing(tmp_path, capsys):
    """Checked before the run folder exists: what is missing, the command that prepares it, the offline option."""
    pytest.importorskip("tensorflow_datasets")
    empty, out = tmp_path / "tfds", tmp_path / "run"
    empty.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        cli(lambda: images.main(["--dataset", "mnist", "--data_dir", str(empty), "--out", str(out)]))
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and "'mnist' is not prepared" in line and str(empty) in line, line
    assert f"tfds build mnist --data_dir={empty} --file_format=array_record" in line
    assert "--dataset digits" in line
    assert not out.exists()
