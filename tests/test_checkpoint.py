"""Orbax checkpoints: round trip, keep-last-K, exact resume (one run and vmapped runs), no
recompilation after a restore, crash during save, damaged and incompatible checkpoints,
NaN never saved, restore onto another number of devices."""
import os
import pathlib
import shutil
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import jflow.train as jt

D, B = 3, 8
KEY = jax.random.PRNGKey(3)
TX = optax.adam(5e-2)
REPO = pathlib.Path(__file__).resolve().parents[1]


def loss_fn(params, batch, key):
    eps = jax.random.normal(key, batch["x"].shape)
    pred = jnp.tanh((batch["x"] + 0.1 * eps) @ params["w"]) + params["b"]
    return jnp.mean((pred - batch["x"]) ** 2), {}


def batch_at(step):
    return {"x": np.random.default_rng(step).standard_normal((B, D)).astype(np.float32)}


def new_params(seed=0):
    rng = np.random.default_rng(seed)
    return {"w": jnp.asarray(rng.standard_normal((D, D)), jnp.float32), "b": jnp.zeros((D,))}


def new_state(seed=0):
    return jt.create_train_state(new_params(seed), TX, ema_decay=0.9)


STEP = jt.make_train_step(loss_fn)
CONFIG = {"lr": 0.05, "model": {"width": 3}, "tags": ["a", "b"]}


def run(n, state=None):
    state = new_state() if state is None else state
    for s in range(int(state.step), n):
        state, _ = STEP(state, batch_at(s), KEY)
    return state


def test_roundtrip_exact_and_keep_last_k(tmp_path):
    state = run(2)
    with jt.Checkpointer(tmp_path, max_to_keep=2) as ckpt:
        for s in range(4):
            state, _ = STEP(state, batch_at(2 + s), KEY)
            assert ckpt.save(state, data_state={"step": int(state.step)}, config=CONFIG)
        assert not ckpt.save(state, data_state={"step": 6})  # step 6 exists: nothing written
        ckpt.wait()
        assert ckpt.all_steps() == [5, 6]
        restored, data, config = ckpt.restore(new_state())
    chex.assert_trees_all_equal(jt.state_arrays(restored), jt.state_arrays(state))
    assert restored.tx is TX and restored.ema_decay == 0.9
    assert data == {"step": 6} and config == CONFIG
    assert sorted(os.listdir(tmp_path)) == ["5", "6"]


def test_resume_equals_uninterrupted(tmp_path):
    uninterrupted, _ = jt.fit(STEP, new_state(), batch_at, KEY, num_steps=6)
    with jt.Checkpointer(tmp_path) as ckpt:
        jt.fit(STEP, new_state(), batch_at, KEY, num_steps=4, checkpointer=ckpt, save_every=2,
               config=CONFIG)
    seen = []

    def recording(step):
        seen.append(step)
        return batch_at(step)

    # "the same command" again, with a longer target: restarts from the latest checkpoint
    with jt.Checkpointer(tmp_path) as ckpt:
        resumed, _ = jt.fit(STEP, new_state(), recording, KEY, num_steps=6, checkpointer=ckpt,
                            save_every=2, config=CONFIG)
        assert seen == [4, 5]
        chex.assert_trees_all_equal(jt.state_arrays(resumed), jt.state_arrays(uninterrupted))
        assert ckpt.all_steps() == [2, 4, 6]
        with pytest.raises(jt.CheckpointIncompatibleError, match="different config"):
            jt.fit(STEP, new_state(), batch_at, KEY, num_steps=8, checkpointer=ckpt,
                   config=dict(CONFIG, lr=0.1))


def test_partial_tmp_checkpoint_is_never_loaded(tmp_path):
    state = run(1)
    with jt.Checkpointer(tmp_path) as ckpt:
        ckpt.save(state)
    # what an interrupted orbax save leaves behind: a temporary directory, not yet renamed
    partial = tmp_path / "2.orbax-checkpoint-tmp-1234567890"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "_METADATA").write_text("{truncated")
    with jt.Checkpointer(tmp_path) as ckpt:
        assert ckpt.all_steps() == [1]
        restored, _, _ = ckpt.restore(new_state())
    chex.assert_trees_all_equal(restored.params, state.params)


def test_process_killed_during_save_resumes_from_previous(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", XLA_FLAGS="")
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "_ckpt_killed_save.py"), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 17, proc.stderr[-2000:]
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert "1" in leftovers and "2" not in leftovers
    assert any(name.startswith("2.") and "tmp" in name for name in leftovers), leftovers
    template = jt.create_train_state({"w": jnp.zeros((2, 3))}, optax.sgd(0.1), ema_decay=0.5)
    with jt.Checkpointer(tmp_path) as ckpt:
        assert ckpt.latest_step() == 1
        restored, data, _ = ckpt.restore(template)
    np.testing.assert_array_equal(restored.params["w"], np.arange(6.0).reshape(2, 3))
    assert int(restored.step) == 1 and data == {"step": 1}


def test_damaged_checkpoint_raises_clear_error(tmp_path):
    state = run(1)
    with jt.Checkpointer(tmp_path) as ckpt:
        ckpt.save(state)
        state, _ = STEP(state, batch_at(1), KEY)
        ckpt.save(state)
    data_files = [p for p in (tmp_path / "2" / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert data_files
    for p in data_files:  # truncate every array data file of step 2
        with open(p, "r+b") as fh:
            fh.truncate(p.stat().st_size // 2)
    with jt.Checkpointer(tmp_path) as ckpt:
        with pytest.raises(jt.CheckpointCorruptedError, match=r"damaged or incomplete") as err:
            ckpt.restore(new_state())
        assert str(tmp_path / "2") in str(err.value) and "step=1" in str(err.value)
        assert isinstance(err.value, ValueError)
        restored, _, _ = ckpt.restore(new_state(), step=1)  # the advice works
    assert int(restored.step) == 1


def test_overwritten_array_bytes_fail_the_checksum_instead_of_restoring_other_numbers(tmp_path):
    params = {"w": jnp.arange(20000, dtype=jnp.float32).reshape(200, 100) / 7.0, "b": jnp.ones((100,))}
    state = jt.create_train_state(params, TX)
    with jt.Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(state)
    files = [p for p in (tmp_path / "0" / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    data = max(files, key=lambda p: p.stat().st_size)  # the one holding w
    raw = bytearray(data.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 64] = bytes(b ^ 0xFF for b in raw[middle:middle + 64])  # still decodes: orbax restores it
    data.write_bytes(bytes(raw))
    with jt.Checkpointer(tmp_path) as ckpt:
        with pytest.raises(jt.CheckpointCorruptedError, match=r"\['params'\]\['w'\] does not match the checksum"):
            ckpt.restore(state)
    # a checkpoint written before checksums existed (no checksums item) still restores
    with jt.Checkpointer(tmp_path / "old", async_save=False) as ckpt:
        ckpt.save(state)
    shutil.rmtree(tmp_path / "old" / "0" / "checksums")
    with jt.Checkpointer(tmp_path / "old") as ckpt:
        restored, _, _ = ckpt.restore(state)
    np.testing.assert_array_equal(restored.params["w"], params["w"])


def test_damaged_checkpoint_prints_one_error_and_no_event_loop_tracebacks(tmp_path):
    # a damaged file used to fail one of orbax's concurrent reads and leave the others in
    # flight on its closed event loop: each then printed an "Event loop is closed" traceback
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", XLA_FLAGS="")
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "_ckpt_damaged_restore.py"), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 8, proc.stderr[-3000:]  # one line per damaged copy, nothing else
    assert all("is damaged or incomplete" in line for line in lines), lines


def test_incompatible_checkpoint_raises_clear_error(tmp_path):
    with jt.Checkpointer(tmp_path) as ckpt:
        ckpt.save(new_state())
    ckpt = jt.Checkpointer(tmp_path)  # closed at the end of the test
    wide = jt.create_train_state({"w": jnp.zeros((D, 5)), "b": jnp.zeros((D,))}, TX, ema_decay=0.9)
    with pytest.raises(jt.CheckpointIncompatibleError, match=r"params/w: checkpoint has float32\[3, 3\], template has float32\[3, 5\]") as err:
        ckpt.restore(wide)
    assert str(tmp_path / "0") in str(err.value)
    no_ema = jt.create_train_state(new_state().params, TX)
    with pytest.raises(jt.CheckpointIncompatibleError, match="ema_params/w: in the checkpoint but not in the template"):
        ckpt.restore(no_ema)
    with pytest.raises(jt.CheckpointError, match="no completed checkpoint for step 7"):
        ckpt.restore(new_state(), step=7)
    with pytest.raises(jt.CheckpointError, match="no checkpoint in"):
        with jt.Checkpointer(tmp_path / "empty") as empty:
            empty.restore(new_state())
    with pytest.raises(ValueError, match="JSON"):
        ckpt.save(run(1), config={"f": object()})
    ckpt.close()


def test_nonfinite_run_stops_and_keeps_last_good_checkpoint(tmp_path):
    def data(step):
        b = batch_at(step)
        if step == 5:
            b["x"][1, 2] = np.inf
        return b

    ckpt = jt.Checkpointer(tmp_path)
    with pytest.raises(jt.NonFiniteError, match="at step 5"):
        jt.fit(STEP, new_state(), data, KEY, num_steps=8, checkpointer=ckpt, save_every=2)
    assert ckpt.all_steps() == [2, 4]
    restored, data_state, _ = ckpt.restore(new_state())
    assert data_state == {"step": 4}
    chex.assert_trees_all_equal(jt.state_arrays(restored), jt.state_arrays(run(4)))
    # the checkpointer itself refuses a NaN state
    bad = run(1)
    bad = bad.replace(params=jax.tree.map(lambda x: x * jnp.nan, bad.params))
    with pytest.raises(jt.NonFiniteError, match="refusing to save the state of step 1"):
        ckpt.save(bad)
    assert ckpt.all_steps() == [2, 4]
    ckpt.close()


def test_restore_onto_a_different_number_of_devices(tmp_path):
    mesh8, mesh2 = jt.make_mesh(8), jt.make_mesh(2)
    params = {"w": jnp.arange(24.0).reshape(8, 3), "b": jnp.ones((3,))}
    state = jt.create_train_state(params, TX, ema_decay=0.9)
    placed = jax.device_put(state, NamedSharding(mesh8, P()))
    placed = placed.replace(params=dict(placed.params, w=jax.device_put(params["w"], NamedSharding(mesh8, P("data")))))
    assert len(placed.params["w"].sharding.device_set) == 8
    with jt.Checkpointer(tmp_path) as ckpt:
        ckpt.save(placed)
    ckpt = jt.Checkpointer(tmp_path)

    # onto 2 devices: w sharded along 'data' (4 rows each), everything else replicated
    def target(x, spec):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh2, spec))

    template = jax.tree.map(lambda x: target(x, P()), state)
    template = template.replace(params=dict(template.params, w=target(params["w"], P("data"))))
    on2, _, _ = ckpt.restore(template)
    assert on2.params["w"].sharding == NamedSharding(mesh2, P("data"))
    assert [s.data.shape for s in on2.params["w"].addressable_shards] == [(4, 3), (4, 3)]
    assert on2.opt_state[0].mu["b"].sharding == NamedSharding(mesh2, P())
    assert all(leaf.committed for leaf in jax.tree.leaves(on2))
    chex.assert_trees_all_equal(jax.device_get(jt.state_arrays(on2)), jax.device_get(jt.state_arrays(state)))

    # onto 1 device, by the `sharding` argument
    one = jax.sharding.SingleDeviceSharding(jax.devices()[3])
    on1, _, _ = ckpt.restore(state, sharding=one)
    assert all(leaf.sharding == one for leaf in jax.tree.leaves(on1))
    chex.assert_trees_all_equal(jax.device_get(jt.state_arrays(on1)), jax.device_get(jt.state_arrays(state)))
    ckpt.close()


def test_restore_is_placed_like_the_template_and_reuses_the_compiled_step(tmp_path):
    traces = []

    @jax.jit
    def counted(state, batch, key):
        traces.append(None)  # runs once per trace
        return jt.make_update_fn(loss_fn)(state, batch, key)

    state = new_state()
    for s in range(2):
        state, _ = counted(state, batch_at(s), KEY)
    assert not state.params["w"].committed  # jit of uncommitted inputs returns uncommitted arrays
    assert (len(traces), counted._cache_size()) == (1, 1)
    with jt.Checkpointer(tmp_path) as ckpt:
        ckpt.save(state)
        ckpt.wait()
        restored, _, _ = ckpt.restore(new_state())
        # ShapeDtypeStruct leaves without a sharding behave like uncommitted arrays
        abstract, _, _ = ckpt.restore(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), new_state()))
        # the negative control: an explicit device commits the arrays, and jit compiles anew
        committed, _, _ = ckpt.restore(new_state(), sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    for leaf in jax.tree.leaves((restored, abstract)):
        assert not leaf.committed and leaf.sharding == state.params["w"].sharding
    assert all(leaf.committed for leaf in jax.tree.leaves(committed))
    chex.assert_trees_all_equal(jt.state_arrays(restored), jt.state_arrays(state))
    chex.assert_trees_all_equal(jt.state_arrays(abstract), jt.state_arrays(state))

    resumed, _ = counted(restored, batch_at(2), KEY)
    resumed, _ = counted(abstract, batch_at(2), KEY)
    assert (len(traces), counted._cache_size()) == (1, 1)  # no retrace, no recompile
    counted(committed, batch_at(2), KEY)
    assert counted._cache_size() == 2
    want, _ = counted(state, batch_at(2), KEY)
    chex.assert_trees_all_equal(jt.state_arrays(resumed), jt.state_arrays(want))


R, K = 2, 2
VSTEP = jt.make_vmapped_train_step(lambda _: loss_fn, fused=True)  # donates the states


def new_runs():
    """R runs with different initial parameters, as the jax.vmap of create_train_state."""
    stacked = jt.stack_trees([new_params(seed) for seed in range(R)])
    return jax.vmap(lambda p: jt.create_train_state(p, TX, ema_decay=0.9))(stacked)


def test_vmapped_fused_fit_killed_halfway_resumes_exactly(tmp_path):
    keys = jax.random.split(KEY, R)
    runs = new_runs()
    chex.assert_shape(runs.step, (R,))
    uninterrupted, hist = jt.fit(VSTEP, runs, batch_at, keys, num_steps=4, steps_per_call=K, log_every=K,
                                 log_fn=lambda *_: None)
    assert [h[0] for h in hist] == [2, 4]
    np.testing.assert_array_equal(uninterrupted.step, [4, 4])
    with jt.Checkpointer(tmp_path) as ckpt:  # killed after step 2 (its checkpoint is written)
        jt.fit(VSTEP, new_runs(), batch_at, keys, num_steps=2, steps_per_call=K, checkpointer=ckpt,
               save_every=K, config=CONFIG)
    seen = []

    def recording(step):
        seen.append(step)
        return batch_at(step)

    with jt.Checkpointer(tmp_path) as ckpt:  # the same command again
        resumed, _ = jt.fit(VSTEP, new_runs(), recording, keys, num_steps=4, steps_per_call=K,
                            checkpointer=ckpt, save_every=K, config=CONFIG)
        assert ckpt.all_steps() == [2, 4]
    assert seen == [2, 3]
    chex.assert_trees_all_equal(jt.state_arrays(resumed), jt.state_arrays(uninterrupted))
    assert VSTEP._cache_size() == 1  # the restored states reused the compiled step

    # run r equals a separate (fused, un-vmapped) run from its own parameters and key
    fused = jt.make_fused_train_step(loss_fn)
    for r in range(R):
        alone, _ = jt.fit(fused, new_state(seed=r), batch_at, keys[r], num_steps=4, steps_per_call=K)
        for got, want in zip(jax.tree.leaves(jt.unstack_tree(resumed, r)), jax.tree.leaves(alone)):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)


def test_vmapped_runs_at_different_steps_are_refused(tmp_path):
    apart = new_runs().replace(step=jnp.array([2, 3], jnp.int32))
    with pytest.raises(ValueError, match=r"different steps \[2, 3\]"):
        jt.fit(VSTEP, apart, batch_at, jax.random.split(KEY, R), num_steps=4, steps_per_call=K)
    with jt.Checkpointer(tmp_path) as ckpt:
        with pytest.raises(ValueError, match="different steps"):
            ckpt.save(apart)
        assert ckpt.all_steps() == []
    assert jt.current_step(new_runs().replace(step=jnp.array([3, 3], jnp.int32))) == 3
    with pytest.raises(ValueError, match=r"shape \(R,\)"):
        jt.current_step(new_runs().replace(step=jnp.zeros((2, 2), jnp.int32)))
    with pytest.raises(ValueError, match="leading run axis"):
        jt.make_vmapped_train_step(lambda _: loss_fn)(new_state(), batch_at(0), jax.random.split(KEY, R))


def test_resumable_image_loader_patterns_of_fit_docstring(tmp_path):
    """Both ways fit's docstring gives to feed jflow.data.ImageLoader resume exactly."""
    from jflow.data import ArraySource, ImageLoader

    source = ArraySource(np.random.default_rng(5).integers(0, 256, (20, 3, 1, 1)), value_range=(0, 255))

    def flat(batch):  # (B, 3, 1, 1) images in [-1, 1] -> the (B, D) rows of loss_fn
        return {"x": batch["x"].reshape(B, D)}

    random_access = ImageLoader(source, B, seed=1, prefetch=0)
    n = random_access.batches_per_epoch
    assert n == 2  # so 6 steps cross epochs with different shuffles
    uninterrupted, _ = jt.fit(STEP, new_state(), lambda step: flat(random_access.batch_at(step // n, step % n)),
                              KEY, num_steps=6)

    def prefetching_run(num_steps):
        with jt.Checkpointer(tmp_path) as ckpt, ImageLoader(source, B, seed=1, prefetch=2) as loader:
            start = ckpt.latest_step() or 0
            loader.set_state({"epoch": start // n, "index": start % n})
            state, _ = jt.fit(STEP, new_state(), lambda step: flat(next(loader)), KEY, num_steps=num_steps,
                              checkpointer=ckpt, save_every=1)
        return state

    prefetching_run(3)  # killed after step 3
    resumed = prefetching_run(6)
    chex.assert_trees_all_equal(jt.state_arrays(resumed), jt.state_arrays(uninterrupted))
