"""Tests of jflow.models: shapes, parameter counts, conditioning, jit, gradients, training, dtypes, errors.

Compile time dominates on CPU, so each model family is initialised once (module fixture) and
each check reuses module-level jitted functions. Behavioural checks use tiny configurations;
the named configurations are only counted, through ``jax.eval_shape`` (no initialisation).
"""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jflow.models import (
    CONFIGS,
    DiT,
    MLP,
    UNet,
    ClassEmbedding,
    GaussianFourierProjection,
    TimeEmbedding,
    count_params,
    get_config,
    get_model,
    sinusoidal_embedding,
)

NUM_CLASSES = 3
BATCH = 3

# zero_init_output only changes initialisation, so one module per family serves both the
# "fresh model predicts zero" check and (with perturbed parameters) every other check.
TINY = {
    "mlp": MLP(width=16, depth=2, time_features=8, num_classes=NUM_CLASSES, zero_init_output=True),
    "unet": UNet(
        base_channels=4,
        channel_mults=(1, 2),
        num_res_blocks=1,
        attention_levels=(1,),
        mid_attention=False,
        num_heads=2,
        norm_groups=2,
        num_classes=NUM_CLASSES,
        zero_init_output=True,
    ),
    "dit": DiT(
        patch_size=2, hidden_size=16, depth=1, num_heads=2, time_features=8, num_classes=NUM_CLASSES,
        zero_init_output=True,
    ),
}
BASE_SHAPE = {"mlp": (2,), "unet": (8, 8, 1), "dit": (8, 8, 1)}
SHAPES = {
    "mlp": [(2,), (5,)],
    "unet": [(8, 8, 1), (28, 28, 1), (32, 32, 3)],
    "dit": [(8, 8, 1), (28, 28, 1), (32, 32, 3)],
}
FAMILIES = sorted(TINY)

# Parameter counts of the named configurations at their input shapes. Hard-coded on purpose:
# any change of architecture (layer added, width changed) must show up here.
PARAM_COUNTS = {
    "mlp_2d": 290946,
    "unet_digits": 191073,
    "unet_mnist": 1192641,
    "unet_cifar10": 38312835,
    "dit_tiny": 1272324,
    "dit_s2": 32475660,
    "dit_b2": 129537036,
}

FORWARD = {name: jax.jit(model.apply) for name, model in TINY.items()}


def _inputs(shape, seed=0):
    kx, kt = jax.random.split(jax.random.PRNGKey(seed))
    x = jax.random.normal(kx, (BATCH,) + shape)
    t = jax.random.uniform(kt, (BATCH,))
    y = jnp.arange(BATCH) % NUM_CLASSES
    return x, t, y


def _perturb(params, seed=1, scale=0.1):
    """Add N(0, scale^2) to every parameter, so zero-initialised layers are active."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(seed)
    # in numpy: eager jnp ops would compile one kernel per parameter shape
    noisy = [jnp.asarray(np.asarray(leaf) + scale * rng.standard_normal(leaf.shape).astype(np.float32)) for leaf in leaves]
    return jax.tree_util.tree_unflatten(treedef, noisy)


@pytest.fixture(scope="module")
def fresh():
    """Real initialisation of each tiny model (an rbg key: its initialisers compile fast on CPU)."""
    out = {}
    for name, model in TINY.items():
        x, t, y = _inputs(BASE_SHAPE[name])
        out[name] = jax.jit(model.init)(jax.random.key(0, impl="unsafe_rbg"), x, t, y)
    return out


@pytest.fixture(scope="module")
def trained(fresh):
    """Perturbed parameters: every layer (including zero-initialised ones) influences the output."""
    return {name: _perturb(params) for name, params in fresh.items()}


# ----------------------------------------------------------------------------- embeddings


def test_sinusoidal_embedding_closed_form():
    t = np.array([0.0, 0.25, 1.0])
    dim, scale, period = 8, 1000.0, 10_000.0
    emb = np.asarray(sinusoidal_embedding(jnp.asarray(t, jnp.float32), dim))
    expected = np.zeros((3, dim))
    for k in range(dim // 2):
        omega = period ** (-k / (dim // 2))
        expected[:, k] = np.cos(scale * t * omega)
        expected[:, k + dim // 2] = np.sin(scale * t * omega)
    np.testing.assert_allclose(emb, expected, atol=2e-4)
    with pytest.raises(ValueError, match="even"):
        sinusoidal_embedding(t, 7)


def test_fourier_projection_fixed_and_learnable():
    t = jnp.array([0.0, 0.3, 1.0])
    fixed = GaussianFourierProjection(6, scale=2.0, seed=3)
    variables = fixed.init(jax.random.PRNGKey(0), t)
    assert count_params(variables) == 0  # fixed frequencies are a constant, not a parameter
    w = 2.0 * np.asarray(jax.random.normal(jax.random.PRNGKey(3), (3,)))
    args = 2 * np.pi * np.asarray(t)[:, None] * w
    np.testing.assert_allclose(fixed.apply(variables, t), np.concatenate([np.sin(args), np.cos(args)], 1), atol=1e-5)

    learn = GaussianFourierProjection(6, scale=2.0, learnable=True)
    params = learn.init(jax.random.PRNGKey(0), t)
    w = np.asarray(params["params"]["frequencies"])
    assert w.shape == (3,)
    args = 2 * np.pi * np.asarray(t)[:, None] * w
    np.testing.assert_allclose(learn.apply(params, t), np.concatenate([np.sin(args), np.cos(args)], 1), atol=1e-5)
    grad = jax.grad(lambda p: jnp.sum(learn.apply(p, t) ** 2 * jnp.arange(6)))(params)
    assert np.all(np.abs(grad["params"]["frequencies"]) > 0)


def test_time_embedding_options():
    t = jnp.array([0.0, 1.0])
    emb = TimeEmbedding(8, kind="fourier", learnable_frequencies=True)
    params = emb.init(jax.random.PRNGKey(0), t)
    assert "frequencies" in params["params"]["fourier"]
    chex.assert_shape(emb.apply(params, t), (2, 8))
    with pytest.raises(ValueError, match="time_embedding='fourier'"):
        TimeEmbedding(8, learnable_frequencies=True).init(jax.random.PRNGKey(0), t)
    with pytest.raises(ValueError, match="unknown time embedding kind"):
        TimeEmbedding(8, kind="learned").init(jax.random.PRNGKey(0), t)


def test_class_embedding_reserves_null_row():
    emb = ClassEmbedding(num_classes=4, dim=3)
    assert emb.null_label == 4
    params = emb.init(jax.random.PRNGKey(0), jnp.array([0]))
    table = params["params"]["table"]["embedding"]
    assert table.shape == (5, 3)
    np.testing.assert_array_equal(emb.apply(params, jnp.array([4, 1])), table[jnp.array([4, 1])])


def test_class_embedding_in_range_equals_plain_table_out_of_range_is_loud():
    """In-range labels (the null label included) give exactly what ``flax.linen.Embed`` gave
    before; out-of-range labels raise when concrete and embed as NaN under jit, where
    ``Embed``'s ``jnp.take`` would wrap ``-1`` onto the null row."""
    emb = ClassEmbedding(num_classes=4, dim=3)
    params = emb.init(jax.random.PRNGKey(0), jnp.array([0]))
    plain = nn.Embed(5, 3, embedding_init=nn.initializers.normal(1.0))
    labels = jnp.array([4, 0, 3, 1, 2, 4])
    np.testing.assert_array_equal(
        emb.apply(params, labels), plain.apply({"params": params["params"]["table"]}, labels)
    )
    table = np.asarray(params["params"]["table"]["embedding"])
    out = np.asarray(jax.jit(emb.apply)(params, jnp.array([-1, 5, 2, 2**31 - 1, 4], jnp.int32)))
    assert np.isnan(out[[0, 1, 3]]).all()
    np.testing.assert_array_equal(out[[2, 4]], table[[2, 4]])
    # an unsigned label above the table is caught as well
    out = np.asarray(jax.jit(emb.apply)(params, jnp.array([255, 1], jnp.uint8)))
    assert np.isnan(out[0]).all() and np.array_equal(out[1], table[1])
    with pytest.raises(ValueError, match=r"classes 0\.\.3 or 4, the null label .* got values in \[-1, 2\]"):
        emb.apply(params, jnp.array([2, -1]))
    with pytest.raises(ValueError, match="integer labels"):
        emb.apply(params, jnp.array([True, False]))


# ----------------------------------------------------------------------------- models


@pytest.mark.parametrize("name,shape", [(n, s) for n in FAMILIES for s in SHAPES[n]])
def test_output_shape_equals_input_shape(name, shape):
    """Traced abstractly (``jax.eval_shape``: every layer's shape logic runs, nothing compiles);
    the base shape also runs for real in the tests below."""
    model = TINY[name]
    x, t, y = _inputs(shape)
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, t, y)
    out = jax.eval_shape(model.apply, abstract, x, t, y)
    assert out.shape == x.shape and out.dtype == x.dtype


def test_named_configuration_parameter_counts():
    counts = {}
    for name, cfg in CONFIGS.items():
        model = get_model(name)
        x = jax.ShapeDtypeStruct((1,) + cfg.input_shape, jnp.float32)
        abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, jnp.zeros((1,)), None)
        counts[name] = count_params(abstract["params"])
    assert counts == PARAM_COUNTS
    assert 0.8e6 <= counts["unet_mnist"] <= 1.5e6
    assert 35e6 <= counts["unet_cifar10"] <= 60e6


def test_count_params_counts_scalars():
    assert count_params({"a": jnp.zeros((2, 3)), "b": [jnp.zeros(4), jnp.zeros(())]}) == 11


@pytest.mark.parametrize("name", FAMILIES)
def test_fresh_zero_init_model_predicts_zero(name, fresh):
    x, t, y = _inputs(BASE_SHAPE[name])
    np.testing.assert_array_equal(FORWARD[name](fresh[name], x, t, y), np.zeros(x.shape))


def test_default_init_predicts_nonzero():
    model = TINY["mlp"].clone(zero_init_output=False)
    x, t, y = _inputs((2,))
    params = jax.jit(model.init)(jax.random.key(0, impl="unsafe_rbg"), x, t, y)
    assert np.all(FORWARD["mlp"](params, x, t, y) != 0)


@pytest.mark.parametrize("name", FAMILIES)
def test_jit_equals_no_jit(name, trained):
    model, params = TINY[name], trained[name]
    x, t, y = _inputs(BASE_SHAPE[name])
    np.testing.assert_allclose(FORWARD[name](params, x, t, y), model.apply(params, x, t, y), rtol=1e-4, atol=1e-5)


def test_jit_does_not_retrace_for_new_values(trained):
    chex.clear_trace_counter()
    model, params = TINY["mlp"], trained["mlp"]

    @jax.jit
    @chex.assert_max_traces(n=1)
    def fwd(p, x, t, y):
        return model.apply(p, x, t, y)

    x, t, y = _inputs((2,))
    fwd(params, x, t, y)
    fwd(_perturb(params, seed=2), -x, t * 0.5, (y + 1) % NUM_CLASSES)


@pytest.mark.parametrize("name", FAMILIES)
def test_label_changes_output_and_null_label(name, trained):
    model, params, fwd = TINY[name], trained[name], FORWARD[name]
    x, t, _ = _inputs(BASE_SHAPE[name])
    out0 = fwd(params, x, t, jnp.zeros(BATCH, jnp.int32))
    out1 = fwd(params, x, t, jnp.ones(BATCH, jnp.int32))
    assert np.min(np.abs(out0 - out1).reshape(BATCH, -1).max(axis=1)) > 1e-4
    assert model.null_label == NUM_CLASSES
    null = fwd(params, x, t, jnp.full(BATCH, NUM_CLASSES, jnp.int32))
    assert np.max(np.abs(null - out0)) > 1e-4
    # y=None means the null label for every example (eager: no new compilation)
    np.testing.assert_allclose(model.apply(params, x, t, None), null, rtol=1e-4, atol=1e-5)
    # labels act per example: example 0 with label 1 matches the all-ones call
    mixed = fwd(params, x, t, jnp.array([1, 0, 0], jnp.int32))
    np.testing.assert_allclose(mixed[0], out1[0], atol=1e-5)
    np.testing.assert_allclose(mixed[1:], out0[1:], atol=1e-5)
    with pytest.raises(ValueError, match="null label"):
        model.apply(params, x, t, jnp.full(BATCH, NUM_CLASSES + 1))
    with pytest.raises(ValueError, match=rf"classes 0\.\.{NUM_CLASSES - 1} or {NUM_CLASSES}.*\[-1, 1\]"):
        model.apply(params, x, t, jnp.array([0, -1, 1]))
    with pytest.raises(ValueError, match="unconditional"):
        model.clone(num_classes=None).apply(params, x, t, jnp.zeros(BATCH, jnp.int32))


@pytest.mark.parametrize("name", FAMILIES)
def test_jitted_out_of_range_labels_give_nan_outputs(name, trained):
    """Under jit nothing can raise: a label above the null label or below 0 makes exactly
    that example's output NaN (so a train step's NaN guard stops); the others are unchanged."""
    params, fwd = trained[name], FORWARD[name]
    x, t, _ = _inputs(BASE_SHAPE[name])
    ref = np.asarray(fwd(params, x, t, jnp.zeros(BATCH, jnp.int32)))
    out = np.asarray(fwd(params, x, t, jnp.array([0, NUM_CLASSES + 1, -1], jnp.int32)))
    assert np.isnan(out[1:]).all()
    np.testing.assert_array_equal(out[0], ref[0])


@pytest.mark.parametrize("name", FAMILIES)
def test_scalar_t_equals_broadcast_t(name, trained):
    model, params = TINY[name], trained[name]
    x, _, y = _inputs(BASE_SHAPE[name])
    vector = FORWARD[name](params, x, jnp.full((BATCH,), 0.3), y)
    # eager call (scalar t, scalar label): after broadcasting, the shapes are those already run
    np.testing.assert_allclose(
        model.apply(params, x, 0.3, 2),
        FORWARD[name](params, x, jnp.full((BATCH,), 0.3), jnp.full(BATCH, 2)),
        rtol=1e-4,
        atol=1e-5,
    )
    # t matters: a different time gives a different output
    assert np.max(np.abs(vector - FORWARD[name](params, x, jnp.full((BATCH,), 0.7), y))) > 1e-4


def _adam_step(model):
    """Jitted: loss, all gradients finite, gradient norm, and the parameters after one Adam step."""
    opt = optax.adam(1e-3)

    def loss(params, x, t, y, target):  # plain regression to a fixed random target
        return jnp.mean((model.apply(params, x, t, y) - target) ** 2)

    @jax.jit
    def step(params, x, t, y, target):
        value, grads = jax.value_and_grad(loss)(params, x, t, y, target)
        updates, _ = opt.update(grads, opt.init(params), params)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)]))
        return value, finite, optax.tree.norm(grads), optax.apply_updates(params, updates)

    return step


@pytest.mark.parametrize("name", FAMILIES)
def test_gradient_finite_at_endpoints_and_adam_step_reduces_loss(name, trained):
    x, _, y = _inputs(BASE_SHAPE[name])
    target = jax.random.normal(jax.random.PRNGKey(7), x.shape)
    step = _adam_step(TINY[name])
    # t = 0 (noise end) for the whole batch, t = 1 (data end), and a mixed batch
    for t in (jnp.zeros(BATCH), jnp.ones(BATCH), jnp.array([0.0, 1.0, 0.5])):
        loss0, finite, grad_norm, new_params = step(trained[name], x, t, y, target)
        assert bool(finite) and float(grad_norm) > 0
        np.testing.assert_allclose(loss0, np.mean((FORWARD[name](trained[name], x, t, y) - target) ** 2), rtol=1e-4)
        loss1 = np.mean((FORWARD[name](new_params, x, t, y) - target) ** 2)
        assert loss1 < float(loss0)


@pytest.mark.parametrize("name", FAMILIES)
def test_bfloat16_compute_float32_params(name, trained):
    model = TINY[name].clone(dtype=jnp.bfloat16)
    x, t, y = _inputs(BASE_SHAPE[name])
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, t, y)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(abstract)} == {jnp.dtype(jnp.float32)}
    params = trained[name]
    assert "bf16" in str(jax.make_jaxpr(model.apply)(params, x, t, y))
    out = jax.jit(model.apply)(params, x, t, y)
    assert out.dtype == jnp.float32
    ref = FORWARD[name](params, x, t, y)
    assert np.max(np.abs(out - ref)) <= 0.05 * np.max(np.abs(ref)) + 1e-3


def test_vmap_per_example_equals_batch(trained):
    """No state couples examples (no BatchNorm): vmap of B=1 calls == one batched call."""
    for name in ("mlp", "dit"):
        model, params = TINY[name], trained[name]
        x, t, y = _inputs(BASE_SHAPE[name])

        def single(xi, ti, yi):
            return model.apply(params, xi[None], ti, yi[None])[0]

        per_example = jax.jit(jax.vmap(single))(x, t, y)
        np.testing.assert_allclose(per_example, FORWARD[name](params, x, t, y), rtol=1e-4, atol=1e-5)


def test_sharded_batch_equals_single_device(trained):
    model, params = TINY["mlp"], trained["mlp"]
    n = jax.device_count()
    kx, kt = jax.random.split(jax.random.PRNGKey(3))
    x, t = jax.random.normal(kx, (2 * n, 2)), jax.random.uniform(kt, (2 * n,))
    y = jnp.arange(2 * n) % NUM_CLASSES
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    out = jax.jit(model.apply)(params, *(jax.device_put(a, batch) for a in (x, t, y)))
    assert out.sharding.is_equivalent_to(batch, out.ndim)
    np.testing.assert_allclose(out, FORWARD["mlp"](params, x, t, y), rtol=1e-5, atol=1e-6)


def test_dropout_only_in_training():
    model = MLP(width=16, depth=2, time_features=8, dropout=0.5)
    x, t, _ = _inputs((2,))
    params = jax.jit(model.init)(jax.random.key(0, impl="unsafe_rbg"), x, t)
    eval_out = model.apply(params, x, t)
    np.testing.assert_array_equal(eval_out, model.apply(params, x, t, train=False))
    a = model.apply(params, x, t, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    b = model.apply(params, x, t, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
    assert np.max(np.abs(a - b)) > 1e-4 and np.max(np.abs(a - eval_out)) > 1e-4


def test_bad_inputs_raise_clear_errors(trained):
    unet, dit, mlp = TINY["unet"], TINY["dit"], TINY["mlp"]
    x, t, y = _inputs((8, 8, 1))
    with pytest.raises(ValueError, match=r"9x9 is not divisible by the downsampling factor 2"):
        unet.apply(trained["unet"], jnp.zeros((BATCH, 9, 9, 1)), t, y)
    with pytest.raises(ValueError, match=r"10x9 is not divisible by patch_size=2"):
        dit.apply(trained["dit"], jnp.zeros((BATCH, 10, 9, 1)), t, y)
    with pytest.raises(ValueError, match=r"x must have shape \(B, H, W, C\)"):
        unet.apply(trained["unet"], jnp.zeros((8, 8, 1)), t, y)
    with pytest.raises(ValueError, match=r"x must have shape \(B, d\)"):
        mlp.apply(trained["mlp"], jnp.zeros((BATCH, 2, 1)), t, y)
    with pytest.raises(ValueError, match="floating"):
        mlp.apply(trained["mlp"], jnp.zeros((BATCH, 2), jnp.int32), t, y)
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(B,\)"):
        mlp.apply(trained["mlp"], jnp.zeros((BATCH, 2)), jnp.zeros((BATCH + 1,)), y)
    with pytest.raises(ValueError, match=r"must lie in \[0.0, 1.0\]"):
        mlp.apply(trained["mlp"], jnp.zeros((BATCH, 2)), 1.5, y)
    with pytest.raises(ValueError, match="integer labels"):
        mlp.apply(trained["mlp"], jnp.zeros((BATCH, 2)), t, y.astype(jnp.float32))
    with pytest.raises(ValueError, match=r"y must be None, a scalar or have shape \(B,\)"):
        mlp.apply(trained["mlp"], jnp.zeros((BATCH, 2)), t, jnp.zeros((BATCH, 1), jnp.int32))
    with pytest.raises(ValueError, match=r"y must be None, a scalar or have shape \(B,\) = \(3,\)"):
        mlp.apply(trained["mlp"], jnp.zeros((BATCH, 2)), t, jnp.zeros((BATCH + 1,), jnp.int32))
    with pytest.raises(ValueError, match="integer labels"):
        mlp.apply(trained["mlp"], jnp.zeros((BATCH, 2)), t, y > 0)
    with pytest.raises(ValueError, match="norm_groups=3 must divide"):
        unet.clone(norm_groups=3).init(jax.random.PRNGKey(0), x, t, y)
    with pytest.raises(ValueError, match="attention_levels"):
        unet.clone(attention_levels=(2,)).init(jax.random.PRNGKey(0), x, t, y)
    with pytest.raises(ValueError, match="unknown activation"):
        MLP(activation="sigmoidish").init(jax.random.PRNGKey(0), jnp.zeros((1, 2)), 0.5)


def test_get_model_factory():
    model = get_model("unet_mnist", dropout=0.0)
    assert isinstance(model, UNet) and model.dropout == 0.0 and model.base_channels == 32
    assert model.downsampling_factor == 4
    assert isinstance(get_model("dit", depth=2), DiT) and get_model("dit", depth=2).depth == 2
    assert isinstance(get_model("mlp"), MLP)
    assert get_config("dit_s2").input_shape == (32, 32, 3)
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        get_model("resnet")
    with pytest.raises(ValueError, match=r"UNet has no option\(s\) \['width'\]"):
        get_model("unet_cifar10", width=3)
    with pytest.raises(ValueError, match="unknown model configuration"):
        get_config("unet_imagenet")


def test_classifier_logits_features_and_shape_error():
    from jflow.models import Classifier

    model = Classifier(num_classes=3, channels=(4,), features=5)
    x = jnp.linspace(-1.0, 1.0, 2 * 8 * 8).reshape(2, 8, 8, 1)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x)
    logits, feats = model.apply(params, x, return_features=True)
    assert logits.shape == (2, 3) and feats.shape == (2, 5)
    # The logits are the last dense layer applied to the returned features.
    dense = params["params"]["Dense_1"]
    np.testing.assert_allclose(logits, feats @ dense["kernel"] + dense["bias"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.apply(params, x), logits)
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        model.apply(params, x[0])
