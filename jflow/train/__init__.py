"""Training machinery: state, an update composed with transforms (jit, fused, vmapped,
sharded, pmap), EMA, optimizers, orbax checkpoints with exact resume, multi-host launch.

A minimal run::

    state = create_train_state(model.init(k, x, t), make_optimizer(1e-3), ema_decay=0.999)
    step = make_train_step(make_loss(model.apply, sched))
    state, history = fit(step, state, batch_fn, key, num_steps=1000,
                         checkpointer=Checkpointer("ckpt"), save_every=100)

Re-running the same command resumes from the latest checkpoint and ends with the same
parameters as an uninterrupted run, without recompiling the step. ``R`` runs (seeds or a
hyper-parameter grid) train as one vmapped state with the same loop::

    states = jax.vmap(lambda p: create_train_state(p, tx))(stacked_params)
    step = make_vmapped_train_step(lambda _: loss_fn, fused=True)
    states, _ = fit(step, states, batch_fn, jax.random.split(key, R), num_steps=1000,
                    steps_per_call=10, checkpointer=Checkpointer("ckpt"), save_every=100)

Every ``make_*_train_step`` is a composition of :func:`make_update_fn` (the pure update,
where the step options live) with the transforms :func:`jit_step`, :func:`fuse`,
:func:`vmap_runs`, :func:`shard_step` and :func:`pmap_step`; compose them directly for
other combinations, e.g. ``jit_step(fuse(make_update_fn(loss_fn)), donate=False)``.
"""
from jflow.train.checkpoint import (
    CheckpointCorruptedError,
    CheckpointError,
    Checkpointer,
    CheckpointIncompatibleError,
)
from jflow.train.distributed import (
    cluster_detected,
    initialize_distributed,
    is_main_process,
    process_batch_slice,
)
from jflow.train.ema import ema_decay_at, ema_update
from jflow.train.loop import fit, seeded_batches
from jflow.train.nonfinite import NonFiniteError, check_finite
from jflow.train.optim import make_lr_schedule, make_optimizer
from jflow.train.parallel import (
    batch_sharding,
    make_mesh,
    put_replicated,
    replicated_sharding,
    shard_batch,
)
from jflow.train.state import TrainState, create_train_state, current_step, state_arrays
from jflow.train.steps import (
    make_fused_train_step,
    make_pmap_train_step,
    make_sharded_train_step,
    make_train_step,
    make_vmapped_train_step,
)
from jflow.train.transforms import fuse, jit_step, pmap_step, shard_step, vmap_runs
from jflow.train.trees import replicate, split_batch, stack_trees, unreplicate, unstack_tree
from jflow.train.update import UpdateOptions, make_update_fn

__all__ = [
    "TrainState",
    "create_train_state",
    "current_step",
    "state_arrays",
    "make_optimizer",
    "make_lr_schedule",
    "ema_decay_at",
    "ema_update",
    "make_update_fn",
    "UpdateOptions",
    "jit_step",
    "fuse",
    "vmap_runs",
    "shard_step",
    "pmap_step",
    "make_train_step",
    "make_fused_train_step",
    "make_vmapped_train_step",
    "check_finite",
    "NonFiniteError",
    "make_mesh",
    "replicated_sharding",
    "batch_sharding",
    "put_replicated",
    "shard_batch",
    "make_sharded_train_step",
    "make_pmap_train_step",
    "replicate",
    "unreplicate",
    "split_batch",
    "stack_trees",
    "unstack_tree",
    "Checkpointer",
    "CheckpointError",
    "CheckpointCorruptedError",
    "CheckpointIncompatibleError",
    "fit",
    "seeded_batches",
    "initialize_distributed",
    "is_main_process",
    "process_batch_slice",
    "cluster_detected",
]
