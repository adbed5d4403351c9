"""Checkpoints with orbax-checkpoint: train state (+ EMA), data position and config.

A checkpoint directory holds one sub-directory per saved step (``<dir>/<step>/``) with
four items: ``state`` (the arrays of the :class:`~jflow.train.TrainState`: step,
params, optimizer state, EMA params, non-finite counter), ``data`` (a small JSON dict,
the position in the data stream), ``config`` (the run's JSON config) and ``checksums``
(a CRC-32 per array, compared after every restore: orbax itself would restore damaged
array bytes as other numbers without an error; single-process saves only).

Atomicity: orbax writes a step into a temporary directory and renames it to
``<dir>/<step>`` only when every item is complete, so a save interrupted by a crash is
never listed nor restored; the previous step is. Non-finite states are refused by
:meth:`Checkpointer.save`, so a diverged run never replaces the last good checkpoint.

Restoring needs a *template* state (e.g. ``create_train_state(model.init(...), tx)``,
or one made of ``jax.ShapeDtypeStruct`` leaves): it fixes the tree structure, shapes,
dtypes and, through the leaves' shardings (or the ``sharding`` argument), where the
restored arrays live, so a checkpoint written on 8 devices restores onto 1 or 2.
Restored leaves are placed like the template's: a leaf with a sharding (a committed
array, or a ``ShapeDtypeStruct`` with ``sharding=``) comes back committed to that
sharding; an uncommitted array (what ``jnp`` and an un-sharded ``jit`` return), a numpy
array or a ``ShapeDtypeStruct`` without sharding comes back as an uncommitted array on the
default device (single process). ``jit`` keys its cache on placement, so a step compiled
before the save is reused after the restore, without retracing (the template's static
fields are part of the tree structure: give it the same optimizer object, as
:func:`jflow.train.fit` does by restoring into the state it was given).
A state of ``R`` vmapped runs (``step`` of shape ``(R,)``, all equal) is saved at that
common step (:func:`jflow.train.current_step`).
Multi-host: every process creates the :class:`Checkpointer` and calls ``save`` and
``restore`` (orbax coordinates them; JSON items are written by process 0); there an
uncommitted template leaf comes back replicated over all devices (a global array), so
pass a template placed like the step's inputs (e.g. :func:`jflow.train.put_replicated`).
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jflow._checks import check_positive_int
from jflow.train.checkpoint_checks import (
    CheckpointCorruptedError,
    CheckpointError,
    CheckpointIncompatibleError,
    check_checksums,
    check_matches,
    checksums,
    corrupted,
    read_all_arrays,
)
from jflow.train.nonfinite import NonFiniteError, all_finite
from jflow.train.state import TrainState, current_step, state_arrays

__all__ = [
    "CheckpointError",
    "CheckpointCorruptedError",
    "CheckpointIncompatibleError",
    "Checkpointer",
]

PyTree = Any


def _json_roundtrip(obj, what: str):
    try:
        return json.loads(json.dumps(obj))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be JSON-serialisable (dicts, lists, str, numbers): {e}") from e


def _default_sharding():
    if jax.process_count() == 1:
        return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return NamedSharding(Mesh(np.asarray(jax.devices()), ("all",)), P())


def _uncommitted_if(x: jax.Array, flag: bool) -> jax.Array:
    """``x`` as an uncommitted array on the default device (a host round trip) if ``flag``."""
    if not flag:
        return x
    value = np.asarray(jax.device_get(x))
    x.delete()
    return jnp.asarray(value)


class Checkpointer:
    """Save every N steps / keep the last K / restore the latest, on top of orbax's
    ``CheckpointManager``.

    Args:
      directory: where the step directories live (created if missing); relative paths
        are made absolute.
      max_to_keep: keep this many most recent checkpoints (``None``: all).
      async_save: write in a background thread (``save`` returns once the arrays are
        copied off the devices); :meth:`wait` / :meth:`close` block until written.
      verify: before restoring, read every array of the step once without an event
        loop (:func:`jflow.train.checkpoint_checks.read_all_arrays`), so that a damaged
        file raises one :class:`CheckpointCorruptedError` instead of orbax's error plus
        a flood of "Event loop is closed" tracebacks on stderr; after restoring, compare
        every array with the CRC-32 saved with it (damaged bytes that still decode raise
        :class:`CheckpointCorruptedError` instead of restoring as other numbers). Costs one
        extra read of the checkpoint and one CRC pass; ``False`` leaves damaged files to orbax.

    Use as a context manager, or call :meth:`close` when done.
    """

    def __init__(
        self, directory, *, max_to_keep: Optional[int] = 3, async_save: bool = True, verify: bool = True,
    ):
        if max_to_keep is not None:
            check_positive_int(max_to_keep, "max_to_keep", why="or None to keep every checkpoint")
        self.directory = os.path.abspath(os.fspath(directory))
        self.verify = bool(verify)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "data": ocp.JsonCheckpointHandler(),
                "config": ocp.JsonCheckpointHandler(),
                "checksums": ocp.JsonCheckpointHandler(),
            },
        )

    # -- bookkeeping -------------------------------------------------------------------
    def all_steps(self) -> list:
        """Completed checkpoint steps, ascending (interrupted saves are not listed)."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> Optional[int]:
        """The most recent completed step, or ``None`` for an empty directory."""
        return self._manager.latest_step()

    def step_path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- save / restore ----------------------------------------------------------------
    def save(self, state: TrainState, *, data_state: Optional[dict] = None, config: Optional[dict] = None) -> bool:
        """Save ``state`` at step :func:`~jflow.train.current_step` with the data position and config.

        Returns ``False`` (and writes nothing) if that step is already saved. Raises
        :class:`~jflow.train.NonFiniteError` if the parameters, optimizer state or EMA hold
        NaN/inf, so a diverged state never replaces a good checkpoint.
        """
        if not isinstance(state, TrainState):
            raise ValueError(f"state must be a TrainState; got {type(state).__name__}")
        step = current_step(state)
        data_state = _json_roundtrip({} if data_state is None else data_state, "data_state")
        config = _json_roundtrip({} if config is None else config, "config")
        if step in self._manager.all_steps():
            return False
        arrays = state_arrays(state)
        if not bool(all_finite(arrays)):
            raise NonFiniteError(
                f"refusing to save the state of step {step} to {self.directory}: it holds NaN or "
                f"inf values; the last good checkpoint (step {self.latest_step()}) is kept"
            )
        items = dict(
            state=ocp.args.StandardSave(arrays),
            data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(config),
        )
        sums = checksums(arrays)
        if sums is not None:
            items["checksums"] = ocp.args.JsonSave(sums)
        return bool(self._manager.save(step, args=ocp.args.Composite(**items), force=True))

    def _abstract_target(self, template: TrainState, sharding) -> Tuple[dict, list]:
        """``(target, uncommit)``: orbax's restore target (shape, dtype, sharding per leaf)
        and, per leaf in flattening order, whether to make the restored array uncommitted."""

        def placement(x):
            if sharding is not None:
                return sharding, False
            if isinstance(x, jax.Array):
                if x.committed:
                    return x.sharding, False
            elif getattr(x, "sharding", None) is not None:  # ShapeDtypeStruct with a sharding
                return x.sharding, False
            # uncommitted: read onto the default placement; on a single process make the
            # result uncommitted again (several processes need a global, committed array)
            return _default_sharding(), jax.process_count() == 1

        leaves, treedef = jax.tree.flatten(state_arrays(template))
        places = [placement(x) for x in leaves]
        target = treedef.unflatten([
            jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x), sharding=s)
            for x, (s, _) in zip(leaves, places)
        ])
        return target, [flag for _, flag in places]

    def _check_compatible(self, step: int, target: dict) -> None:
        path = self.step_path(step)
        try:
            if self.verify:
                read_all_arrays(os.path.join(path, "state"))
            meta = self._manager.item_metadata(step)["state"]
        except Exception as e:  # orbax/tensorstore raise many types for damaged files
            raise self._corrupted(step, e) from e
        if meta is None:
            raise self._corrupted(step, "no state metadata")
        check_matches(getattr(meta, "tree", meta), target, path)

    def _corrupted(self, step: int, err) -> CheckpointCorruptedError:
        return corrupted(self.step_path(step), err, [s for s in self.all_steps() if s != step])

    def _completed_step(self, step: Optional[int]) -> int:
        """``step`` if it is a completed checkpoint, the latest one for ``None``; else :class:`CheckpointError`."""
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise CheckpointError(f"no checkpoint in {self.directory}; nothing to restore")
            return steps[-1]
        if step not in steps:
            raise CheckpointError(
                f"no completed checkpoint for step {step} in {self.directory}; available: {steps}"
            )
        return step

    def restore(
        self,
        template: TrainState,
        *,
        step: Optional[int] = None,
        config: Optional[dict] = None,
        sharding: Optional[jax.sharding.Sharding] = None,
    ) -> Tuple[TrainState, dict, dict]:
        """Restore ``(state, data_state, config)`` from ``step`` (default: the latest).

        Args:
          template: a :class:`TrainState` with the same structure. Its arrays or
            ``ShapeDtypeStruct`` leaves give shapes, dtypes and, by default, placement:
            a restored leaf is committed to the template leaf's sharding, or uncommitted
            where the template leaf is (see the module docstring), so a jitted step
            compiled for the template is reused. Its static fields (optimizer, EMA
            decay) are kept.
          step: which step (``None``: the latest completed one).
          config: if given, must equal the saved config, else
            :class:`CheckpointIncompatibleError` (guards against resuming another run).
          sharding: place every restored array with this sharding (e.g.
            ``NamedSharding(mesh, P())`` to restore onto another number of devices).

        Raises:
          CheckpointError: no checkpoint, or (subclasses) a damaged or incompatible one.
        """
        if not isinstance(template, TrainState):
            raise ValueError(f"template must be a TrainState; got {type(template).__name__}")
        step = self._completed_step(step)
        target, uncommit = self._abstract_target(template, sharding)
        self._check_compatible(step, target)
        path = self.step_path(step)
        items = dict(state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore(), config=ocp.args.JsonRestore())
        summed = self.verify and os.path.isdir(os.path.join(path, "checksums"))  # older checkpoints have none
        if summed:
            items["checksums"] = ocp.args.JsonRestore()
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(**items))
            if summed:
                check_checksums(out["state"], out["checksums"] or {})
        except Exception as e:  # damaged array files surface as tensorstore/orbax errors
            raise self._corrupted(step, e) from e
        saved_config = out["config"] if out["config"] is not None else {}
        if config is not None and _json_roundtrip(config, "config") != saved_config:
            raise CheckpointIncompatibleError(
                f"checkpoint {path} was written with a different config: saved {saved_config}, "
                f"asked {config}. Resume with the same config, or use a new checkpoint directory."
            )
        # orbax may give plain tuples for the template's named tuples (optax states):
        # rebuild the template's tree structure, or jit would retrace for the new treedef
        restored = jax.tree.leaves(out["state"])
        if len(restored) != len(uncommit):
            raise CheckpointIncompatibleError(
                f"checkpoint {path} restored {len(restored)} arrays, the template state has "
                f"{len(uncommit)}; restore it with the configuration that wrote it"
            )
        arrays = jax.tree.unflatten(
            jax.tree.structure(target), [_uncommitted_if(x, f) for x, f in zip(restored, uncommit)]
        )
        state = template.replace(**arrays)
        return state, (out["data"] if out["data"] is not None else {}), saved_config
