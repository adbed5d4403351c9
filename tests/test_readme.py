"""The README's tour is executed, so the README stays true."""
import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tour_runs_and_its_claims_hold():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has no python block"
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    # The comment "u_from_s == u" of the tour: the score -> velocity conversion recovers u_t(x|z).
    np.testing.assert_allclose(namespace["u_from_s"], namespace["u"], rtol=1e-4, atol=1e-5)
    assert namespace["x1"].shape == (1000, 2) and np.isfinite(namespace["loss"])
