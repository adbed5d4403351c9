"""Discrete flow matching: kappa schedulers against autodiff, mixture-path marginals against
kappa_t (binomial tolerances), the probability velocity against the Kolmogorov forward
equation, exact-posterior sampling against factorized data (multinomial tolerances), the
cross-entropy loss against its formula and a trained logit table against the data entropy,
input errors, and a jitted sampler that does not retrace."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jflow import discrete as DF
from jflow import train as T
from jflow.grids import uniform_grid

V, D = 5, 4
LINEAR = DF.PolynomialKappa(1.0)
SQUARE = DF.PolynomialKappa(2.0)
# per-position data probabilities p^i(y), rows differ so a position mix-up shows
P_DATA = np.array(
    [
        [0.50, 0.20, 0.15, 0.10, 0.05],
        [0.05, 0.05, 0.10, 0.30, 0.50],
        [0.20, 0.20, 0.20, 0.20, 0.20],
        [0.00, 0.70, 0.00, 0.25, 0.05],
    ]
)


def _frequencies(x, vocab):
    """Per-position token frequencies (D, vocab) of integer samples (N, D)."""
    x = np.asarray(x)
    return np.stack([np.bincount(x[:, i], minlength=vocab) for i in range(x.shape[1])]) / x.shape[0]


def _sample_data(key, n):
    return jax.random.categorical(key, jnp.log(jnp.asarray(P_DATA, jnp.float32)), shape=(n, D)).astype(jnp.int32)


# ------------------------------------------------------------------------------ kappa


@pytest.mark.parametrize("n", [0.5, 1.0, 2.0, 3.5])
def test_polynomial_kappa_endpoints_and_derivative(n):
    kappa = DF.PolynomialKappa(n)
    np.testing.assert_allclose(kappa(jnp.array([0.0, 1.0])), [0.0, 1.0], atol=0)
    t = jnp.linspace(0.05, 0.95, 7)
    np.testing.assert_allclose(kappa(t), np.asarray(t) ** n, rtol=1e-6)
    want = jax.vmap(jax.grad(lambda s: kappa(s)))(t)
    np.testing.assert_allclose(kappa.derivative(t), want, rtol=1e-5)
    # a plain callable gets its derivative from jax.jvp
    value, d = DF.kappa_derivatives(lambda s: s**n, t)
    np.testing.assert_allclose(value, np.asarray(t) ** n, rtol=1e-6)
    np.testing.assert_allclose(d, n * np.asarray(t) ** (n - 1), rtol=1e-5)


def test_polynomial_kappa_is_a_pytree_usable_under_jit():
    f = jax.jit(lambda k, t: k.derivative(t))
    np.testing.assert_allclose(f(DF.PolynomialKappa(3.0), 0.5), 3 * 0.25, rtol=1e-6)
    assert DF.PolynomialKappa(2.0) == DF.PolynomialKappa(2.0)


# ------------------------------------------------------------------------------ path


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_mixture_path_marginals_follow_kappa(source):
    # x_t^i = x1^i with probability kappa_t, else x0^i. With the mask source x0 != x1 always;
    # with the uniform source x0 = x1 by chance 1/V of the time, so P(x_t = x1) = k + (1 - k)/V.
    # N tokens per time are i.i.d. Bernoulli: sigma = sqrt(q (1 - q) / N), tolerance 5 sigma.
    b, d = 2000, 50
    k_data, k_src, k_path = jax.random.split(jax.random.PRNGKey(0), 3)
    x1 = jax.random.randint(k_data, (b, d), 0, V)
    x0 = DF.sample_source(k_src, source, (b, d), V)
    times = np.array([0.0, 0.3, 0.7, 1.0])
    t = jnp.asarray(np.repeat(times, b // len(times)), jnp.float32)  # per-example times (B,)
    x_t = np.asarray(DF.sample_mixture_path(k_path, SQUARE, x0, x1, t))
    assert x_t.dtype == np.asarray(x1).dtype
    for j, s in enumerate(times):
        rows = slice(j * (b // 4), (j + 1) * (b // 4))
        same = x_t[rows] == np.asarray(x1)[rows]
        kappa = s**2
        q = kappa + (1 - kappa) / V if source == "uniform" else kappa
        sigma = np.sqrt(q * (1 - q) / same.size)
        assert abs(same.mean() - q) <= 5 * sigma + 1e-12, (s, same.mean(), q, sigma)
        # every token is either its source or its data token
        assert np.all(same | (x_t[rows] == np.asarray(x0)[rows]))
    # a scalar t works too
    x_half = DF.sample_mixture_path(k_path, LINEAR, x0, x1, 0.5)
    assert abs(float(jnp.mean(x_half == x1)) - (0.5 + (0.5 / V if source == "uniform" else 0.0))) < 0.02


def test_sources():
    masks = DF.sample_source(jax.random.PRNGKey(0), "mask", (3, 7), V)
    assert masks.shape == (3, 7) and jnp.issubdtype(masks.dtype, jnp.integer)
    assert np.all(np.asarray(masks) == V) and DF.mask_id(V) == V
    uni = np.asarray(DF.sample_source(jax.random.PRNGKey(0), "uniform", (20000,), V))
    freq = np.bincount(uni, minlength=V) / uni.size
    assert uni.min() >= 0 and uni.max() < V
    np.testing.assert_allclose(freq, 1 / V, atol=5 * np.sqrt(0.2 * 0.8 / uni.size))


# ------------------------------------------------------------------------------ velocity


def _marginal(t, source, kappa, p):
    """Closed-form marginal p_t of one position: mask source over V+1 states (mask last), uniform over V."""
    k = kappa(t)
    if source == "mask":
        return jnp.concatenate([k * p, (1 - k)[None]])
    return (1 - k) / p.shape[0] + k * p


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_probability_velocity_solves_the_kolmogorov_equation(source, x64):
    # d/dt p_t(y) = sum_c p_t(c) u_t(y | c) with u from the exact posterior, at several t.
    p = jnp.asarray(P_DATA[1])
    states = V + 1 if source == "mask" else V
    x = jnp.arange(states)[:, None]  # every state of one position, B = states, D = 1
    for t in (0.1, 0.45, 0.8):
        t = jnp.float64(t)
        post = jax.nn.softmax(DF.factorized_posterior_logits(p[None], x, t, SQUARE, source=source), axis=-1)
        u = DF.probability_velocity(post, x, t, SQUARE)[:, 0, :]  # (states, V): rates into data tokens
        if source == "mask":  # the rate into the mask state is minus the row's total
            u = jnp.concatenate([u, -u.sum(-1, keepdims=True)], axis=-1)
        np.testing.assert_allclose(u.sum(-1), 0.0, atol=1e-12)  # rows of a rate matrix
        pt = _marginal(t, source, SQUARE, p)
        want = jax.jacfwd(lambda s: _marginal(s, source, SQUARE, p))(t)
        np.testing.assert_allclose(pt @ u, want, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------ sampling


@pytest.mark.parametrize(
    "source, kappa, method",
    [
        ("mask", SQUARE, "euler"),  # masked tokens' posterior is p^i at every t: exact for any grid
        ("uniform", LINEAR, "euler"),  # Euler's kappa update t + h is exact for kappa_t = t
        ("uniform", SQUARE, "ancestral"),  # the ancestral step moves kappa exactly for any kappa
    ],
)
def test_exact_posterior_sampling_reproduces_factorized_data(source, kappa, method):
    # With the exact posterior of factorized data, every token is an independent chain whose law
    # stays the mixture (1 - k) p_source + k p^i; the last step (jump probability 1) lands on p^i.
    # Frequencies of N samples: sigma = sqrt(p (1 - p) / N) per entry, tolerance 5 sigma.
    n = 20000
    x0 = DF.sample_source(jax.random.PRNGKey(1), source, (n, D), V)
    post = lambda x, t: DF.factorized_posterior_logits(P_DATA, x, t, kappa, source=source)
    x1 = DF.discrete_euler(post, x0, uniform_grid(6), kappa, key=jax.random.PRNGKey(2), method=method)
    x1 = np.asarray(x1)
    assert x1.min() >= 0 and x1.max() < V  # no mask left
    freq = _frequencies(x1, V)
    sigma = np.sqrt(P_DATA * (1 - P_DATA) / n)
    np.testing.assert_array_less(np.abs(freq - P_DATA), 5 * sigma + 1e-12)


def test_euler_without_the_last_jump_would_leave_masks_and_trajectory_is_monotone():
    # a grid that stops before t = 1 leaves some masks; with the mask source a token, once
    # unmasked, never changes again (the posterior of an unmasked token is its own delta)
    n = 4000
    x0 = DF.sample_source(jax.random.PRNGKey(1), "mask", (n, D), V)
    post = lambda x, t: DF.factorized_posterior_logits(P_DATA, x, t, LINEAR, source="mask")
    path = np.asarray(DF.discrete_euler(post, x0, uniform_grid(5, 0.0, 0.8), LINEAR, key=jax.random.PRNGKey(3),
                                        trajectory=True))
    assert path.shape == (6, n, D)
    np.testing.assert_array_equal(path[0], np.asarray(x0))
    masked = path == V
    assert np.all(masked[1:] <= masked[:-1])  # masks only disappear
    unmasked_before = ~masked[:-1]
    np.testing.assert_array_equal(path[1:][unmasked_before], path[:-1][unmasked_before])
    # P(still masked at t) = 1 - kappa_t = 0.2 at t = 0.8: binomial 5 sigma
    frac = masked[-1].mean()
    assert abs(frac - 0.2) <= 5 * np.sqrt(0.2 * 0.8 / masked[-1].size)
    final = DF.discrete_euler(post, x0, uniform_grid(5, 0.0, 0.8), LINEAR, key=jax.random.PRNGKey(3))
    np.testing.assert_array_equal(np.asarray(final), path[-1])


@jax.jit
@chex.assert_max_traces(n=1)
def _jitted_sampler(key, probs):
    x0 = DF.sample_source(key, "mask", (512, D), V)
    post = lambda x, t, probs: DF.factorized_posterior_logits(probs, x, t, LINEAR, source="mask")
    return DF.discrete_euler(post, x0, uniform_grid(8), LINEAR, key=key, args=(probs,))


def test_sampler_jits_once_for_new_keys_and_new_posterior_values():
    probs = jnp.asarray(P_DATA, jnp.float32)
    a = _jitted_sampler(jax.random.PRNGKey(0), probs)
    b = _jitted_sampler(jax.random.PRNGKey(1), probs)
    c = _jitted_sampler(jax.random.PRNGKey(1), probs[::-1])  # new values through args: no retrace
    assert not np.array_equal(a, b) and not np.array_equal(b, c)
    np.testing.assert_array_equal(_jitted_sampler(jax.random.PRNGKey(0), probs), a)  # deterministic
    # jit equals eager
    x0 = DF.sample_source(jax.random.PRNGKey(0), "mask", (512, D), V)
    post = lambda x, t, probs: DF.factorized_posterior_logits(probs, x, t, LINEAR, source="mask")
    eager = DF.discrete_euler(post, x0, uniform_grid(8), LINEAR, key=jax.random.PRNGKey(0), args=(probs,))
    np.testing.assert_array_equal(eager, a)


# ------------------------------------------------------------------------------ loss


def _table_logits(params, x_t, t):
    """A model that ignores x_t and t: one row of logits per position."""
    return jnp.broadcast_to(params, x_t.shape + (V,))


def test_loss_equals_cross_entropy_formula():
    b = 16
    logits = jax.random.normal(jax.random.PRNGKey(0), (b, D, V)) * 2
    x1 = jax.random.randint(jax.random.PRNGKey(1), (b, D), 0, V)
    loss_fn = DF.make_discrete_loss(lambda params, x_t, t: params, LINEAR, vocab_size=V)
    value, metrics = loss_fn(logits, {"x": x1}, jax.random.PRNGKey(2))
    lg, tok = np.asarray(logits, np.float64), np.asarray(x1)
    picked = np.take_along_axis(lg, tok[..., None], -1)[..., 0]
    want = np.mean(np.log(np.exp(lg).sum(-1)) - picked)
    np.testing.assert_allclose(value, want, rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], np.mean(lg.argmax(-1) == tok), rtol=1e-6)


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_loss_follows_its_documented_key_contract(source):
    # a model that reads x_t: an embedding of the V + 1 input symbols; rebuild x_t from the
    # documented steps and compare with the cross-entropy written in numpy
    b = 32
    emb = jax.random.normal(jax.random.PRNGKey(0), (V + 1, V))
    model = lambda params, x_t, t: params[x_t] * (1 + t[:, None, None])
    x1 = jax.random.randint(jax.random.PRNGKey(1), (b, D), 0, V)
    key = jax.random.PRNGKey(2)
    value, _ = DF.make_discrete_loss(model, SQUARE, vocab_size=V, source=source)(emb, {"x": x1}, key)
    key_t, key_src, key_path = jax.random.split(key, 3)
    t = jax.random.uniform(key_t, (b,), jnp.float32)
    x0 = DF.sample_source(key_src, source, (b, D), V)
    x_t = np.asarray(DF.sample_mixture_path(key_path, SQUARE, x0, x1, t))
    lg = np.asarray(emb, np.float64)[x_t] * (1 + np.asarray(t, np.float64)[:, None, None])
    picked = np.take_along_axis(lg, np.asarray(x1)[..., None], -1)[..., 0]
    np.testing.assert_allclose(value, np.mean(np.log(np.exp(lg).sum(-1)) - picked), rtol=1e-5)


def _copy_or_table(params, x_t, t):
    """Exact-posterior family for the mask source: a masked token gets the position's logits,
    an unmasked one (almost) its own delta."""
    table = jnp.broadcast_to(params, x_t.shape + (V,))
    copy = 30.0 * jax.nn.one_hot(x_t, V)  # the mask id V gives an all-zero row, unused
    return jnp.where((x_t == V)[..., None], table, copy)


def test_training_a_logit_table_reaches_the_entropy_floor():
    # mask source, kappa_t = t, t ~ U[0, 1): a fraction E[1 - kappa_t] = 1/2 of the tokens is
    # masked; the best loss is 1/2 * mean_i H(p^i) (the unmasked ones are copied at ~0 cost),
    # reached when softmax(table) = p_data.
    p = np.where(P_DATA > 0, P_DATA, 1e-12)
    entropy = -np.sum(P_DATA * np.log(p), -1)  # (D,)
    loss_fn = DF.make_discrete_loss(_copy_or_table, LINEAR, vocab_size=V, source="mask")
    state = T.create_train_state(jnp.zeros((D, V)), optax.adam(optax.cosine_decay_schedule(0.2, 200)))
    step = T.make_train_step(loss_fn)
    key = jax.random.PRNGKey(0)
    for i in range(200):
        batch = {"x": _sample_data(jax.random.fold_in(jax.random.PRNGKey(1), i), 512)}
        state, _ = step(state, batch, key)
    q = np.asarray(jax.nn.softmax(state.params, -1), np.float64)
    cross = -np.sum(P_DATA * np.log(q), -1)  # H(p^i, q^i) = H(p^i) + KL(p^i || q^i)
    np.testing.assert_array_less(cross - entropy, 0.01)  # KL per position in nats
    # the loss on fresh data estimates 1/2 * mean_i H(p^i, q^i)
    values = [float(loss_fn(state.params, {"x": _sample_data(jax.random.PRNGKey(100 + s), 4096)},
                            jax.random.PRNGKey(200 + s))[0]) for s in range(4)]
    assert abs(np.mean(values) - 0.5 * cross.mean()) < 0.02, (np.mean(values), 0.5 * entropy.mean())


# ------------------------------------------------------------------------------ errors


def test_bad_inputs_raise_helpful_errors():
    key = jax.random.PRNGKey(0)
    x1 = jnp.zeros((4, D), jnp.int32)
    loss_fn = DF.make_discrete_loss(_table_logits, LINEAR, vocab_size=V)
    params = jnp.zeros((D, V))
    with pytest.raises(ValueError, match="integer token ids.*astype"):
        loss_fn(params, {"x": x1.astype(jnp.float32)}, key)
    with pytest.raises(ValueError, match=r"token ids in \[0, 5\).*\[0, 5\]"):
        loss_fn(params, {"x": x1.at[0, 0].set(V)}, key)
    with pytest.raises(ValueError, match="dict with the data tokens under 'x'"):
        loss_fn(params, x1, key)
    with pytest.raises(ValueError, match=r"logits of shape \(B, D, V\) = \(4, 4, 5\).*mask id"):
        DF.make_discrete_loss(lambda p_, x, t: jnp.zeros(x.shape + (V + 1,)), LINEAR, vocab_size=V)(params, {"x": x1}, key)
    with pytest.raises(ValueError, match="unknown source 'gaussian'; choose one of"):
        DF.make_discrete_loss(_table_logits, LINEAR, vocab_size=V, source="gaussian")
    with pytest.raises(ValueError, match="unknown source"):
        DF.sample_source(key, "masked", (2, 3), V)
    with pytest.raises(ValueError, match="t_max"):
        DF.make_discrete_loss(_table_logits, LINEAR, vocab_size=V, t_max=1.5)
    with pytest.raises(ValueError, match="vocab_size must be a Python int >= 1"):
        DF.make_discrete_loss(_table_logits, LINEAR, vocab_size=0)
    with pytest.raises(ValueError, match=r"t must lie in \[0.0, 1.0\]"):
        DF.sample_mixture_path(key, LINEAR, x1, x1, jnp.array([0.5, 1.5, 0.1, 0.2]))
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        DF.sample_mixture_path(key, LINEAR, x1, x1, jnp.full((3,), 0.5))
    with pytest.raises(ValueError, match="integer token ids"):
        DF.sample_mixture_path(key, LINEAR, x1 * 1.0, x1, 0.5)
    with pytest.raises(ValueError, match="finite exponent > 0"):
        DF.PolynomialKappa(0.0)
    with pytest.raises(ValueError, match="finite exponent > 0"):
        DF.PolynomialKappa(-1.0)
    post = lambda x, t: DF.factorized_posterior_logits(P_DATA, x, t, LINEAR, source="mask")
    x0 = DF.sample_source(key, "mask", (4, D), V)
    with pytest.raises(ValueError, match="strictly increasing"):
        DF.discrete_euler(post, x0, jnp.array([0.0, 0.5, 0.5, 1.0]), LINEAR, key=key)
    with pytest.raises(ValueError, match=r"ts must lie in \[0.0, 1.0\]"):
        DF.discrete_euler(post, x0, jnp.array([0.0, 0.5, 1.2]), LINEAR, key=key)
    with pytest.raises(ValueError, match="infinite at ts"):
        DF.discrete_euler(post, x0, uniform_grid(4), DF.PolynomialKappa(0.5), key=key)
    DF.discrete_euler(post, x0, uniform_grid(4), DF.PolynomialKappa(0.5), key=key, method="ancestral")  # fine
    with pytest.raises(ValueError, match=r"logits of shape x.shape \+ \(V,\)"):
        DF.discrete_euler(lambda x, t: jnp.zeros((4, V)), x0, uniform_grid(4), LINEAR, key=key)
    with pytest.raises(ValueError, match=r"token ids in \[0, 6\)"):
        DF.discrete_euler(post, x0 + 1, uniform_grid(4), LINEAR, key=key)
    with pytest.raises(ValueError, match="unknown discrete sampling method"):
        DF.discrete_euler(post, x0, uniform_grid(4), LINEAR, key=key, method="heun")


def test_narrow_token_dtypes_leave_room_for_the_mask_id():
    # uint8 data with V = 256: the mask id 256 does not fit in uint8; the loss works in int32.
    # The model is uniform on a masked token (loss log 256) and copies an unmasked one (loss ~0);
    # a mask wrapped around to token 0 would be copied as 0 and cost ~30 per token.
    x1 = jnp.full((8, 3), 255, jnp.uint8)
    model = lambda p_, x, t: jnp.where((x == 256)[..., None], 0.0, 30.0 * jax.nn.one_hot(x, 256))
    value, _ = DF.make_discrete_loss(model, LINEAR, vocab_size=256)(None, {"x": x1}, jax.random.PRNGKey(0))
    assert 0.5 < float(value) <= np.log(256) + 1e-3
    with pytest.raises(ValueError, match="cannot hold the mask id 256"):
        DF.sample_source(jax.random.PRNGKey(0), "mask", (2, 3), 256, dtype=jnp.uint8)
