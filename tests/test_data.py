"""Tests of jflow.data: toy samplers (means, supports, labels), image pipeline, offline digits."""
import gc
import socket
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jflow.data import (
    ArraySource,
    Checkerboard,
    Circles,
    DatasetNotPreparedError,
    ImageLoader,
    Moons,
    Spirals,
    SwissRoll,
    eight_gaussians,
    flow_matching_checkerboard,
    flow_matching_moons,
    get_toy,
    image_source,
    load_digits,
    pad_images,
    preprocess_images,
    resize_images,
    symmetric_mixture,
    tfds_source,
    torchcfm_eight_gaussians,
    torchcfm_moons,
)
from jflow.marginals import GaussianMixture

N = 4000  # samples for statistical checks: the standard error of a mean of unit-scale data is ~0.016


def _key(i=0):
    return jax.random.PRNGKey(i)


# --------------------------------------------------------------------------- toy distributions


def test_symmetric_mixture_is_the_lab_mixture():
    gm = symmetric_mixture()
    assert isinstance(gm, GaussianMixture)
    angles = 2 * np.pi * np.arange(5) / 5
    np.testing.assert_allclose(gm.means, 10.0 * np.stack([np.cos(angles), np.sin(angles)], 1), atol=1e-5)
    np.testing.assert_allclose(gm.stds, np.ones(5))
    np.testing.assert_allclose(gm.weights, np.full(5, 0.2))
    x, y = gm.sample_with_labels(_key(), N)
    chex.assert_shape(x, (N, 2))
    resid = np.asarray(x - gm.means[y])  # each sample minus the mean of its labelled component
    np.testing.assert_allclose(resid.mean(0), 0.0, atol=0.06)
    np.testing.assert_allclose(resid.std(0), 1.0, atol=0.05)
    np.testing.assert_allclose(np.bincount(np.asarray(y), minlength=5) / N, 0.2, atol=0.03)
    np.testing.assert_allclose(np.asarray(x).mean(0), 0.0, atol=0.35)  # mean 0, data std ~7


def test_eight_gaussians_modes():
    gm = eight_gaussians(radius=3.0, std=0.1)
    assert isinstance(gm, GaussianMixture) and gm.means.shape == (8, 2)
    np.testing.assert_allclose(np.linalg.norm(gm.means, axis=1), 3.0, rtol=1e-6)
    angles = np.mod(np.arctan2(gm.means[:, 1], gm.means[:, 0]), 2 * np.pi)
    np.testing.assert_allclose(np.sort(angles), np.pi / 4 * np.arange(8), atol=1e-5)
    x, y = gm.sample_with_labels(_key(1), 1000)
    nearest = np.argmin(np.linalg.norm(np.asarray(x)[:, None] - np.asarray(gm.means)[None], axis=-1), axis=1)
    np.testing.assert_array_equal(nearest, np.asarray(y))  # std 0.1 << spacing 2.3: labels are the modes


def test_moons_support_labels_and_mean():
    x, y = Moons(noise=0.0, scale=2.0).sample_with_labels(_key(), N)
    x, y = np.asarray(x) / 2.0, np.asarray(y)
    up, low = x[y == 0], x[y == 1]
    np.testing.assert_allclose(np.linalg.norm(up - [-0.5, -0.25], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(low - [0.5, 0.25], axis=1), 1.0, atol=1e-5)
    assert up[:, 1].min() >= -0.25 - 1e-6 and low[:, 1].max() <= 0.25 + 1e-6
    assert abs(y.mean() - 0.5) < 0.03
    noisy = np.asarray(Moons().sample(_key(1), N))
    np.testing.assert_allclose(noisy.mean(0), 0.0, atol=0.04)


def test_circles_radii_and_labels():
    x, y = Circles(factor=0.3, noise=0.0).sample_with_labels(_key(), N)
    r, y = np.linalg.norm(np.asarray(x), axis=1), np.asarray(y)
    np.testing.assert_allclose(r[y == 0], 1.0, rtol=1e-5)
    np.testing.assert_allclose(r[y == 1], 0.3, rtol=1e-5)
    assert abs(y.mean() - 0.5) < 0.03
    np.testing.assert_allclose(np.asarray(x).mean(0), 0.0, atol=0.04)


def test_checkerboard_cells():
    x = np.asarray(Checkerboard(num_cells=4, scale=2.0).sample(_key(), N))
    assert np.all(np.abs(x) <= 2.0)
    col, row = np.floor((x + 2.0) / 1.0).astype(int).T  # 4 cells of side 1 on [-2, 2]
    assert np.all((row + col) % 2 == 0)  # only black cells, bottom-left is black
    counts = np.bincount(4 * row + col, minlength=16)
    black = [4 * i + j for i in range(4) for j in range(4) if (i + j) % 2 == 0]
    np.testing.assert_allclose(counts[black] / N, 1 / 8, atol=0.02)  # uniform over the 8 black cells
    np.testing.assert_allclose(x.mean(0), 0.0, atol=0.06)
    with pytest.raises(ValueError, match="even"):
        Checkerboard(num_cells=3)


def test_spirals_arms():
    sp = Spirals(n_arms=3, turns=1.5, noise=0.0, scale=2.0)
    x, y = sp.sample_with_labels(_key(), N)
    x, y = np.asarray(x, np.float64) / 2.0, np.asarray(y)
    r = np.linalg.norm(x, axis=1)
    assert r.max() <= 1.0 + 1e-6
    phase = np.arctan2(x[:, 1], x[:, 0]) - 2 * np.pi * (1.5 * r + y / 3)
    np.testing.assert_allclose(np.cos(phase), 1.0, atol=1e-4)  # angle = 2 pi (turns r + k / n_arms)
    np.testing.assert_allclose(np.bincount(y, minlength=3) / N, 1 / 3, atol=0.03)
    assert sp.num_classes == 3
    np.testing.assert_allclose(np.asarray(Spirals().sample(_key(2), N)).mean(0), 0.0, atol=0.05)


def test_swiss_roll_support():
    x = np.asarray(SwissRoll(noise=0.0, scale=2.0, dim=3).sample(_key(), N), np.float64) / 2.0
    chex.assert_shape(x, (N, 3))
    r = np.linalg.norm(x[:, :2], axis=1)
    assert r.min() >= 1 / 3 - 1e-5 and r.max() <= 1 + 1e-5
    np.testing.assert_allclose(np.cos(np.arctan2(x[:, 1], x[:, 0]) - 4.5 * np.pi * r), 1.0, atol=1e-3)
    assert np.abs(x[:, 2]).max() <= 1.0 and x[:, 2].std() > 0.5  # uniform height on [-1, 1] (std 0.577)
    with pytest.raises(ValueError, match="dim"):
        SwissRoll(dim=4)


# The peers' definitions, written out here from their sources (see jflow/data/peers.py).
def test_torchcfm_eight_gaussians_is_sample_8gaussians():
    # eight_normal_sample(n, 2, scale=5, var=0.1): these 8 centres times 5, noise
    # MultivariateNormal(zeros(2), sqrt(var) * eye(2)), the 2nd argument being the covariance
    r = 1 / np.sqrt(2)
    centres = 5.0 * np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (r, r), (r, -r), (-r, r), (-r, -r)])
    gm = torchcfm_eight_gaussians()
    dist = np.linalg.norm(np.asarray(gm.means)[:, None] - centres[None], axis=-1)
    np.testing.assert_allclose(dist.min(axis=1), 0.0, atol=1e-5)  # the same 8 centres
    np.testing.assert_allclose(np.asarray(gm.stds) ** 2, np.sqrt(0.1), rtol=1e-6)  # variance sqrt(0.1)
    np.testing.assert_allclose(gm.weights, 1 / 8)
    x, y = gm.sample_with_labels(_key(4), N)
    resid = np.asarray(x) - np.asarray(gm.means)[np.asarray(y)]
    np.testing.assert_allclose(resid.std(0), 0.1 ** 0.25, rtol=0.05)  # 0.562, not sqrt(0.1) = 0.316
    np.testing.assert_allclose(np.cov(np.asarray(x).T), (12.5 + np.sqrt(0.1)) * np.eye(2), atol=0.7)


def test_torchcfm_moons_is_3_torchdyn_moons_minus_1():
    # sample_moons(n) = 3 * generate_moons(n, noise=0.2) - 1; torchdyn adds rand(n, 1) * noise,
    # one uniform number per point to both coordinates, to scikit-learn's moon points
    x, y = torchcfm_moons().sample_with_labels(_key(5), N)
    z, y = (np.asarray(x, np.float64) + 1.0) / 3.0, np.asarray(y)
    # z - u (1, 1) lies on the unit circle around c (upper moon c = 0, lower moon
    # (cos, sin) = (1, 1/2) - (z - u)): solve |z - c - u (1, 1)| = 1 for u, expect u in [0, 0.2)
    c = np.where(y[:, None] == 0, [0.0, 0.0], [1.0, 0.5])
    a, b = c[:, 0] - z[:, 0], c[:, 1] - z[:, 1]
    disc = (a + b) ** 2 - 2 * (a * a + b * b - 1)
    assert disc.min() > -1e-5
    roots = (-(a + b)[:, None] + np.array([-1.0, 1.0]) * np.sqrt(np.maximum(disc, 0))[:, None]) / 2
    u = np.where((roots >= -1e-5) & (roots < 0.2 + 1e-5), roots, np.inf).min(axis=1)
    assert np.isfinite(u).all() and u.max() > 0.19 and u.min() < 0.01
    np.testing.assert_allclose(np.asarray(x).mean(0), [0.8, 0.05], atol=0.06)  # 3 (1/2 + 0.1, 1/4 + 0.1) - 1


def test_flow_matching_checkerboard_and_moons_are_the_examples():
    rng = np.random.default_rng(0)  # inf_train_gen of 2d_flow_matching.ipynb, in numpy
    x1 = rng.random(N) * 4 - 2
    x2 = rng.random(N) - rng.integers(0, 2, N) * 2 + np.mod(np.floor(x1), 2)
    peer = np.stack([x1, x2], 1) / 0.45
    ours = np.asarray(flow_matching_checkerboard().sample(_key(6), N))

    def cells(x):  # occupancy of the 4 x 4 cells of side 1 / 0.45
        col, row = np.clip(np.floor(x * 0.45 + 2).astype(int), 0, 3).T
        return np.bincount(4 * row + col, minlength=16) / len(x)

    assert np.abs(ours).max() <= 2 / 0.45 + 1e-5
    np.testing.assert_allclose(cells(ours), cells(peer), atol=0.025)  # the same 8 black cells, 1/8 each
    # standalone_flow_matching.ipynb: sklearn.datasets.make_moons(n, noise=0.15), not centred
    from sklearn.datasets import make_moons

    sk = make_moons(N, noise=0.15, random_state=0)[0]
    moons = np.asarray(flow_matching_moons().sample(_key(7), N))
    np.testing.assert_allclose(moons.mean(0), sk.mean(0), atol=0.05)
    np.testing.assert_allclose(np.cov(moons.T), np.cov(sk.T), atol=0.05)
    assert get_toy("flow_matching_moons", noise=0.1) == Moons(noise=0.1, centred=False)


def test_registry_and_bad_input():
    assert isinstance(get_toy("symmetric_mixture", nmodes=3), GaussianMixture)
    assert get_toy("moons", noise=0.1) == Moons(noise=0.1)
    with pytest.raises(ValueError, match="unknown toy distribution 'moonz'.*moons"):
        get_toy("moonz")
    with pytest.raises(ValueError, match="unknown parameter.*'radius'"):
        get_toy("moons", radius=1.0)
    with pytest.raises(ValueError, match="noise"):
        Moons(noise=-0.1)
    with pytest.raises(ValueError, match="factor"):
        Circles(factor=1.5)
    with pytest.raises(ValueError, match="Python int"):
        Moons().sample(_key(), 2.5)


def test_samplers_jit_once_over_parameters_and_deterministic(x64):
    @jax.jit
    @chex.assert_max_traces(n=1)
    def draw(dist, key):
        return dist.sample_with_labels(key, 64)

    a, ya = draw(Moons(noise=0.1), _key(3))
    b, yb = draw(Moons(noise=0.2), _key(3))  # new leaf values, same structure: no retrace
    np.testing.assert_array_equal(ya, yb)
    assert not np.allclose(a, b)
    np.testing.assert_allclose(draw(Moons(noise=0.1), _key(3))[0], a)
    assert Checkerboard().sample(_key(), 5).dtype == jnp.float64  # default float dtype under x64


# --------------------------------------------------------------------------- preprocessing


def test_resize_matches_jax_image_resize():
    rng = np.random.default_rng(0)
    for src, dst in (((8, 8), (13, 16)), ((28, 28), (11, 9))):
        img = rng.uniform(-1, 1, (2, *src, 3)).astype(np.float32)
        ref = jax.image.resize(img, (2, *dst, 3), method="linear", antialias=True)
        np.testing.assert_allclose(resize_images(img, dst), ref, atol=1e-5)


def test_pad_and_scale():
    raw = np.full((1, 28, 28, 1), 255, np.uint8)
    raw[0, 0, 0, 0] = 0
    x = preprocess_images(raw, value_range=(0, 255), pad_to=32)
    assert x.shape == (1, 32, 32, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0, 2:30, 2:30, 0][1:, 1:], 1.0)
    assert x[0, 2, 2, 0] == -1.0  # the 0 pixel maps to -1
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    np.testing.assert_array_equal(x[0, ..., 0][border], -1.0)
    with pytest.raises(ValueError, match="smaller"):
        pad_images(x, 16)


# --------------------------------------------------------------------------- TFDS pipeline (mocked)


@pytest.fixture(scope="module")
def mock_mnist():
    """20 fake mnist records (random access, deterministic), read into memory once."""
    with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
        src = tfds_source("mnist", "train")
        records = [src[i] for i in range(len(src))]
    images = np.stack([r["image"] for r in records])
    labels = np.array([r["label"] for r in records])
    return src, images, labels


def _collect(loader, n):
    return [next(loader) for _ in range(n)]


def test_tfds_loader_shapes_range_and_content(mock_mnist):
    src, images, labels = mock_mnist
    assert len(src) == 20 and images.shape == (20, 28, 28, 1) and images.dtype == np.uint8
    with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
        loader = ImageLoader(tfds_source("mnist", "train"), 4, seed=1, pad_to=32, process_index=0, process_count=1)
        batch = next(loader)
        loader.close()
    assert batch["x"].shape == (4, 32, 32, 1) and batch["x"].dtype == np.float32
    assert batch["y"].shape == (4,) and batch["y"].dtype == np.int32
    assert batch["x"].min() >= -1.0 and batch["x"].max() <= 1.0
    idx = loader.epoch_order(0)[:4]
    np.testing.assert_allclose(batch["x"][:, 2:30, 2:30], images[idx] / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(batch["y"], labels[idx])


def test_tfds_cifar10_shape():
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        batch = next(ImageLoader(tfds_source("cifar10", "test"), 3, prefetch=0, process_index=0, process_count=1))
    assert batch["x"].shape == (3, 32, 32, 3) and batch["y"].shape == (3,)


@pytest.fixture(scope="module")
def mock_source(mock_mnist):
    """The mocked mnist records behind the record interface (``source[i]``), without the tfds mock."""
    _, images, labels = mock_mnist

    class Records:
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return {"image": images[i], "label": labels[i]}

    return Records()


def _loader(source, **kw):
    kw.setdefault("process_index", 0)
    kw.setdefault("process_count", 1)
    return ImageLoader(source, kw.pop("batch_size", 4), **kw)


def test_order_deterministic_per_seed_and_new_each_epoch(mock_source):
    a, b, c = _loader(mock_source, seed=7), _loader(mock_source, seed=7), _loader(mock_source, seed=8)
    for e in range(3):
        np.testing.assert_array_equal(np.sort(a.epoch_order(e)), np.arange(20))  # a permutation
    assert not np.array_equal(a.epoch_order(0), a.epoch_order(1))
    assert not np.array_equal(a.epoch_order(0), c.epoch_order(0))
    for ba, bb in zip(_collect(a, 7), _collect(b, 7)):  # 7 batches cross the epoch boundary (5 per epoch)
        np.testing.assert_array_equal(ba["x"], bb["x"])
        np.testing.assert_array_equal(ba["y"], bb["y"])
    a.close(), b.close()


@pytest.mark.parametrize("prefetch", [0, 3])
def test_resume_from_saved_position(mock_source, prefetch):
    ref = _collect(_loader(mock_source, seed=3, prefetch=prefetch), 9)
    first = _loader(mock_source, seed=3, prefetch=prefetch)
    _collect(first, 3)
    if prefetch:  # let the thread run ahead: its prefetched-but-undelivered batches must not count
        deadline = time.monotonic() + 10.0
        while not first._queue.full() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first._queue.full()
    state = first.get_state()
    assert (state["epoch"], state["index"]) == (0, 3)
    first.close()
    resumed = _loader(mock_source, seed=3, prefetch=prefetch)
    resumed.set_state(state)
    for want, got in zip(ref[3:], _collect(resumed, 6)):
        np.testing.assert_array_equal(want["x"], got["x"])
        np.testing.assert_array_equal(want["y"], got["y"])
    assert resumed.get_state()["epoch"] == 1
    resumed.close()
    with pytest.raises(ValueError, match="seed"):
        _loader(mock_source, seed=4).set_state(state)


@pytest.mark.parametrize("count", [3, 4])
def test_process_shards_disjoint_and_cover(mock_source, count):
    for epoch in (0, 1):
        parts = [_loader(mock_source, seed=5, process_index=p, process_count=count).epoch_order(epoch)
                 for p in range(count)]
        assert all(len(p) == 20 // count for p in parts)
        union = np.concatenate(parts)
        assert len(np.unique(union)) == len(union)  # disjoint
        if 20 % count == 0:
            np.testing.assert_array_equal(np.sort(union), np.arange(20))  # cover the data
    with pytest.raises(ValueError, match="process_index"):
        _loader(mock_source, process_index=4, process_count=4)


def test_epochs_remainder_and_errors(mock_source):
    loader = _loader(mock_source, batch_size=6, num_epochs=2, drop_remainder=False, shuffle=False, prefetch=2)
    sizes = [b["x"].shape[0] for b in loader]
    assert sizes == [6, 6, 6, 2] * 2
    np.testing.assert_array_equal(loader.epoch_order(0), np.arange(20))
    assert len(_loader(mock_source, batch_size=6)) == 3
    with pytest.raises(ValueError, match="batch_size"):
        _loader(mock_source, batch_size=21)

    class Broken:
        def __len__(self):
            return 8

        def __getitem__(self, i):
            if i == 5:
                raise KeyError("corrupt record 5")
            return {"image": np.zeros((2, 2), np.uint8), "label": 0}

    with pytest.raises(KeyError, match="corrupt"):  # raised in the prefetch thread, re-raised here
        _collect(_loader(Broken(), batch_size=2, shuffle=False, prefetch=2), 4)


def test_abandoned_loader_stops_its_prefetch_thread(mock_source):
    loader = _loader(mock_source, prefetch=2)  # num_epochs=None: the producer would run forever
    next(loader)
    thread = loader._thread
    assert thread.is_alive()
    del loader
    gc.collect()
    thread.join(timeout=5.0)
    assert not thread.is_alive()


@pytest.fixture
def no_network(monkeypatch):
    attempts = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise OSError(f"network disabled in this test (tried {address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def test_missing_tfds_dataset_fails_fast_with_instructions(tmp_path, no_network):
    with pytest.raises(DatasetNotPreparedError) as err:
        tfds_source("fashion_mnist", "train", data_dir=str(tmp_path))
    msg = str(err.value)
    for part in ("fashion_mnist", str(tmp_path), "tfds build fashion_mnist", "download_and_prepare", "'digits'"):
        assert part in msg
    assert isinstance(err.value, FileNotFoundError)
    assert no_network == []  # no download was attempted
    with pytest.raises(ValueError, match="unknown TFDS data set 'no_such_images'"):
        tfds_source("no_such_images", data_dir=str(tmp_path))


def test_offline_digits(no_network):
    train, test, full = load_digits("train"), load_digits("test"), image_source("digits", "all")
    assert (len(train), len(test), len(full)) == (1438, 359, 1797)
    assert full.images.dtype == np.uint8 and full.images.max() == 16 and full.images.min() == 0
    rows = lambda s: sorted(map(bytes, np.concatenate([s.images.reshape(len(s), -1), s.labels[:, None]], 1)))
    assert sorted(rows(train) + rows(test)) == rows(full)  # a partition of the 1797 images
    np.testing.assert_array_equal(load_digits("test").labels, test.labels)  # deterministic split
    batch = next(_loader(train, batch_size=64, prefetch=0, pad_to=(10, 10)))
    assert batch["x"].shape == (64, 10, 10, 1) and batch["x"].dtype == np.float32
    assert batch["x"].min() == -1.0 and batch["x"].max() == 1.0 and set(np.unique(batch["y"])) <= set(range(10))
    first = train.images[_loader(train).epoch_order(0)[:64]]
    np.testing.assert_allclose(batch["x"][:, 1:9, 1:9], first / 8.0 - 1.0)
    assert no_network == []
    with pytest.raises(ValueError, match="split"):
        load_digits("validation")


def test_array_source_validation():
    with pytest.raises(ValueError, match="labels"):
        ArraySource(np.zeros((3, 4, 4)), np.zeros(2, int))
    with pytest.raises(ValueError, match="value_range"):
        ArraySource(np.zeros((3, 4, 4)), value_range=(1, 1))
