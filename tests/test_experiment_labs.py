"""End-to-end check of ``experiments.labs`` at its smoke size, and its config validation."""
import json

import pytest

from experiments import labs
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
    figures = labs.main(["--preset", "smoke", "--out", str(tmp_path)])
    assert list(figures) == list(labs.LABS)
    for name, files in EXPECTED.items():
        assert [p.rsplit("/", 1)[-1] for p in figures[name]] == files, name
    # the cfg lab is experiments.images at its smoke preset: a grid per w and per class
    cfg_files = {p.rsplit("/", 1)[-1] for p in figures["cfg"]}
    assert {"samples_w1.png", "samples_w3.png", "samples_w5.png", "samples_class0.png", "loss.png"} <= cfg_files
    for paths in figures.values():
        for path in paths:
            with open(path, "rb") as fh:
                assert fh.read(8) == b"\x89PNG\r\n\x1a\n", path
    assert json.loads((tmp_path / "figures.json").read_text()) == figures
    rows = json.loads((tmp_path / "cfg" / "results.json").read_text())
    assert [r["w"] for r in rows] == [1.0, 3.0, 5.0]


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
