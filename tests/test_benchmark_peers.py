"""The peer benchmark's PyTorch twins (``benchmarks/peers``): the same parameter count and the
same outputs as the flax models they mirror. Skipped where torch is not installed (CI)."""
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("flow_matching")  # the peer benchmark's case modules import it


@pytest.mark.parametrize("case", ["dit", "unet"])
def test_torch_twin_has_the_flax_models_parameters_and_outputs(case):
    import jax

    from benchmarks.peers import dit, unet
    from benchmarks.peers.twins import check_same_outputs
    from jflow.models import count_params

    fmodel, params, tmodel, (h, w, c) = dit.twins() if case == "dit" else unet._twins()
    assert count_params(params) == sum(p.numel() for p in tmodel.parameters())
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((2, h, w, c)).astype(np.float32), rng.uniform(size=2).astype(np.float32)
    err = check_same_outputs(jax.jit(fmodel.apply), params, lambda x, t, y: tmodel(x.permute(0, 3, 1, 2), t, y),
                             x, t, np.array([3, 10], np.int32), what=case)
    assert err < 1e-4
