"""Helper of tests/test_distributed.py (not collected): one process of a 2-process CPU run.

Started by the test with JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID and
XLA_FLAGS=--xla_force_host_platform_device_count=2 in its environment. It joins the cluster
with ``initialize_distributed()``, runs ``NUM_STEPS`` sharded train steps over the mesh of
all 4 devices (each process feeding its own half of every global batch), saves a
checkpoint with every process taking part, restores it, and writes what it computed to
``OUT.npz``. Usage: python _dist_worker.py OUT CKPT_DIR
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

NUM_STEPS, GLOBAL_BATCH, D = 3, 8, 3
KEY_SEED = 11


def loss_fn(params, batch, key):
    eps = jax.random.normal(key, batch["x"].shape, batch["x"].dtype)
    pred = jnp.tanh((batch["x"] + 0.1 * eps) @ params["w"] + params["b"])
    return jnp.mean((pred - batch["x"][:, ::-1]) ** 2), {}


def global_batch(step):
    return {"x": np.random.default_rng(100 + step).standard_normal((GLOBAL_BATCH, D)).astype(np.float32)}


def init_params():
    rng = np.random.default_rng(5)
    return {"w": rng.standard_normal((D, D)).astype(np.float32), "b": np.zeros((D,), np.float32)}


def main(out, ckpt_dir):
    import jflow.train as jt

    assert jt.initialize_distributed(), "expected a 2-process run from the environment"
    assert jax.process_count() == 2 and jax.device_count() == 4 and jax.local_device_count() == 2
    mesh = jt.make_mesh()
    step = jt.make_sharded_train_step(loss_fn, mesh)
    state = jt.put_replicated(jt.create_train_state(init_params(), optax.adam(1e-2), ema_decay=0.9), mesh)
    key = jax.random.PRNGKey(KEY_SEED)
    rows = jt.process_batch_slice(GLOBAL_BATCH)
    losses = []
    for s in range(NUM_STEPS):
        local = jax.tree.map(lambda x: x[rows], global_batch(s))
        state, metrics = step(state, jt.shard_batch(local, mesh), key)
        losses.append(float(metrics["loss"]))
    with jt.Checkpointer(ckpt_dir) as ckpt:
        ckpt.save(state, data_state={"step": NUM_STEPS})
        ckpt.wait()
        template = jt.put_replicated(jt.create_train_state(init_params(), optax.adam(1e-2), ema_decay=0.9), mesh)
        restored, data, _ = ckpt.restore(template)
    local_value = lambda x: np.asarray(x.addressable_data(0))  # noqa: E731
    np.savez(
        out,
        w=local_value(state.params["w"]), b=local_value(state.params["b"]),
        ema_w=local_value(state.ema_params["w"]),
        restored_w=local_value(restored.params["w"]), restored_step=int(local_value(restored.step)),
        losses=np.asarray(losses), main=jt.is_main_process(), process_index=jax.process_index(),
        data_step=data["step"],
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
