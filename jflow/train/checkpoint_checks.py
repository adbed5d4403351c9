"""Checks of a saved checkpoint before orbax restores it, and the errors they raise: are its
arrays readable (:func:`read_all_arrays`), do they match the template state
(:func:`check_matches`).

Why read the arrays first: orbax restores on a private asyncio event loop, many
tensorstore reads at once. When one read fails on a damaged file, orbax closes that loop
while the other reads are still in flight; as they finish, tensorstore hands their
results to the closed loop, and each hand-over prints a "RuntimeError: Event loop is
closed" traceback to stderr (up to hundreds of lines, after the real error has already
been raised). :func:`read_all_arrays` reads every array of the item with tensorstore's
own futures, waited for on the calling thread (no event loop), so a damaged file becomes
one exception with nothing left in flight; orbax then reads intact files. The price is
one extra read of the checkpoint (about half the restore time).
"""
from __future__ import annotations

import os
import zlib
from typing import List, Optional

import jax
import numpy as np
import tensorstore as ts

__all__ = [
    "CheckpointError",
    "CheckpointCorruptedError",
    "CheckpointIncompatibleError",
    "read_all_arrays",
    "checksums",
    "check_checksums",
    "corrupted",
    "mismatches",
    "check_matches",
]



class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names its path and what to do."""


class CheckpointCorruptedError(CheckpointError):
    """The files of a checkpoint are damaged or incomplete."""


class CheckpointIncompatibleError(CheckpointError):
    """A checkpoint does not match the state (structure, shapes, dtypes) or config asked for."""


# the file that marks an array in a zarr (v2) or zarr3 store, and the tensorstore driver
_ARRAY_MARKERS = {".zarray": "zarr", "zarr.json": "zarr3"}


def read_all_arrays(item_dir: str) -> int:
    """Open and read every array of an orbax item directory; return how many there are.

    Handles the OCDBT layout orbax writes by default (``manifest.ocdbt``) and a plain
    directory of zarr arrays. Raises tensorstore's exception (``ValueError``) for a
    missing, truncated or garbled file.
    """
    base = {"driver": "file", "path": item_dir}
    if os.path.exists(os.path.join(item_dir, "manifest.ocdbt")):
        base = {"driver": "ocdbt", "base": base}
    keys = [k.decode() for k in ts.KvStore.open(base).result().list().result()]
    arrays = []
    for key in keys:
        name, _, leaf = key.rpartition("/")
        if name and leaf in _ARRAY_MARKERS:
            arrays.append((name, _ARRAY_MARKERS[leaf]))
    # every open and read is started before any is waited for: tensorstore runs them
    # concurrently on its own threads, and .result() blocks without an event loop
    opened = [ts.open({"driver": driver, "kvstore": dict(base, path=name + "/")}, open=True, read=True)
              for name, driver in arrays]
    reads = [future.result().read() for future in opened]
    for future in reads:
        future.result()
    return len(arrays)


def checksums(tree) -> Optional[dict]:
    """``{leaf path: CRC-32 of its bytes}`` for every array of ``tree``, or ``None`` when some
    array is not fully addressable here (multi-host: no process sees all of it).

    Why: orbax stores array data without checksums (its OCDBT data files are not verified on
    read), so overwritten bytes in a data file restore silently as other numbers. jflow
    records these sums with each checkpoint and compares them after a restore
    (:func:`check_checksums`). Costs one host copy and one CRC pass over the state per save.
    """
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    if not all(getattr(x, "is_fully_addressable", True) for _, x in leaves):
        return None
    return {jax.tree_util.keystr(path): zlib.crc32(np.ascontiguousarray(jax.device_get(x)).tobytes())
            for path, x in leaves}


def check_checksums(tree, saved: dict) -> None:
    """Raise :class:`CheckpointCorruptedError` unless ``tree``'s arrays have the CRC-32 sums ``saved``."""
    now = checksums(tree)
    if now is None:
        return
    bad = sorted(k for k, v in now.items() if saved.get(k, v) != v)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise CheckpointCorruptedError(f"the data of {shown} does not match the checksum written with it")


def corrupted(path: str, err, other_steps: List[int]) -> CheckpointCorruptedError:
    """The error for the damaged checkpoint ``path``, with ``err`` (shortened) and what to do:
    restore the latest of ``other_steps`` (the other completed steps) or start again."""
    hint = (
        f"restore an earlier step with restore(..., step={other_steps[-1]}) or delete {path} to "
        "resume from the previous checkpoint"
        if other_steps else f"delete {path} and start the run again"
    )
    detail = str(err)
    detail = detail if len(detail) <= 300 else detail[:300] + "..."
    return CheckpointCorruptedError(
        f"checkpoint {path} is damaged or incomplete ({type(err).__name__}: {detail}); {hint}"
    )


def _path_key(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _flat_by_path(tree) -> dict:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(_path_key(e) for e in path): leaf for path, leaf in leaves}


def mismatches(saved, wanted) -> List[str]:
    """How the tree of saved array metadata differs from the wanted one (structure, shape,
    dtype), one line per leaf path, e.g. ``"params/w: checkpoint has float32[3, 3],
    template has float32[3, 5]"``; empty when they match."""
    saved, wanted = _flat_by_path(saved), _flat_by_path(wanted)
    problems = []
    for name in sorted(set(saved) | set(wanted)):
        if name not in saved:
            problems.append(f"{name}: missing from the checkpoint")
        elif name not in wanted:
            problems.append(f"{name}: in the checkpoint but not in the template state")
        else:
            s, w = saved[name], wanted[name]
            if tuple(s.shape) != tuple(w.shape) or np.dtype(s.dtype) != np.dtype(w.dtype):
                problems.append(
                    f"{name}: checkpoint has {np.dtype(s.dtype).name}{list(s.shape)}, "
                    f"template has {np.dtype(w.dtype).name}{list(w.shape)}"
                )
    return problems


def check_matches(saved, wanted, path: str) -> None:
    """Raise :class:`CheckpointIncompatibleError` naming the first :func:`mismatches` of the
    checkpoint ``path`` and how to proceed; nothing when the trees match."""
    problems = mismatches(saved, wanted)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} in all)" if len(problems) > 5 else "")
        raise CheckpointIncompatibleError(
            f"checkpoint {path} does not match the state to restore into ({shown}). It was "
            "written by a run with a different model, optimizer or EMA setting: restore it with "
            "the same configuration, or start a new run in another directory."
        )
