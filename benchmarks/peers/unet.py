"""The U-Net case of the peer benchmark: one flow matching training step on 28 x 28 x 1 images.

``jflow.models.UNet`` in its ``unet_mnist`` configuration (dropout 0, 10 classes) against
:class:`~benchmarks.peers.unet_twin.TorchUNet` with the same weights (outputs checked),
trained with flow_matching's CondOT path and Adam 1e-3.

:func:`image_case` (a class-conditional image model and its torch twin, timed step
against step) is shared with the DiT case (:mod:`benchmarks.peers.dit`).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flow_matching.path import AffineProbPath
from flow_matching.path.scheduler import CondOTScheduler

import jflow.train as jt
from benchmarks.harness import Runner, calibrate, xla_flops
from benchmarks.peers.report import Case
from benchmarks.peers.twins import check_same_outputs, copy_params
from benchmarks.peers.unet_twin import TorchUNet
from jflow.losses import make_loss
from jflow.models import UNet, count_params, get_config
from jflow.schedulers import LinearScheduler

LR = 1e-3
POOL = 8  # distinct batches, reused cyclically


def init_without_zeros(fmodel, shape):
    """Parameters of the image model ``fmodel`` for inputs of ``shape`` (H, W, C), zeros replaced.

    flax zero-initialises some layers (the last convs of the U-Net's residual branches, the
    DiT's adaLN modulations); random values there make the twins' output check exercise them.
    """
    params = jax.jit(fmodel.init)(jax.random.PRNGKey(0), jnp.zeros((1, *shape)), jnp.zeros((1,)), jnp.zeros((1,), jnp.int32))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
    return jax.tree.unflatten(tree, [jnp.where(v == 0, 0.05 * jax.random.normal(k, v.shape), v) for v, k in zip(leaves, keys)])


def _twins():
    """The flax U-Net, its parameters (no zeros, so the check exercises every layer) and the torch port."""
    cfg = get_config("unet_mnist")
    kw = dict(cfg.kwargs, dropout=0.0)
    fmodel = UNet(**kw)
    h, w, c = cfg.input_shape
    params = init_without_zeros(fmodel, (h, w, c))
    tmodel = TorchUNet(c, kw["base_channels"], kw["channel_mults"], kw["num_res_blocks"],
                       kw["attention_levels"], kw["num_heads"], kw["norm_groups"], kw["num_classes"])
    copy_params(params, tmodel)
    return fmodel, params, tmodel, (h, w, c)


def _jflow_runner(fmodel, params, batches, seconds):
    step = jt.make_train_step(make_loss(fmodel.apply, LinearScheduler(), time_bins=0))
    key = jax.random.PRNGKey(1)
    box = {"s": jt.create_train_state(params, optax.adam(LR))}
    t0 = time.perf_counter()
    box["s"], _ = step(box["s"], batches[0], key)
    jax.block_until_ready(box["s"])
    first = time.perf_counter() - t0
    flops = xla_flops(step, box["s"], batches[0], key)[0]

    def run(n):
        s = box["s"]
        for i in range(n):
            s, _ = step(s, batches[i % POOL], key)
        box["s"] = jax.block_until_ready(s)

    n = calibrate(run, seconds)
    return Runner("jflow step", "jflow", lambda: run(n), n, "steps/s"), flops, first


def _torch_runner(tmodel, data, labels, seconds):
    tdata = [torch.from_numpy(data[i].transpose(0, 3, 1, 2).copy()) for i in range(POOL)]
    tlabels = [torch.from_numpy(labels[i]).long() for i in range(POOL)]
    opt = torch.optim.Adam(tmodel.parameters(), lr=LR)
    path = AffineProbPath(scheduler=CondOTScheduler())

    def run(n):
        for i in range(n):
            x1 = tdata[i % POOL]
            ps = path.sample(t=torch.rand(x1.shape[0]), x_0=torch.randn_like(x1), x_1=x1)
            loss = (tmodel(ps.x_t, ps.t, tlabels[i % POOL]) - ps.dx_t).pow(2).sum(dim=(1, 2, 3)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    run(1)
    n = calibrate(run, seconds)
    return Runner("PyTorch + flow_matching path", "flow_matching", lambda: run(n), n, "steps/s")


def image_case(label: str, what: str, fmodel, params, tmodel, shape, batch: int, seconds: float) -> Case:
    """The training step of the class-conditional (10 classes) image model ``fmodel`` against its
    torch twin ``tmodel`` (NCHW, weights already copied) on ``batch`` images of ``shape`` (H, W, C).

    Checks that the twins give the same outputs and have the same number of parameters.
    """
    h, w, c = shape
    rng = np.random.default_rng(0)
    xs, ts = rng.standard_normal((2, h, w, c)).astype(np.float32), rng.uniform(size=2).astype(np.float32)
    err = check_same_outputs(jax.jit(fmodel.apply), params, lambda x, t, y: tmodel(x.permute(0, 3, 1, 2), t, y),
                             xs, ts, np.array([3, 10], np.int32), what=label)
    n_params, n_torch = count_params(params), sum(p.numel() for p in tmodel.parameters())
    if n_params != n_torch:
        raise AssertionError(f"{label}: jflow has {n_params:,} parameters, the torch port {n_torch:,}")
    data = rng.standard_normal((POOL, batch, h, w, c)).astype(np.float32)
    labels = rng.integers(0, 10, size=(POOL, batch)).astype(np.int32)
    batches = [{"x": jnp.asarray(data[i]), "y": jnp.asarray(labels[i])} for i in range(POOL)]
    jflow_runner, flops, first = _jflow_runner(fmodel, params, batches, seconds)
    note = (f"{what}, batch {batch}: jflow {n_params:,} parameters, torch port "
            f"{n_torch:,}; outputs agree to {err:.1e}; XLA FLOPs/step {flops / 1e9:.2f} G; jflow first call "
            f"(trace + compile + one step) {first:.2f} s")
    return Case(f"{label}, batch {batch}", [jflow_runner, _torch_runner(tmodel, data, labels, seconds)], flops, [note])


def unet_case(batch: int, seconds: float) -> Case:
    """jflow's U-Net step against its PyTorch port at ``batch`` images per step."""
    fmodel, params, tmodel, shape = _twins()
    return image_case("U-Net 28x28x1", "U-Net (unet_mnist, dropout 0, 10 classes)", fmodel, params, tmodel, shape,
                      batch, seconds)
