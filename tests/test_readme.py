"""The README's tour runs as written (so the README stays true)."""
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def _tour_code() -> str:
    text = README.read_text()
    tour = text[text.index("## A tour"):]
    start = tour.index("```python") + len("```python")
    return tour[start:tour.index("```", start)]


def test_tour_runs_and_its_comments_hold():
    scope: dict = {}
    exec(compile(_tour_code(), str(README), "exec"), scope)  # noqa: S102 - our own README
    np.testing.assert_allclose(scope["u_from_s"], scope["u"], rtol=1e-4, atol=1e-4)  # "# == u"
    assert np.isfinite(np.asarray(scope["loss"]))
    for name in ("x1", "x_ddim", "x_dpm", "x_anc", "x_pc", "x_ad"):
        assert np.isfinite(np.asarray(scope[name])).all(), name
    assert int(scope["nfe"]) > 8
    # discrete flow matching: a finite loss (log V for the all-zero table) and data tokens only
    np.testing.assert_allclose(scope["dfm_loss"], np.log(scope["V"]), rtol=1e-5)
    x_tok = np.asarray(scope["x_tok"])
    assert x_tok.shape == (1000, scope["D"]) and x_tok.min() >= 0 and x_tok.max() < scope["V"]
