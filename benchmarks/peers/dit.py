"""The DiT case of the peer benchmark: one flow matching training step on 28 x 28 x 1 images.

``jflow.models.DiT`` in its ``dit_tiny`` configuration (patch 2, hidden 128, 4 blocks, 4
heads, 10 classes; 196 tokens per image) against :class:`~benchmarks.peers.dit_twin.TorchDiT`
with the same weights (outputs and parameter count checked), trained like the U-Net case
(:func:`benchmarks.peers.unet.image_case`: flow_matching's CondOT path, Adam 1e-3).
"""
from __future__ import annotations

from benchmarks.peers.dit_twin import TorchDiT
from benchmarks.peers.report import Case
from benchmarks.peers.twins import copy_params
from benchmarks.peers.unet import image_case, init_without_zeros
from jflow.models import DiT, get_config

CONFIG = "dit_tiny"


def twins():
    """The flax DiT (``dit_tiny``), its parameters (zero-initialised layers made random) and the torch port."""
    cfg = get_config(CONFIG)
    kw = dict(cfg.kwargs)
    fmodel = DiT(**kw)
    h, w, c = cfg.input_shape
    params = init_without_zeros(fmodel, (h, w, c))
    tmodel = TorchDiT(c, h, w, kw["patch_size"], kw["hidden_size"], kw["depth"], kw["num_heads"],
                      mlp_ratio=fmodel.mlp_ratio, num_classes=kw["num_classes"], time_features=fmodel.time_features)
    copy_params(params, tmodel)
    return fmodel, params, tmodel, (h, w, c)


def dit_case(batch: int, seconds: float) -> Case:
    """jflow's DiT step against its PyTorch port at ``batch`` images per step."""
    fmodel, params, tmodel, shape = twins()
    return image_case("DiT 28x28x1", f"DiT ({CONFIG}: patch 2, hidden 128, 4 blocks, 4 heads, 10 classes)",
                      fmodel, params, tmodel, shape, batch, seconds)
