"""A small training loop: steps (fused or not, one run or vmapped runs), non-finite stop,
logging on process 0, checkpoints every N steps, and resume with the same command."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import numpy as np

from jflow.train.checkpoint import Checkpointer
from jflow.train.distributed import is_main_process
from jflow.train.state import TrainState, current_step
from jflow.train.steps import check_finite

__all__ = ["fit"]

PyTree = Any


def _stack(batches):
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *batches)


def _host_metrics(metrics) -> Dict[str, float]:
    out = {}
    for k, v in jax.device_get(metrics).items():
        out[k] = float(np.mean(np.asarray(v, np.float64)))
    return out


def fit(
    step_fn: Callable,
    state: TrainState,
    batch_fn: Callable[[int], PyTree],
    key: jax.Array,
    *,
    num_steps: int,
    steps_per_call: int = 1,
    checkpointer: Optional[Checkpointer] = None,
    save_every: Optional[int] = None,
    config: Optional[dict] = None,
    log_every: Optional[int] = None,
    log_fn: Optional[Callable[[int, Dict[str, float]], None]] = None,
    prepare_batch: Optional[Callable[[PyTree], PyTree]] = None,
) -> Tuple[TrainState, List[Tuple[int, Dict[str, float]]]]:
    """Train until ``state.step == num_steps``; resume from ``checkpointer`` if it holds a run.

    Args:
      step_fn: from :func:`make_train_step` (``steps_per_call=1``) or
        :func:`make_fused_train_step` / ``make_sharded_train_step(fused=True)``
        (``steps_per_call=k``); called as ``step_fn(state, batch, key)``. For ``R``
        runs trained together: :func:`make_vmapped_train_step` (``fused=True`` with
        ``steps_per_call=k``), with ``state`` the vmapped state, ``key`` the ``(R, 2)``
        keys, and per-run hyper-parameters bound first (``lambda s, b, k: step(s, b,
        k, hparams)``; not needed for a seed-only grid).
      state: the initial state (also the restore template when resuming: restored
        arrays are placed like its leaves, so a step already compiled for ``state`` is
        not recompiled). A vmapped state (``step`` of shape ``(R,)``) counts as one
        run at its common step (:func:`current_step`; ``ValueError`` if the entries
        differ).
      batch_fn: ``batch_fn(step) -> batch`` for update ``step`` (0-based), called once
        per update, in order, from the step the run starts (or resumes) at. It must
        return the batch of that step whatever happened before: checkpoints save the
        data position as the step alone, so a resumed run then sees exactly the batches
        of the uninterrupted run. A stateful loader is indexed by the step, not just
        iterated. :class:`jflow.data.ImageLoader` is resumable by position; either read
        it by random access, as ``experiments/images/`` does (``prefetch=0``)::

            n = loader.batches_per_epoch
            batch_fn = lambda step: loader.batch_at(step // n, step % n)

        or, to keep its prefetch thread, move it to the step ``fit`` will resume from
        and let ``batch_fn`` take the next batch::

            start = checkpointer.latest_step() or 0   # the step fit resumes from
            loader.set_state({"epoch": start // n, "index": start % n})
            batch_fn = lambda step: next(loader)

        (correct only if nothing else reads ``loader`` and ``fit`` starts at ``start``,
        i.e. ``state`` is at step 0 or the checkpoint's step).
      key: the run's key (the step folds in ``state.step``).
      num_steps: total number of updates of the run (not of this call).
      steps_per_call: ``k`` for a fused step; ``num_steps``, ``save_every`` and
        ``log_every`` must be multiples of ``k``.
      checkpointer: saves every ``save_every`` steps and at the end (data position
        ``{"step": n}`` and ``config``); if it already holds a checkpoint, the run resumes
        from the latest one (its config must equal ``config``).
      log_every: call ``log_fn(step, metrics)`` (default: ``print``) every this many steps,
        on process 0 only, with metrics averaged over the fused steps (and the runs of a
        vmapped step).
      prepare_batch: applied to each (stacked) batch before the step, e.g.
        ``lambda b: shard_batch(b, mesh)`` for a sharded step.

    Returns ``(state, history)`` with ``history`` the logged ``(step, metrics)`` pairs.
    Raises :class:`NonFiniteError` naming the step when a loss or gradient is not finite
    (unless the step skips such updates); no checkpoint is written after it.
    """
    k = int(steps_per_call)
    if k < 1:
        raise ValueError(f"steps_per_call must be >= 1; got {steps_per_call}")
    for name, value in (("num_steps", num_steps), ("save_every", save_every), ("log_every", log_every)):
        if value is not None and (value < 1 if name != "num_steps" else value < 0):
            raise ValueError(f"{name} must be positive; got {value}")
        if value is not None and value % k:
            raise ValueError(f"{name}={value} must be a multiple of steps_per_call={k}")
    if save_every is not None and checkpointer is None:
        raise ValueError("save_every needs a checkpointer")
    if log_fn is None:
        log_fn = lambda step, m: print(  # noqa: E731
            f"step {step}: " + ", ".join(f"{n}={v:.5g}" for n, v in sorted(m.items())), flush=True
        )
    prepare = prepare_batch or (lambda b: b)

    step = current_step(state)
    if checkpointer is not None and checkpointer.latest_step() is not None:
        state, data_state, _ = checkpointer.restore(state, config=config)
        step = int(data_state.get("step", current_step(state)))
    if step > num_steps:
        raise ValueError(f"the run is already at step {step} > num_steps={num_steps}")
    if step % k:
        raise ValueError(f"the run is at step {step}, not a multiple of steps_per_call={k}")

    history: List[Tuple[int, Dict[str, float]]] = []
    # The finiteness check of a call reads its metrics on the host, which waits for the call.
    # It is made after the next call is dispatched (the host prepares the next batch while the
    # device computes), and before anything reads the state: a log line or a checkpoint.
    unchecked: List[Tuple[Any, int]] = []

    def check_pending():
        while unchecked:
            check_finite(*unchecked.pop(), steps_per_call=k)

    try:
        while step < num_steps:
            if k == 1:
                batch = batch_fn(step)
            else:
                batch = _stack([batch_fn(s) for s in range(step, step + k)])
            state, metrics = step_fn(state, prepare(batch), key)
            check_pending()
            unchecked.append((metrics, step))
            step += k
            if log_every is not None and step % log_every == 0:
                check_pending()
                logged = _host_metrics(metrics)
                history.append((step, logged))
                if is_main_process():
                    log_fn(step, logged)
            if checkpointer is not None and (
                (save_every is not None and step % save_every == 0) or step == num_steps
            ):
                check_pending()
                checkpointer.save(state, data_state={"step": step}, config=config)
        check_pending()
    finally:
        if checkpointer is not None:
            checkpointer.wait()
    return state, history
