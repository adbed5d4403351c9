"""The accelerator check's tiny mode runs here, on the 8 fake CPU devices of conftest."""
import json

import pytest

from benchmarks import device_check


def test_tiny_device_check_writes_consistent_figures(tmp_path):
    out = tmp_path / "check.json"
    device_check.main(["--tiny", "--models", "dit", "--steps", "1", "--nfe", "2", "--out", str(out)])
    result = json.loads(out.read_text())
    dit = result["models"]["dit"]
    assert dit["train"]["flops_per_step"] > 0 and dit["train"]["steps_per_s"] > 0
    rate = dit["train"]["flops_per_step"] * dit["train"]["steps_per_s"]
    assert dit["train"]["mfu_measured_peak"] == pytest.approx(rate / result["peak_bf16_measured"])
    assert dit["sample"]["nfe"] == 2 and dit["sample"]["images_per_s"] > 0
    # the data-parallel step over the fake devices equals the single-device step
    assert dit["sharded"]["devices"] == 8
    assert dit["sharded"]["max_param_diff"] < 1e-5


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        device_check.main(["--tiny", "--models", "resnet", "--out", str(tmp_path / "x.json")])
    assert "unknown model(s) ['resnet']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        device_check.main(["--tiny", "--nfe", "3", "--out", str(tmp_path / "x.json")])
    assert "--nfe must be an even number" in capsys.readouterr().err
