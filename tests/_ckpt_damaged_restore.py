"""Helper of tests/test_checkpoint.py (not collected): restore damaged copies of a checkpoint.

Saves one state, then for each of 8 seeds copies the checkpoint and overwrites a third of
its OCDBT data file (the B-tree nodes and small arrays, ``state/d/*``) with seeded random
bytes, restores it and prints the error's message to stderr, one line per copy. Without
the check before orbax's restore, a failing read left others in flight on orbax's closed
event loop and each printed an "Event loop is closed" traceback (in about half the
copies). Usage: python _ckpt_damaged_restore.py DIRECTORY [--no-verify]
"""
import os
import pathlib
import shutil
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import jflow.train as jt  # noqa: E402

directory = pathlib.Path(sys.argv[1])
verify = "--no-verify" not in sys.argv[2:]
state = jt.create_train_state({"w": jnp.ones((30, 30)), "b": jnp.zeros(30)}, optax.adam(0.1), ema_decay=0.9)
with jt.Checkpointer(directory / "intact", async_save=False) as ckpt:
    ckpt.save(state)
for seed in range(8):
    copy = directory / f"damaged{seed}"
    shutil.copytree(directory / "intact", copy)
    for path in (copy / "0" / "state" / "d").iterdir():
        size = path.stat().st_size
        with open(path, "r+b") as fh:
            fh.seek(size // 3)
            fh.write(np.random.default_rng(seed).bytes(size // 3))
    with jt.Checkpointer(copy, verify=verify) as ckpt:
        try:
            ckpt.restore(state)
            print(f"copy {seed}: restored without error", file=sys.stderr)
        except jt.CheckpointCorruptedError as err:
            print(f"copy {seed}: {str(err).splitlines()[0][:150]}", file=sys.stderr)
