"""The experiment scripts' shared command line (experiments.common): one-line errors, run directories, streams.

Every case here stops before anything is trained, so each costs no compilation.
"""
import jax
import numpy as np
import pytest

from experiments import ablation, images, labs
from experiments.common import ConfigError, Streams, cli, run_dir, run_fold, seed_offset

SCRIPTS = {"ablation": (ablation.main, "train_steps"), "images": (images.main, "steps"),
           "labs": (labs.main, "train_steps")}


def _cli_error(capsys, main, argv) -> str:
    """Run ``main(argv)`` as the scripts do; return the one stderr line (and check status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        cli(lambda: main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_unknown_preset_and_unparsable_value_are_one_line_errors(capsys, tmp_path, script):
    main, steps = SCRIPTS[script]
    out = tmp_path / "run"
    err = _cli_error(capsys, main, ["--preset", "nope", "--out", str(out)])
    assert "--preset" in err and "'nope'" in err and "'smoke'" in err  # the choices
    err = _cli_error(capsys, main, ["--preset", "smoke", f"--{steps}", "abc", "--out", str(out)])
    assert f"--{steps}" in err and "'abc'" in err
    err = _cli_error(capsys, main, ["--preset", "smoke", f"--{steps}", "-3", "--out", str(out)])
    assert f"'{steps}'" in err and "-3" in err
    assert not out.exists()


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_out_below_a_regular_file_is_a_one_line_error(capsys, tmp_path, script):
    main, _ = SCRIPTS[script]
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    err = _cli_error(capsys, main, ["--preset", "smoke", "--out", str(blocker / "run")])
    assert str(blocker) in err and "is a file" in err
    _cli_error(capsys, main, ["--preset", "smoke", "--out", str(blocker)])
    assert blocker.read_text() == "not a directory"


def test_run_dir_creates_nested_directories(tmp_path):
    out = run_dir(str(tmp_path / "a" / "b"), "unused")
    assert out.is_dir() and run_dir(str(out), "unused") == out  # an existing directory is fine
    (out / "c").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        run_dir(str(out / "c" / "d"), "unused")


def test_streams_name_every_key_and_refuse_unknown_names():
    streams = Streams(7, {"train": run_fold(1), "heldout": seed_offset(1_000_003)})
    base = jax.random.PRNGKey(7)
    np.testing.assert_array_equal(streams.key("heldout"), jax.random.PRNGKey(7 + 1_000_003))
    keys = streams.keys("train", 3)
    assert keys.shape == (3, 2)
    for r in range(3):
        np.testing.assert_array_equal(keys[r], jax.random.fold_in(jax.random.fold_in(base, r), 1))
    assert len({tuple(np.asarray(k)) for k in keys}) == 3
    with pytest.raises(ValueError, match=r"unknown random stream 'test'.*\['heldout', 'train'\]"):
        streams.key("test")


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_names_the_command_that_runs_the_script(capsys, script):
    main, steps = SCRIPTS[script]
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m experiments.{script} ") and f"--{steps}" in out
