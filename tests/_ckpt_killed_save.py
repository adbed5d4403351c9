"""Helper of tests/test_checkpoint.py (not collected): save step 1, then die during the save of step 2.

The process exits with code 17 from inside orbax's final atomic rename of step 2, i.e.
after all of step 2's files were written to the temporary directory but before the
checkpoint was committed: the worst moment for a crash.
Usage: python _ckpt_killed_save.py DIRECTORY
"""
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from orbax.checkpoint._src.path import atomicity  # noqa: E402

import jflow.train as jt  # noqa: E402

directory = sys.argv[1]
params = {"w": jnp.arange(6.0).reshape(2, 3)}
state = jt.create_train_state(params, optax.sgd(0.1), ema_decay=0.5)
ckpt = jt.Checkpointer(directory, async_save=False)
ckpt.save(state.replace(step=jnp.asarray(1, jnp.int32)), data_state={"step": 1})


async def die_before_commit(self):
    if self._final_path.name == "2":
        os._exit(17)
    return await original(self)


original = atomicity.AtomicRenameTemporaryPath.finalize
atomicity.AtomicRenameTemporaryPath.finalize = die_before_commit
bad = state.replace(step=jnp.asarray(2, jnp.int32), params={"w": -jnp.ones((2, 3))})
ckpt.save(bad, data_state={"step": 2})
sys.exit(3)  # not reached if the kill happened
