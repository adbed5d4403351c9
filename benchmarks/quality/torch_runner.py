"""The PyTorch peers' side of the quality comparison: flow_matching and torchcfm as their 2-D examples use them.

The network is the examples' ``MLP``: ``cat([x, t]) -> (Linear(256) -> SiLU) x 4 -> Linear(2)``.
Its weights are PyTorch's default initialisation from ``torch.manual_seed(seed)``, or, with
``initializer="lecun_normal"`` or ``"torch_shared"`` (PyTorch's law drawn by jflow), the very
weights jflow's ``PlainMLP`` starts from for the same seed (copied). One loop per library, as in its example:

- flow_matching: ``AffineProbPath(CondOTScheduler()).sample(t=t, x_0=x_0, x_1=x_1)``, loss
  ``(v(x_t, t) - dx_t)^2`` averaged over all elements, ``ODESolver.sample(step_size=1/n,
  method="euler")``;
- torchcfm: ``ConditionalFlowMatcher(sigma=0).sample_location_and_conditional_flow(x_0, x_1)``
  (``sigma = 0`` is the CondOT path of the other two), the same loss, and
  ``torchdiffeq.odeint(..., method="euler")`` on an ``n + 1``-point grid, as its examples
  sample without torchdyn.

torch is imported inside the functions, so ``benchmarks`` imports without the ``bench`` extra.
"""
from __future__ import annotations

import time

import numpy as np

from benchmarks.quality.spec import RunSpec, initial_noise, jflow_initializer, train_batches


def _network(spec: RunSpec, seed: int):
    import torch

    torch.manual_seed(seed)
    sizes = [3] + [spec.width] * spec.depth
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.SiLU()]
    net = torch.nn.Sequential(*layers, torch.nn.Linear(spec.width, 2))
    if spec.initializer != "torch":
        _copy_jflow_init(spec, seed, net)
    return net


def _copy_jflow_init(spec: RunSpec, seed: int, net) -> None:
    """Load the parameters jflow's runner initialises for ``seed`` (same model, same key) into ``net``."""
    import jax
    import jax.numpy as jnp
    import torch

    from jflow.models import PlainMLP

    model = PlainMLP(width=spec.width, depth=spec.depth, initializer=jflow_initializer(spec))
    key_init = jax.random.split(jax.random.PRNGKey(seed))[0]
    params = model.init(key_init, jnp.zeros((2, 2)), jnp.zeros((2,)))["params"]
    names = [f"hidden_{i}" for i in range(spec.depth)] + ["output"]
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for name, linear in zip(names, linears):
            linear.weight.copy_(torch.from_numpy(np.asarray(params[name]["kernel"]).T.copy()))
            linear.bias.copy_(torch.from_numpy(np.asarray(params[name]["bias"])))


def _optimizer(spec: RunSpec, net):
    import torch

    if spec.optimizer == "adamw":
        return torch.optim.AdamW(net.parameters(), lr=spec.learning_rate, eps=spec.eps, weight_decay=spec.weight_decay)
    return torch.optim.Adam(net.parameters(), lr=spec.learning_rate, eps=spec.eps)


def _path_sampler(library: str):
    """``(x_0, x_1) -> (t, x_t, target)`` of the library."""
    import torch

    if library == "flow_matching":
        from flow_matching.path import AffineProbPath
        from flow_matching.path.scheduler import CondOTScheduler

        path = AffineProbPath(scheduler=CondOTScheduler())

        def sample(x0, x1):
            ps = path.sample(t=torch.rand(x1.shape[0]), x_0=x0, x_1=x1)
            return ps.t, ps.x_t, ps.dx_t

        return sample
    from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

    return ConditionalFlowMatcher(sigma=0.0).sample_location_and_conditional_flow


def _field(net):
    import torch

    return lambda x, t: net(torch.cat([x, t.reshape(-1, 1).to(x.dtype).expand(x.shape[0], 1)], dim=1))


def _sample(library: str, net, x0, steps: int):
    import torch

    field = _field(net)
    with torch.no_grad():
        if library == "flow_matching":
            from flow_matching.solver import ODESolver
            from flow_matching.utils import ModelWrapper

            class Wrapped(ModelWrapper):
                def forward(self, x, t, **extras):
                    return field(x, t)

            return ODESolver(velocity_model=Wrapped(net)).sample(x_init=x0, step_size=1.0 / steps, method="euler")
        import torchdiffeq

        return torchdiffeq.odeint(lambda t, x: field(x, t), x0, torch.linspace(0.0, 1.0, steps + 1), method="euler")[-1]


def run_seeds(spec: RunSpec, seeds, threads: int = 1) -> list[dict]:
    """Train and sample once per seed; ``[{"seed", "seconds", "samples"}]`` (samples float32 numpy)."""
    import torch

    torch.set_num_threads(threads)
    path_sample = _path_sampler(spec.library)
    out = []
    for seed in seeds:
        data = torch.from_numpy(train_batches(spec.toy_set, seed, spec.steps, spec.batch))
        net = _network(spec, seed)
        field, opt = _field(net), _optimizer(spec, net)
        t0 = time.perf_counter()
        for x1 in data:
            t, xt, target = path_sample(torch.randn_like(x1), x1)
            loss = (field(xt, t) - target).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - t0
        samples = _sample(spec.library, net, torch.from_numpy(initial_noise(seed)), spec.euler_steps)
        out.append(dict(seed=seed, seconds=seconds, samples=samples.numpy().astype(np.float32)))
    return out
