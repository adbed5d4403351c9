"""A small training loop: steps (fused or not, one run or vmapped runs), non-finite stop,
logging with throughput on process 0, checkpoints every N steps, and resume with the same
command.

**Exact resume needs the batches as a function of the step.** A checkpoint stores the
state and, as the data position, the step alone; a resumed run asks for the batches of
steps ``n, n + 1, ...`` again. So :func:`fit` takes ``batch_fn(step) -> batch``, a pure
function of the step: a numpy generator shared across calls would hand a resumed run
other batches than the uninterrupted run got. :func:`seeded_batches` turns a sampler
that draws from a numpy ``Generator`` into such a function (a generator seeded by
``(seed, step)``). ``fit`` also accepts an iterable of batches (a Python generator, an
:class:`jflow.data.ImageLoader`), the easy path, with one caveat: ``fit`` can only take
the *next* batches from it, so on resume the iterator must already stand at the resume
step (set its own state, e.g. ``loader.set_state``), else the resumed run sees other
data than the uninterrupted one.

:class:`jflow.data.ImageLoader` is resumable by position; either read it by random
access, as ``experiments/images/`` does (``prefetch=0``)::

    n = loader.batches_per_epoch
    batch_fn = lambda step: loader.batch_at(step // n, step % n)

or, to keep its prefetch thread, move it to the step ``fit`` will resume from and pass
the loader itself::

    start = checkpointer.latest_step() or 0   # the step fit resumes from
    loader.set_state({"epoch": start // n, "index": start % n})
    batch_fn = loader

(correct only if nothing else reads ``loader`` and ``fit`` starts at ``start``, i.e.
``state`` is at step 0 or the checkpoint's step).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import jax
import numpy as np

from jflow._checks import check_positive_int
from jflow.train.checkpoint import Checkpointer
from jflow.train.distributed import is_main_process
from jflow.train.nonfinite import check_finite
from jflow.train.state import TrainState, current_step
from jflow.train.trees import stack_on_host

__all__ = ["fit", "seeded_batches"]

PyTree = Any
BatchFn = Callable[[int], PyTree]
TIMING_KEYS = ("elapsed_s", "steps_per_s")


def seeded_batches(sample: Callable[[np.random.Generator], PyTree], seed: int) -> BatchFn:
    """A step-indexed ``batch_fn`` for :func:`fit` from a sampler that draws from a numpy generator.

    ``batch_fn(step) = sample(numpy.random.default_rng([seed, step]))``: a fresh generator
    per step, seeded by the pair, so the batch of a step is the same whether the run is
    resumed or not (and independent of which steps were drawn before). E.g.
    ``seeded_batches(lambda rng: {"x": rng.standard_normal((256, 2))}, seed=0)``.
    """
    seed = check_positive_int(seed, "seed", minimum=0)
    return lambda step: sample(np.random.default_rng([seed, int(step)]))


def _host_metrics(metrics) -> Dict[str, float]:
    out = {}
    for k, v in jax.device_get(metrics).items():
        out[k] = float(np.mean(np.asarray(v, np.float64)))
    return out


def _print_log(step: int, metrics: Dict[str, float]) -> None:
    values = ", ".join(f"{n}={v:.5g}" for n, v in sorted(metrics.items()) if n not in TIMING_KEYS)
    timing = f" | {metrics['steps_per_s']:.3g} steps/s, {metrics['elapsed_s']:.1f} s" if "elapsed_s" in metrics else ""
    print(f"step {step}: {values}{timing}", flush=True)


def _batch_source(batch_fn, k: int) -> BatchFn:
    """``get(step)``: the batch of update ``step``, or the ``k`` batches from ``step`` stacked."""
    if isinstance(batch_fn, Mapping) or not (callable(batch_fn) or isinstance(batch_fn, Iterable)):
        raise ValueError(
            "batch_fn must be a function batch_fn(step) -> batch or an iterable of batches; got "
            f"{type(batch_fn).__name__} (for one fixed batch pass lambda step: batch)"
        )
    if callable(batch_fn):
        one = batch_fn
    else:
        iterator = iter(batch_fn)

        def one(step):
            try:
                return next(iterator)
            except StopIteration:
                raise ValueError(f"the iterable of batches ran out at step {step}, before num_steps") from None

    if k == 1:
        return one
    return lambda step: stack_on_host([one(s) for s in range(step, step + k)])


class _Clock:
    """Wall time since ``fit`` began and updates per second since the previous log."""

    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.last_step = 0  # set to the step training starts at

    def tick(self, step: int) -> Dict[str, float]:
        now = time.perf_counter()
        rate = (step - self.last_step) / (now - self.last)
        self.last, self.last_step = now, step
        return {"elapsed_s": now - self.start, "steps_per_s": rate}


def _check_counts(k: int, num_steps, save_every, log_every, checkpointer) -> None:
    check_positive_int(num_steps, "num_steps", minimum=0)
    for name, value in (("num_steps", num_steps), ("save_every", save_every), ("log_every", log_every)):
        if value is not None and name != "num_steps":
            check_positive_int(value, name)
        if value is not None and value % k:
            raise ValueError(f"{name}={value} must be a multiple of steps_per_call={k}")
    if save_every is not None and checkpointer is None:
        raise ValueError("save_every needs a checkpointer")


def _start(state: TrainState, checkpointer, config, num_steps: int, k: int) -> Tuple[TrainState, int]:
    """The state and step training starts from: the latest checkpoint's if there is one."""
    step = current_step(state)
    if checkpointer is not None and checkpointer.latest_step() is not None:
        state, data_state, _ = checkpointer.restore(state, config=config)
        step = int(data_state.get("step", current_step(state)))
    if step > num_steps:
        raise ValueError(f"the run is already at step {step} > num_steps={num_steps}")
    if step % k:
        raise ValueError(f"the run is at step {step}, not a multiple of steps_per_call={k}")
    return state, step


def fit(
    step_fn: Callable,
    state: TrainState,
    batch_fn: Union[BatchFn, Iterable[PyTree]],
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
      batch_fn: **a pure function of the step** (see the module docstring for why):
        ``batch_fn(step) -> batch`` for update ``step`` (0-based), called once per update,
        in order, from the step the run starts (or resumes) at; it must return the batch
        of that step whatever happened before, so that a resumed run sees exactly the
        batches of the uninterrupted run. Draw random batches with a generator seeded by
        the step (:func:`seeded_batches`), not with one shared generator. Or an iterable
        of batches, taken in order (resume then needs the iterator at the resume step).
        The module docstring shows both ways of reading a :class:`jflow.data.ImageLoader`.
      key: the run's key (the step folds in ``state.step``).
      num_steps: total number of updates of the run (not of this call).
      steps_per_call: ``k`` for a fused step; ``num_steps``, ``save_every`` and
        ``log_every`` must be multiples of ``k``.
      checkpointer: saves every ``save_every`` steps and at the end (data position
        ``{"step": n}`` and ``config``); if it already holds a checkpoint, the run resumes
        from the latest one (its config must equal ``config``).
      log_every: call ``log_fn(step, metrics)`` every this many steps, on process 0 only,
        with metrics averaged over the fused steps (and the runs of a vmapped step) plus
        ``elapsed_s`` (wall seconds since this call of ``fit`` began, restoring and
        compiling included) and ``steps_per_s`` (updates per wall second since the
        previous log; the first includes the compilation). The default ``log_fn`` prints
        ``step n: loss=..., ... | 123 steps/s, 4.5 s``.
      prepare_batch: applied to each (stacked) batch before the step, e.g.
        ``lambda b: shard_batch(b, mesh)`` for a sharded step.

    Returns ``(state, history)`` with ``history`` the logged ``(step, metrics)`` pairs
    (metrics with ``elapsed_s`` and ``steps_per_s``, as given to ``log_fn``).
    Raises :class:`NonFiniteError` naming the step when a loss or gradient is not finite
    (unless the step skips such updates); no checkpoint is written after it.
    """
    clock = _Clock()
    k = check_positive_int(steps_per_call, "steps_per_call")
    _check_counts(k, num_steps, save_every, log_every, checkpointer)
    next_batch = _batch_source(batch_fn, k)
    log_fn = _print_log if log_fn is None else log_fn
    prepare = prepare_batch or (lambda b: b)

    state, step = _start(state, checkpointer, config, num_steps, k)
    clock.last_step = step

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
            state, metrics = step_fn(state, prepare(next_batch(step)), key)
            check_pending()
            unchecked.append((metrics, step))
            step += k
            if log_every is not None and step % log_every == 0:
                check_pending()
                logged = dict(_host_metrics(metrics), **clock.tick(step))
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
