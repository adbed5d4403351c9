"""Train state, steps (single / fused / vmapped / sharded / pmap), EMA, optimizers, fit.

Reference computations are written independently here (plain ``jax.grad`` + the optimizer
formula), so each equality would fail if the step were wrong.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import jflow.train as jt
from jflow.losses import make_loss
from jflow.models import MLP
from jflow.schedulers import LinearScheduler, PolynomialScheduler

D, B = 3, 16


def toy_loss(params, batch, key):
    """Noisy least squares: per-example noise drawn from ``key`` for the whole batch."""
    x = batch["x"]
    eps = jax.random.normal(key, x.shape, x.dtype)
    pred = jnp.tanh((x + 0.1 * eps) @ params["w"] + params["b"])
    loss = jnp.mean((pred - x[:, ::-1]) ** 2)
    return loss, {"pred_mean": jnp.mean(pred)}


def det_loss(params, batch, key):
    """Same without randomness (the key is unused)."""
    del key
    pred = jnp.tanh(batch["x"] @ params["w"] + params["b"])
    return jnp.mean((pred - batch["x"][:, ::-1]) ** 2), {}


def init_params(seed=0):
    rng = np.random.default_rng(seed)
    return {"w": jnp.asarray(0.5 * rng.standard_normal((D, D)), jnp.float32),
            "b": jnp.asarray(0.1 * rng.standard_normal(D), jnp.float32)}


def batch_at(step, n=B):
    return {"x": np.random.default_rng(1000 + step).standard_normal((n, D)).astype(np.float32)}


TX = optax.adam(1e-2)
KEY = jax.random.PRNGKey(7)

# compiled once, shared by the tests below
step_nodonate = jt.make_train_step(toy_loss, donate=False)
step_donate = jt.make_train_step(toy_loss)
fused_step = jt.make_fused_train_step(toy_loss, donate=False)
micro8_step = jt.make_train_step(toy_loss, num_microbatches=8, donate=False)
det_step = jt.make_train_step(det_loss, donate=False)


_FRESH = {}


def fresh(ema_decay=None, seed=0):
    """Initial states are built once (arrays are immutable; only donating steps consume them)."""
    if (ema_decay, seed) not in _FRESH:
        _FRESH[ema_decay, seed] = jt.create_train_state(init_params(seed), TX, ema_decay=ema_decay)
    return _FRESH[ema_decay, seed]


def run_single(state, n, step_fn=step_nodonate, key=KEY):
    for s in range(n):
        state, _ = step_fn(state, batch_at(s), key)
    return state


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    chex.assert_trees_all_equal_structs(a, b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- state
def test_create_train_state_fields_and_validation():
    p = init_params()
    s = jt.create_train_state(p, TX, ema_decay=0.9)
    assert int(s.step) == 0 and int(s.nonfinite_count) == 0 and s.ema_decay == 0.9
    chex.assert_trees_all_equal(s.ema_params, p)
    assert jt.create_train_state(p, TX).ema_params is None
    # static fields are not leaves: 2 params + 1 count + 2x2 adam moments + 2 ema + 2 counters
    assert len(jax.tree.leaves(s)) == 2 + 1 + 4 + 2 + 2
    with pytest.raises(ValueError, match="optax.GradientTransformation"):
        jt.create_train_state(p, "adam")
    with pytest.raises(ValueError, match=r"ema_decay must lie in \[0, 1\)"):
        jt.create_train_state(p, TX, ema_decay=1.0)
    with pytest.raises(ValueError, match="float"):
        jt.create_train_state({"w": jnp.arange(3)}, TX)


def test_lr_schedule_closed_form():
    sched = jt.make_lr_schedule(1.0, warmup_steps=10, total_steps=110, end_factor=0.1)
    np.testing.assert_allclose(sched(0), 0.0, atol=1e-7)
    np.testing.assert_allclose(sched(5), 0.5, rtol=1e-6)
    np.testing.assert_allclose(sched(10), 1.0, rtol=1e-6)
    # cosine from 1 to 0.1 over steps 10..110: the midpoint is (1 + 0.1) / 2
    np.testing.assert_allclose(sched(60), 0.55, rtol=1e-5)
    np.testing.assert_allclose(sched(110), 0.1, rtol=1e-5)
    const = jt.make_lr_schedule(0.3, warmup_steps=4)
    np.testing.assert_allclose([const(2), const(4), const(100)], [0.15, 0.3, 0.3], rtol=1e-6)
    with pytest.raises(ValueError, match="total_steps"):
        jt.make_lr_schedule(1.0, warmup_steps=10, total_steps=5)
    with pytest.raises(ValueError, match="unknown optimizer name"):
        jt.make_optimizer(1e-3, name="lamb")


def test_optimizer_clipping_bounds_the_update():
    tx = jt.make_optimizer(0.5, name="sgd", clip_norm=0.01)
    grads = {"a": jnp.full((4,), 3.0)}
    updates, _ = tx.update(grads, tx.init(grads))
    np.testing.assert_allclose(optax.tree.norm(updates), 0.5 * 0.01, rtol=1e-5)
    np.testing.assert_allclose(updates["a"], -0.5 * 0.01 / 2.0 * np.ones(4), rtol=1e-5)


def test_ema_warmup_closed_form():
    np.testing.assert_allclose(jt.ema_decay_at(0.999, 0), 0.1, rtol=1e-6)
    np.testing.assert_allclose(jt.ema_decay_at(0.999, 90), 91 / 100, rtol=1e-6)
    np.testing.assert_allclose(jt.ema_decay_at(0.5, 10**6), 0.5)
    np.testing.assert_allclose(jt.ema_decay_at(0.9, 0, warmup=False), 0.9, rtol=1e-7)


# ----------------------------------------------------------------------------- single step
def test_step_equals_independent_sgd_update_and_ema_jit_and_nojit():
    lr, decay = 0.1, 0.95
    state = jt.create_train_state(init_params(), optax.sgd(lr), ema_decay=decay)
    update = jt.make_update_fn(toy_loss)
    new, metrics = update(state, batch_at(0), KEY)  # no jit
    p0 = init_params()
    k0 = jax.random.fold_in(KEY, 0)
    g = jax.grad(lambda p: toy_loss(p, batch_at(0), k0)[0])(p0)
    expect = jax.tree.map(lambda p, gi: p - lr * gi, p0, g)
    assert_trees_close(new.params, expect)
    mu = min(decay, 1 / 10)
    assert_trees_close(new.ema_params, jax.tree.map(lambda a, b: mu * a + (1 - mu) * b, p0, expect))
    np.testing.assert_allclose(metrics["loss"], toy_loss(p0, batch_at(0), k0)[0], rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(g), rtol=1e-5)
    assert bool(metrics["finite"]) and int(new.step) == 1
    assert set(metrics) == {"loss", "grad_norm", "finite", "pred_mean"}
    # the jitted step computes the same update
    jitted, jm = step_nodonate(state, batch_at(0), KEY)
    assert_trees_close(jitted, new)
    assert_trees_close(jm, metrics)


def test_randomness_is_fold_in_of_step():
    # the key of update n is fold_in(key, n): a state at step 5 uses fold_in(key, 5)
    state = fresh().replace(step=jnp.asarray(5, jnp.int32))
    _, m = step_nodonate(state, batch_at(0), KEY)
    want = toy_loss(init_params(), batch_at(0), jax.random.fold_in(KEY, 5))[0]
    np.testing.assert_allclose(m["loss"], want, rtol=1e-6)


def test_no_recompilation_across_steps():
    step = jt.make_train_step(det_loss)
    s = jt.create_train_state(init_params(), TX)
    for i in range(4):
        s, _ = step(s, batch_at(i), KEY)
    assert step._cache_size() == 1


def test_donation_frees_the_old_state():
    state = jt.create_train_state(init_params(), TX, ema_decay=0.9)  # not the shared cache
    old_leaf = state.params["w"]
    new, _ = step_donate(state, batch_at(0), KEY)
    assert old_leaf.is_deleted()
    assert not new.params["w"].is_deleted()


def test_step_input_errors():
    with pytest.raises(ValueError, match="scalar loss"):
        jt.make_train_step(lambda p, b, k: (p["b"] * 1.0, {}))(fresh(), batch_at(0), KEY)
    with pytest.raises(ValueError, match=r"\(loss_scalar, metrics_dict\)"):
        jt.make_train_step(lambda p, b, k: jnp.sum(p["b"]))(fresh(), batch_at(0), KEY)
    with pytest.raises(ValueError, match="TrainState"):
        step_nodonate({"params": init_params()}, batch_at(0), KEY)
    with pytest.raises(ValueError, match="no ema_params"):
        jt.make_train_step(toy_loss, ema_decay=0.9)(fresh(), batch_at(0), KEY)
    with pytest.raises(ValueError, match=r"ema_decay must lie in \[0, 1\)"):
        jt.make_train_step(toy_loss, ema_decay=1.5)
    with pytest.raises(ValueError, match="must divide the batch size"):
        jt.make_train_step(toy_loss, num_microbatches=5)(fresh(), batch_at(0), KEY)


def test_microbatching_of_deterministic_loss_equals_full_batch():
    acc = jt.make_train_step(det_loss, num_microbatches=4, donate=False)
    s1 = run_single(fresh(), 3, det_step)
    s2 = run_single(fresh(), 3, acc)
    assert_trees_close(s1, s2)


def test_mixed_precision_bf16_compute_f32_state():
    seen = []

    def loss(params, batch, key):
        seen.append((params["w"].dtype, batch["x"].dtype))
        return toy_loss(params, batch, key)

    step = jt.make_train_step(loss, compute_dtype=jnp.bfloat16, donate=False)
    s, m = step(fresh(ema_decay=0.9), batch_at(0), KEY)
    assert seen[-1] == (jnp.bfloat16, jnp.bfloat16)
    for leaf in jax.tree.leaves((s.params, s.opt_state, s.ema_params)):
        assert leaf.dtype in (jnp.float32, jnp.int32)
    ref, mref = step_nodonate(fresh(), batch_at(0), KEY)
    np.testing.assert_allclose(m["loss"], mref["loss"], rtol=3e-2)
    assert m["loss"].dtype == jnp.float32
    # the bf16 update is close to, but not the same as, the f32 update
    assert_trees_close(s.params, ref.params, rtol=0, atol=2e-3)


# ----------------------------------------------------------------------------- non-finite
def nan_batch():
    b = batch_at(0)
    b["x"][0, 0] = np.nan  # one bad example makes the mean loss NaN
    return b


def test_nonfinite_is_flagged_and_check_finite_names_step():
    s = run_single(fresh(), 3)
    _, m = step_nodonate(s, nan_batch(), KEY)
    assert not bool(m["finite"])
    with pytest.raises(jt.NonFiniteError, match="at step 3"):
        jt.check_finite(m, 3)
    # fused: the first bad update inside the call is named
    batches = jax.tree.map(lambda *xs: np.stack(xs), batch_at(0), batch_at(1), nan_batch(), batch_at(3))
    _, fm = fused_step(fresh(), batches, KEY)
    np.testing.assert_array_equal(np.asarray(fm["finite"])[:2], [True, True])
    with pytest.raises(jt.NonFiniteError, match="at step 12"):
        jt.check_finite(fm, 10, steps_per_call=4)
    # without steps_per_call the leading axis is devices / runs, not updates
    with pytest.raises(jt.NonFiniteError, match="at step 10 "):
        jt.check_finite(fm, 10)


def test_skip_nonfinite_keeps_state_and_counts():
    skip = jt.make_train_step(toy_loss, skip_nonfinite=True, donate=False)
    s0 = fresh(ema_decay=0.9)
    s1, m = skip(s0, nan_batch(), KEY)
    assert bool(m["skipped"]) and not bool(m["finite"])
    assert int(s1.step) == 1 and int(s1.nonfinite_count) == 1
    chex.assert_trees_all_equal((s1.params, s1.opt_state, s1.ema_params), (s0.params, s0.opt_state, s0.ema_params))
    jt.check_finite(m, 0)  # a skipped update is not an error
    s2, m2 = skip(s1, batch_at(1), KEY)
    assert bool(m2["finite"]) and not bool(m2["skipped"]) and int(s2.nonfinite_count) == 1
    assert not np.allclose(s2.params["w"], s0.params["w"])


# ----------------------------------------------------------------------------- fused / vmap
def test_single_and_fused_factories_share_their_keywords():
    import inspect

    want = ["ema_decay", "ema_warmup", "donate", "skip_nonfinite", "compute_dtype", "num_microbatches"]
    for factory, name in ((jt.make_train_step, "make_train_step"), (jt.make_fused_train_step, "make_fused_train_step")):
        params = inspect.signature(factory).parameters
        assert factory.__name__ == name and list(params) == ["loss_fn"] + want
        assert all(params[k].kind is inspect.Parameter.KEYWORD_ONLY for k in want)
        assert "Jitted ``step(state, " in factory.__doc__
    with pytest.raises(ValueError, match="num_microbatches must be a Python int >= 1"):
        jt.make_fused_train_step(toy_loss, num_microbatches=0)
    with pytest.raises(ValueError, match=r"ema_decay must lie in \[0, 1\)"):
        jt.make_vmapped_train_step(lambda _: toy_loss, ema_decay=2.0)


def test_fused_k_steps_equal_k_single_steps():
    k = 4
    single = run_single(fresh(), k)
    batches = jax.tree.map(lambda *xs: np.stack(xs), *[batch_at(s) for s in range(k)])
    fused, metrics = fused_step(fresh(), batches, KEY)
    assert_trees_close(fused, single)
    chex.assert_shape(metrics["loss"], (k,))
    assert int(fused.step) == k


def test_vmapped_seed_grid_equals_separate_runs():
    seeds, keys = [0, 1, 2], jax.random.split(KEY, 3)
    states = jt.stack_trees([fresh(ema_decay=0.9, seed=s) for s in seeds])
    vstep = jt.make_vmapped_train_step(lambda _: toy_loss, donate=False)
    for s in range(3):
        states, m = vstep(states, batch_at(s), keys, None)
    chex.assert_shape(m["loss"], (3,))
    ema_step = jt.make_train_step(toy_loss, donate=False)
    for r, seed in enumerate(seeds):
        alone = run_single(fresh(ema_decay=0.9, seed=seed), 3, ema_step, key=keys[r])
        assert_trees_close(jt.unstack_tree(states, r), alone)


def stacked(steps):
    return jax.tree.map(lambda *xs: np.stack(xs), *[batch_at(s) for s in steps])


def test_composed_fused_step_traces_once_and_is_the_factory():
    # the factory is this composition: the same program, so bit-identical results
    update = chex.assert_max_traces(jt.make_update_fn(toy_loss), n=1)
    composed = jt.jit_step(jt.fuse(update), donate=False)
    s, m = composed(fresh(), stacked(range(4)), KEY)
    want, wm = fused_step(fresh(), stacked(range(4)), KEY)
    chex.assert_trees_all_equal((s, m), (want, wm))
    for c in (1, 2):  # new batch values and a new state: no second trace (chex would raise)
        s, _ = composed(s, stacked(range(4 * c, 4 * c + 4)), KEY)
    assert int(s.step) == 12 and composed._cache_size() == 1
    assert_trees_close(s, run_single(fresh(), 12))


def test_composed_vmap_of_runs_fused_equals_separate_runs():
    seeds, keys = [0, 1], jax.random.split(KEY, 2)
    update = chex.assert_max_traces(jt.make_update_fn(toy_loss), n=1)
    step = jt.jit_step(jt.fuse(jt.vmap_runs(lambda _: update)), donate=False)
    states = jt.stack_trees([fresh(seed=s) for s in seeds])
    for c in range(2):
        states, m = step(states, stacked(range(2 * c, 2 * c + 2)), keys)
    chex.assert_shape(m["loss"], (2, 2))  # (k, R)
    for r, seed in enumerate(seeds):
        assert_trees_close(jt.unstack_tree(states, r), run_single(fresh(seed=seed), 4, key=keys[r]))
    with pytest.raises(ValueError, match="leading run axis"):
        step(fresh(), stacked(range(2)), keys)


# ----------------------------------------------------------------------------- data parallel
def test_sharded_step_equals_single_device_on_8_and_2_devices():
    want = run_single(fresh(ema_decay=0.9), 3, jt.make_train_step(toy_loss, donate=False))
    for n in (8, 2):
        mesh = jt.make_mesh(n)
        step = jt.make_sharded_train_step(toy_loss, mesh)
        state = jt.put_replicated(fresh(ema_decay=0.9), mesh)
        for s in range(3):
            batch = jt.shard_batch(batch_at(s), mesh)
            assert batch["x"].sharding.spec == P("data")
            state, m = step(state, batch, KEY)
        assert state.params["w"].sharding.is_fully_replicated
        assert len(state.params["w"].sharding.device_set) == n
        assert_trees_close(state, want)


def test_sharded_fused_step_equals_single_device():
    mesh = jt.make_mesh(4)
    step = jt.make_sharded_train_step(toy_loss, mesh, fused=True)
    batches = jax.tree.map(lambda *xs: np.stack(xs), *[batch_at(s) for s in range(3)])
    state, m = step(jt.put_replicated(fresh(), mesh), jt.shard_batch(batches, mesh, leading_axes=1), KEY)
    chex.assert_shape(m["loss"], (3,))
    assert_trees_close(state, run_single(fresh(), 3))


def test_pmap_equals_single_device():
    n = jax.local_device_count()
    assert n == 8
    # random loss: pmap over D devices == one device accumulating D micro-batches, same keys
    pstep = jt.make_pmap_train_step(toy_loss, donate=False)
    state = jt.replicate(fresh())
    for s in range(3):
        state, m = pstep(state, jt.split_batch(batch_at(s)), KEY)
    chex.assert_shape(m["loss"], (n,))
    for i in range(n):  # every device holds the same state
        assert_trees_close(jt.unstack_tree(state, i), jt.unreplicate(state), rtol=0, atol=0)
    assert_trees_close(jt.unreplicate(state), run_single(fresh(), 3, micro8_step))
    # deterministic loss: pmap == the plain single-device step on the global batch
    pdet = jt.make_pmap_train_step(det_loss, donate=False)
    state = jt.replicate(fresh())
    for s in range(3):
        state, _ = pdet(state, jt.split_batch(batch_at(s)), KEY)
    assert_trees_close(jt.unreplicate(state), run_single(fresh(), 3, det_step))


def test_parallel_input_errors():
    mesh = jt.make_mesh(8)
    with pytest.raises(ValueError, match="multiple of the number of devices"):
        jt.shard_batch({"x": np.zeros((12, D))}, mesh)
    with pytest.raises(ValueError, match="multiple of 8"):
        jt.split_batch({"x": np.zeros((12, D))})
    with pytest.raises(ValueError, match="num_devices"):
        jt.make_mesh(9)
    with pytest.raises(ValueError, match="not an axis"):
        jt.make_sharded_train_step(toy_loss, mesh, data_axis="batch")


# ----------------------------------------------------------------------------- fit
def test_fit_fused_equals_unfused_and_logs():
    logs = []
    s1, hist = jt.fit(step_nodonate, fresh(), batch_at, KEY, num_steps=4, log_every=2,
                      log_fn=lambda step, m: logs.append(step))
    s2, _ = jt.fit(fused_step, fresh(), batch_at, KEY, num_steps=4, steps_per_call=2)
    assert logs == [2, 4] and [h[0] for h in hist] == [2, 4]
    assert set(hist[0][1]) >= {"loss", "grad_norm"}
    assert_trees_close(s1, s2)
    assert_trees_close(s1, run_single(fresh(), 4))
    with pytest.raises(ValueError, match="multiple of steps_per_call"):
        jt.fit(fused_step, fresh(), batch_at, KEY, num_steps=5, steps_per_call=2)
    with pytest.raises(jt.NonFiniteError, match="at step 2"):
        jt.fit(step_nodonate, fresh(), lambda s: nan_batch() if s == 2 else batch_at(s), KEY, num_steps=4)


def test_fit_history_has_elapsed_time_and_throughput(capsys):
    _, hist = jt.fit(step_nodonate, fresh(), batch_at, KEY, num_steps=4, log_every=1)
    steps = [h[0] for h in hist]
    elapsed = np.array([h[1]["elapsed_s"] for h in hist])
    rate = np.array([h[1]["steps_per_s"] for h in hist])
    assert steps == [1, 2, 3, 4] and np.all(elapsed > 0) and np.all(np.diff(elapsed) > 0) and np.all(rate > 0)
    # steps_per_s is the number of updates over the wall time between two logs
    np.testing.assert_allclose(rate, np.diff([0] + steps) / np.diff(np.concatenate([[0.0], elapsed])), rtol=1e-6)
    lines = capsys.readouterr().out.strip().splitlines()  # the default log_fn prints one line per log
    assert len(lines) == 4 and lines[0].startswith("step 1: finite=1, grad_norm=") and "steps/s" in lines[-1]


def test_fit_takes_seeded_batches_and_iterables():
    sample = lambda rng: {"x": rng.standard_normal((B, D)).astype(np.float32)}  # noqa: E731
    batch_fn = jt.seeded_batches(sample, seed=5)
    np.testing.assert_array_equal(batch_fn(3)["x"], batch_fn(3)["x"])  # a pure function of the step
    np.testing.assert_array_equal(batch_fn(3)["x"], sample(np.random.default_rng([5, 3]))["x"])
    assert not np.allclose(batch_fn(3)["x"], batch_fn(4)["x"])
    want, _ = jt.fit(fused_step, fresh(), batch_at, KEY, num_steps=4, steps_per_call=2)
    got, _ = jt.fit(fused_step, fresh(), (batch_at(s) for s in range(4)), KEY, num_steps=4, steps_per_call=2)
    chex.assert_trees_all_equal(got, want)
    with pytest.raises(ValueError, match="ran out at step 2"):
        jt.fit(step_nodonate, fresh(), [batch_at(0), batch_at(1)], KEY, num_steps=4)
    with pytest.raises(ValueError, match="batch_fn must be a function"):
        jt.fit(step_nodonate, fresh(), batch_at(0), KEY, num_steps=4)


# ----------------------------------------------------------------------------- real loss + MLP
@pytest.fixture(scope="module")
def mlp_setup():
    model = MLP(width=16, depth=1, time_features=8)
    x = jnp.zeros((8, 2))
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x, jnp.zeros((8,)))
    return model, params


def mlp_batch(step):
    k = jax.random.PRNGKey(500 + step)
    return {"x": np.asarray(jax.random.normal(k, (8, 2)) * 0.1 + jnp.array([2.0, -1.0]))}


def test_real_loss_mlp_learns(mlp_setup):
    model, params = mlp_setup
    loss = make_loss(model.apply, LinearScheduler())
    step = jt.make_train_step(loss)
    s = jt.create_train_state(jax.tree.map(jnp.copy, params), optax.adam(3e-3), ema_decay=0.9)
    losses = []
    for i in range(40):
        s, m = step(s, mlp_batch(i), KEY)
        losses.append(float(m["loss"]))
    # flow matching on a tight blob: the loss falls well below its initial value
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert int(s.step) == 40 and step._cache_size() == 1


def test_vmapped_scheduler_grid_equals_separate_runs(mlp_setup):
    """Hyper-parameter grid: the scheduler's exponent n is a vmapped pytree leaf."""
    model, params = mlp_setup
    ns = jnp.array([1.0, 2.0])
    tx = optax.adam(1e-3)
    states = jt.stack_trees([jt.create_train_state(params, tx)] * 2)
    keys = jax.random.split(KEY, 2)
    vstep = jt.make_vmapped_train_step(lambda sched: make_loss(model.apply, sched), donate=False)
    for i in range(2):
        states, _ = vstep(states, mlp_batch(i), keys, PolynomialScheduler(ns))
    # separate runs: one plain (un-vmapped) step per run, the scheduler passed as an argument
    single = jax.jit(lambda s, b, k, sched: jt.make_update_fn(make_loss(model.apply, sched))(s, b, k))
    for r, n in enumerate([1.0, 2.0]):
        s = jt.create_train_state(params, tx)
        for i in range(2):
            s, _ = single(s, mlp_batch(i), keys[r], PolynomialScheduler(jnp.float32(n)))
        assert_trees_close(jt.unstack_tree(states, r), s, rtol=1e-5, atol=1e-6)
    assert not np.allclose(jt.unstack_tree(states, 0).params["params"]["output"]["kernel"],
                           jt.unstack_tree(states, 1).params["params"]["output"]["kernel"])
