"""End-to-end check of ``experiments.labs`` at its smoke size, and its config validation."""
import json

import pytest

from experiments import images, labs
from experiments.common import ConfigError

EXPECTED = {
    "brownian": ["brownian.png"],
    "ou": ["ou.png"],
    "langevin": ["langevin.png"],
    "fm_gmm": ["fm_gmm.png"],
    "sm_gmm": ["sm_gmm.png"],
    "moons": ["moons_checkerboard.png"],
    "bridge": ["bridge.png"],
}


def test_smoke_writes_every_figure(tmp_path):
    # every lab but cfg, which is experiments.images at its smoke preset (its own smoke test runs that)
    which = [name for name in labs.LABS if name != "cfg"]
    figures = labs.main(["--preset", "smoke", "--which", ",".join(which), "--out", str(tmp_path)])
    assert list(figures) == which
    for name, files in EXPECTED.items():
        assert [p.rsplit("/", 1)[-1] for p in figures[name]] == files, name
    for paths in figures.values():
        for path in paths:
            with open(path, "rb") as fh:
                assert fh.read(8) == b"\x89PNG\r\n\x1a\n", path
    assert json.loads((tmp_path / "figures.json").read_text()) == figures


def test_cfg_lab_runs_the_image_experiment_at_its_preset_in_a_subfolder(tmp_path, monkeypatch):
    calls = []

    def fake_run(config, out, **kwargs):
        calls.append((config, out))
        (out / "samples_w3.png").write_bytes(b"png")
        (out / "results.md").write_text("| w |")

    monkeypatch.setattr(images, "run", fake_run)
    figures = labs.main(["--preset", "smoke", "--which", "cfg", "--out", str(tmp_path)])
    assert calls == [(images.ImageConfig(**images.PRESETS["smoke"]), tmp_path / "cfg")]
    assert figures == {"cfg": [str(tmp_path / "cfg" / "samples_w3.png")]}


@pytest.mark.parametrize(
    "flag, value, field",
    [
        ("--which", "brownian,fourier", "which"),
        ("--which", "", "which"),
        ("--train_steps", "-5", "train_steps"),
        ("--train_steps", "7", "train_steps"),  # not a multiple of steps_per_call=2
        ("--ou_thetas", "1,-1", "ou_thetas"),
        ("--scheduler", "vp_magic", "scheduler"),
        ("--cfg_preset", "imagenet", "cfg_preset"),
        ("--t_start", "0", "t_start"),
    ],
)
def test_bad_config_is_rejected(tmp_path, flag, value, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        labs.main(["--preset", "smoke", "--out", str(tmp_path), flag, value])
    assert not (tmp_path / "config.json").exists()


def test_which_selects_labs():
    config = labs.LabsConfig(which="ou, brownian")
    config.validate()
    assert config.labs() == ("ou", "brownian")
    assert labs.LabsConfig().labs() == labs.LABS
