"""What one quality run is: the task's budget, the library, the swaps, and the data every library shares.

A *run name* is a library, optionally followed by swaps joined with ``+``:
``jflow``, ``flow_matching``, ``torchcfm``, ``jflow+lecun_normal``, ``flow_matching+lecun_normal``,
``jflow+adamw_1e-2+ema``. Each swap changes one setting of :class:`RunSpec` (see
:data:`SWAPS`); everything else stays the budget of the PyTorch example: a plain 4 x 256
SiLU MLP with ``t`` concatenated to ``x``, PyTorch's default initialisation, Adam 1e-3,
batch 1024, 3000 steps, uniform ``t``, no EMA, float32, Euler 100 steps from N(0, I).

Data (:func:`train_batches`, :func:`held_out`, :func:`initial_noise`) are numpy arrays from
fixed seeds, so every library trains on the same batches and is scored on the same
held-out set, from the same initial noise; each library draws its own ``t`` and ``eps``.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from benchmarks.quality.toy_sets import TOY_SETS

LIBRARIES = ("jflow", "flow_matching", "torchcfm")
HELD_OUT_SEED = 20_240_614
N_EVAL = 2000


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One library's training and sampling settings on one toy set (seeds are given apart)."""

    library: str
    toy_set: str
    steps: int = 3000
    batch: int = 1024
    width: int = 256
    depth: int = 4
    learning_rate: float = 1e-3
    initializer: str = "torch"  # "torch" | "lecun_normal" (jflow.models.dense_init) | "torch_shared" (see SWAPS)
    model: str = "plain"  # "plain" (PlainMLP) | "film" (jflow's residual MLP, width 144, depth 2)
    optimizer: str = "adam"  # "adam" | "adamw"
    weight_decay: float = 0.0
    eps: float = 1e-8
    time_sampling: str = "uniform"  # jflow.losses.sample_time methods (jflow only)
    ema_decay: float = 0.0  # 0: no EMA; else sample with the EMA parameters (jflow only)
    dtype: str = "float32"  # "float64": jflow with JAX_ENABLE_X64=1
    euler_steps: int = 100

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunSpec":
        return cls(**json.loads(text))


# one controlled change each; "jflow only" swaps name options that only jflow's runner reads
SWAPS = {
    "lecun_normal": dict(initializer="lecun_normal"),
    # PyTorch's initialisation law drawn by jflow (same key as the jflow run of the seed) and copied
    # into the PyTorch net: a seed's runs then share their initial weights as well as their data
    "shared_init": dict(initializer="torch_shared"),
    "adamw_1e-2": dict(optimizer="adamw", weight_decay=1e-2),  # torch.optim.AdamW's default decay
    "adamw_1e-4": dict(optimizer="adamw", weight_decay=1e-4),  # optax.adamw's default decay
    "eps_1e-6": dict(eps=1e-6),
    "stratified_t": dict(time_sampling="stratified"),
    "logit_normal_t": dict(time_sampling="logit_normal"),
    "ema": dict(ema_decay=0.999),
    "float64": dict(dtype="float64"),
    "film": dict(model="film"),
}
JFLOW_ONLY = {"time_sampling", "ema_decay", "dtype", "model"}


def parse_run(name: str, toy_set: str, **budget) -> RunSpec:
    """The :class:`RunSpec` of run name ``library[+swap...]`` on ``toy_set``; ``ValueError`` for unknown names."""
    library, *swaps = name.split("+")
    if library not in LIBRARIES:
        raise ValueError(f"run {name!r}: unknown library {library!r}; choose one of {list(LIBRARIES)}")
    if toy_set not in TOY_SETS:
        raise ValueError(f"unknown toy set {toy_set!r}; choose one of {sorted(TOY_SETS)}")
    changes = {}
    for swap in swaps:
        if swap not in SWAPS:
            raise ValueError(f"run {name!r}: unknown swap {swap!r}; choose from {sorted(SWAPS)}")
        if library != "jflow" and JFLOW_ONLY & set(SWAPS[swap]):
            raise ValueError(f"run {name!r}: swap {swap!r} is implemented for jflow only")
        changes.update(SWAPS[swap])
    return RunSpec(library=library, toy_set=toy_set, **budget, **changes)


def train_batches(toy_set: str, seed: int, steps: int, batch: int) -> np.ndarray:
    """``(steps, batch, 2)`` float32 training batches of run ``seed``: one generator call per step,
    as the examples draw them (torchdyn's moons place each batch's points evenly)."""
    rng = np.random.default_rng([seed, 1])
    gen = TOY_SETS[toy_set]
    return np.stack([gen(rng, batch) for _ in range(steps)])


def held_out(toy_set: str, n: int = N_EVAL) -> np.ndarray:
    """The held-out set every run is scored against: one generator call, fixed seed."""
    return TOY_SETS[toy_set](np.random.default_rng(HELD_OUT_SEED), n)


def fresh_sample(toy_set: str, seed: int, n: int = N_EVAL) -> np.ndarray:
    """Another sample of the data, for the data-vs-data reference row (the metrics' floor)."""
    return TOY_SETS[toy_set](np.random.default_rng([seed, 3]), n)


def initial_noise(seed: int, n: int = N_EVAL) -> np.ndarray:
    """``(n, 2)`` float32 draws from N(0, I): the ODE's starting points for run ``seed``, in every library."""
    return np.random.default_rng([seed, 2]).standard_normal((n, 2)).astype(np.float32)


def jflow_initializer(spec: RunSpec) -> str:
    """The ``PlainMLP`` initializer that draws ``spec``'s initial weights (``torch_shared`` is ``torch``)."""
    return "torch" if spec.initializer == "torch_shared" else spec.initializer
