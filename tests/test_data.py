"""Tests of poison_jax.poisoning.data: sources, checks at the boundary, and seed-stacked splits."""

import re
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from poison_jax.poisoning import _dataset, data


def assert_binary_float32(ds: data.Dataset, d: int):
    for x, y in ((ds.x_pool, ds.y_pool), (ds.x_test, ds.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.float32
        assert x.ndim == 2 and x.shape[1] == d and y.shape == (len(x),)
        assert set(np.unique(y)) <= {0.0, 1.0}


def assert_unit_range(ds: data.Dataset):
    for x in (ds.x_pool, ds.x_test):
        assert x.min() >= 0.0 and x.max() <= 1.0


@pytest.fixture(scope="module")
def digits08():
    return data.load_dataset("digits")


@pytest.fixture(scope="module")
def mnist5k08():
    return data.load_dataset("mnist5k")


# --------------------------------------------------------------------------------------------
# Offline sources
# --------------------------------------------------------------------------------------------


def test_synthetic_shapes_balance_and_determinism():
    ds = data.load_dataset("synthetic", n_pool=41, n_test=30, seed=3)
    assert_binary_float32(ds, d=2)
    assert ds.x_pool.shape == (41, 2) and ds.x_test.shape == (30, 2)
    assert ds.y_pool.sum() == 21 and ds.y_test.sum() == 15
    again = data.synthetic(n_pool=41, n_test=30, seed=3)
    np.testing.assert_array_equal(ds.x_pool, again.x_pool)
    np.testing.assert_array_equal(ds.x_test, again.x_test)
    assert not np.array_equal(ds.x_pool, data.synthetic(n_pool=41, n_test=30, seed=4).x_pool)
    # the test set comes from its own stream: it does not move with n_pool
    np.testing.assert_array_equal(ds.x_test, data.synthetic(n_pool=10, n_test=30, seed=3).x_test)


def test_synthetic_class_means_and_covariance():
    ds = data.synthetic(n_pool=20000, n_test=10)
    x, y = ds.x_pool, ds.y_pool
    np.testing.assert_allclose(x[y == 0].mean(0), [-3.0, 0.0], atol=0.05)
    np.testing.assert_allclose(x[y == 1].mean(0), [3.0, 0.0], atol=0.05)
    np.testing.assert_allclose(x[y == 1].var(0), [2.5, 1.5], rtol=0.05)


def test_digits_0v8(digits08):
    assert digits08.name == "digits 0 v 8"
    assert_binary_float32(digits08, d=64)
    assert_unit_range(digits08)
    assert len(digits08.y_pool) == 282 and len(digits08.y_test) == 70
    assert digits08.x_pool.max() == 1.0  # scaled by 16, not by the max of the data


def test_digits_any_pair_first_class_is_label_0():
    from sklearn.datasets import load_digits

    counts = np.bincount(load_digits().target)
    ds = data.load_dataset("digits", classes=(3, 5), n_test=50)
    assert ds.name == "digits 3 v 5"
    assert_binary_float32(ds, d=64)
    assert len(ds.y_pool) + len(ds.y_test) == counts[3] + counts[5]
    assert len(ds.y_test) == 50
    assert (ds.y_pool == 0).sum() + (ds.y_test == 0).sum() == counts[3]


def test_hold_out_is_deterministic_in_seed(digits08):
    again = data.digits()
    np.testing.assert_array_equal(digits08.x_test, again.x_test)
    np.testing.assert_array_equal(digits08.x_pool, again.x_pool)
    other = data.load_dataset("digits", seed=1)
    assert not np.array_equal(digits08.y_test, other.y_test) or not np.array_equal(digits08.x_test, other.x_test)


def test_mnist5k_0v8(mnist5k08):
    assert mnist5k08.name == "mnist5k 0 v 8"
    assert_binary_float32(mnist5k08, d=784)
    assert_unit_range(mnist5k08)
    assert len(mnist5k08.y_pool) == 683 and len(mnist5k08.y_test) == 317
    total_ones = mnist5k08.y_pool.sum() + mnist5k08.y_test.sum()
    assert total_ones == 500  # 500 images a class
    # 683 = the paper's 512 train + 171 validation
    splits = data.sample_splits(mnist5k08, seeds=[0], n_train=512, n_val=171)
    assert splits.x_train.shape == (1, 512, 784) and splits.x_test.shape == (317, 784)


def test_mnist5k_other_pair():
    ds = data.mnist5k(classes=(1, 7), n_test=100)
    assert ds.name == "mnist5k 1 v 7"
    assert len(ds.y_pool) == 900 and len(ds.y_test) == 100
    assert_unit_range(ds)


@pytest.mark.parametrize("source, total", [("digits", 1797), ("mnist5k", 5000)])
def test_all_ten_classes(source, total):
    ds = data.load_dataset(source, classes=tuple(range(10)), n_test=300)
    assert ds.num_classes == 10 and ds.name == f"{source} 0-9"
    assert len(ds.y_pool) + len(ds.y_test) == total
    assert set(np.unique(ds.y_pool)) == set(np.arange(10.0)) and ds.y_pool.dtype == np.float32
    assert_unit_range(ds)


def test_class_list_labels_are_positions():
    """Each class's label is its position in the list: (8, 3, 5) -> 8 is 0, 3 is 1, 5 is 2."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    ds = data.digits(classes=(8, 3, 5), n_test=40)
    assert ds.num_classes == 3 and ds.name == "digits 8 v 3 v 5"
    pool_and_test = np.concatenate([ds.x_pool, ds.x_test]) * 16
    labels = np.concatenate([ds.y_pool, ds.y_test])
    for label, digit in enumerate((8, 3, 5)):
        assert (labels == label).sum() == (y == digit).sum()
        # every image labelled `label` is an image of `digit`
        originals = {tuple(row) for row in x[y == digit]}
        assert all(tuple(row) in originals for row in pool_and_test[labels == label])


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


def test_sample_splits_shapes_dtypes_and_fixed_test(digits08):
    s = data.sample_splits(digits08, seeds=[0, 1, 2], n_train=200, n_val=60)
    assert isinstance(s, data.Splits)
    assert s.x_train.shape == (3, 200, 64) and s.y_train.shape == (3, 200)
    assert s.x_val.shape == (3, 60, 64) and s.y_val.shape == (3, 60)
    assert s.x_test.shape == (70, 64) and s.y_test.shape == (70,)
    for a in s:
        assert isinstance(a, jnp.ndarray) and a.dtype == jnp.float32
    np.testing.assert_array_equal(s.x_test, digits08.x_test)
    np.testing.assert_array_equal(s.y_test, digits08.y_test)


def test_split_indices_disjoint_and_match_rows(digits08):
    idx_train, idx_val = data.split_indices(282, [0, 5], n_train=200, n_val=82)
    s = data.sample_splits(digits08, seeds=[0, 5], n_train=200, n_val=82)
    for k in range(2):
        tr, va = np.asarray(idx_train[k]), np.asarray(idx_val[k])
        assert len(set(tr.tolist())) == 200 and not set(tr.tolist()) & set(va.tolist())
        np.testing.assert_array_equal(s.x_train[k], digits08.x_pool[tr])
        np.testing.assert_array_equal(s.y_val[k], digits08.y_pool[va])


def test_splits_disjoint_by_rows():
    ds = data.synthetic(n_pool=100, n_test=5)  # continuous features: every row is unique
    s = data.sample_splits(ds, seeds=[0, 1, 2, 3], n_train=60, n_val=40)
    pool_rows = {r.tobytes() for r in ds.x_pool}
    for k in range(4):
        train = {r.tobytes() for r in np.asarray(s.x_train[k])}
        val = {r.tobytes() for r in np.asarray(s.x_val[k])}
        assert len(train) == 60 and len(val) == 40
        assert not train & val
        assert train | val == pool_rows  # 60 + 40 = the whole pool


def test_splits_deterministic_per_seed(digits08):
    a = data.sample_splits(digits08, seeds=[0, 1], n_train=100, n_val=50)
    b = data.sample_splits(digits08, seeds=[1], n_train=100, n_val=50)
    c = data.sample_splits(digits08, seeds=[0, 1], n_train=100, n_val=50)
    for x, y in zip(a, c, strict=False):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.x_train[1], b.x_train[0])  # a seed's split ignores the others
    np.testing.assert_array_equal(a.x_val[1], b.x_val[0])
    assert not np.array_equal(a.x_train[0], a.x_train[1])


# --------------------------------------------------------------------------------------------
# TFDS (offline: mock data, and the two errors)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source, classes", [("mnist", (0, 8)), ("fashion_mnist", (0, 2))])
def test_tfds_under_mock_data(source, classes):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=60):
        ds = data.load_dataset(source)
        records = [tfds.data_source(source, split=sp, download=False) for sp in ("train", "test")]
        expected = [[r[i] for i in range(len(r)) if int(r[i]["label"]) in classes] for r in records]
        limited = data.load_dataset(source, n_pool=3)
    a, b = classes
    assert ds.name == f"{source} {a} v {b}"
    assert_binary_float32(ds, d=784)
    assert_unit_range(ds)
    for x, y, recs in ((ds.x_pool, ds.y_pool, expected[0]), (ds.x_test, ds.y_test, expected[1])):
        assert len(x) == len(recs) > 0
        np.testing.assert_array_equal(y, [float(int(r["label"]) == b) for r in recs])
        np.testing.assert_allclose(x[0] * 255, recs[0]["image"].reshape(-1), atol=1e-4)
    np.testing.assert_array_equal(limited.x_pool, ds.x_pool[:3])
    np.testing.assert_array_equal(limited.x_test, ds.x_test)


def test_tfds_other_pair_under_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=40):
        ds = data.tfds_images("mnist", classes=(3, 1))
    assert ds.name == "mnist 3 v 1"
    assert_binary_float32(ds, d=784)


@pytest.mark.parametrize("source", ["mnist", "fashion_mnist"])
def test_tfds_all_classes_under_mock_data(source):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=200):
        ds = data.load_dataset(source, classes=tuple(range(10)))
        train = tfds.data_source(source, split="train", download=False)
        labels = [int(train[i]["label"]) for i in range(len(train))]
    assert ds.num_classes == 10 and ds.name == f"{source} 0-9"
    np.testing.assert_array_equal(ds.y_pool, np.asarray(labels, np.float32))  # all ten: labels unchanged
    assert ds.x_pool.shape == (200, 784)


def test_tfds_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=re.escape('pip install "poison-jax[tfds]"')):
        data.load_dataset("mnist")


def test_tfds_missing_prepared_data(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))) as info:
        data.load_dataset("fashion_mnist", data_dir=str(tmp_path))
    assert "download_and_prepare" in str(info.value)
    assert "builder('fashion_mnist')" in str(info.value)
    assert info.value.__cause__ is not None


# --------------------------------------------------------------------------------------------
# npz
# --------------------------------------------------------------------------------------------


def features(rng, n, d=5):
    return rng.normal(3.0, 2.0, (n, d)), (np.arange(n) % 2).astype(np.int64)


def test_npz_single_file_round_trip_features_as_given(tmp_path):
    rng = np.random.default_rng(0)
    (xtr, ytr), (xte, yte) = features(rng, 50), features(rng, 20)
    f = tmp_path / "feats.npz"
    np.savez(f, X_train=xtr, y_train=ytr, X_test=xte, y_test=yte)
    ds = data.load_dataset("npz", path=str(f))
    assert ds.name == "feats"
    assert_binary_float32(ds, d=5)
    np.testing.assert_allclose(ds.x_pool, xtr.astype(np.float32))  # a user's scaling is kept
    np.testing.assert_allclose(ds.x_test, xte.astype(np.float32))
    np.testing.assert_array_equal(ds.y_pool, ytr)
    np.testing.assert_array_equal(ds.y_test, yte)


def test_npz_standardisation_on_request(tmp_path):
    rng = np.random.default_rng(0)
    (xtr, ytr), (xte, yte) = features(rng, 50), features(rng, 20)
    xtr[:, 2] = 7.0  # a constant feature: std 0 -> 1
    f = tmp_path / "feats.npz"
    np.savez(f, X_train=xtr, y_train=ytr, X_test=xte, y_test=yte)
    ds = data.load_dataset("npz", path=str(f), scale="standardise")
    np.testing.assert_allclose(ds.x_pool.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.delete(ds.x_pool.std(0), 2), 1.0, atol=1e-5)
    np.testing.assert_array_equal(ds.x_pool[:, 2], 0.0)
    # the test set uses the training statistics, not its own
    expected = (xte - xtr.mean(0)) / np.where(xtr.std(0) > 0, xtr.std(0), 1.0)
    np.testing.assert_allclose(ds.x_test, expected, rtol=1e-4, atol=1e-4)
    minmax = data.load_dataset("npz", path=str(f), scale="minmax")
    np.testing.assert_allclose(np.delete(minmax.x_pool.min(0), 2), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.delete(minmax.x_pool.max(0), 2), 1.0, atol=1e-6)
    with pytest.raises(
        ValueError, match=r"scale must be None \(features as given\) or one of standardise, minmax, got 'z'"
    ):
        data.load_dataset("npz", path=str(f), scale="z")


def test_npz_inception_format(tmp_path):
    rng = np.random.default_rng(1)
    (xtr, ytr), (xte, yte) = features(rng, 30, d=2048), features(rng, 12, d=2048)
    np.savez(tmp_path / "train.npz", inception_features_val=xtr.astype(np.float32), labels=ytr)
    np.savez(tmp_path / "test.npz", inception_features_val=xte.astype(np.float32), labels=yte)
    path, test_path = str(tmp_path / "train.npz"), str(tmp_path / "test.npz")
    ds = data.load_dataset("npz", path=path, test_path=test_path, scale="standardise")
    assert_binary_float32(ds, d=2048)
    assert ds.x_pool.shape == (30, 2048) and ds.x_test.shape == (12, 2048)
    np.testing.assert_allclose(ds.x_pool.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.x_pool.std(0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(ds.y_test, yte)


def test_npz_missing_keys(tmp_path):
    f = tmp_path / "wrong.npz"
    np.savez(f, X_train=np.zeros((3, 2)), labels=np.zeros(3))
    missing = r"wrong\.npz lacks the keys \['y_train', 'X_test', 'y_test'\]"
    with pytest.raises(ValueError, match=missing) as info:
        data.npz(str(f))
    assert "it has ['X_train', 'labels']" in str(info.value)
    assert "inception_features_val" in str(info.value)  # names the allowed formats
    with pytest.raises(ValueError, match=r"wrong\.npz lacks the keys \['inception_features_val'\]"):
        data.npz(str(f), test_path=str(f))


def test_npz_object_array_refused(tmp_path):
    f = tmp_path / "pickled.npz"
    np.savez(
        f,
        X_train=np.array([{"a": 1}, None], dtype=object),
        y_train=np.zeros(2),
        X_test=np.zeros((2, 2)),
        y_test=np.zeros(2),
    )
    with pytest.raises(ValueError, match="object/pickled arrays are not allowed"):
        data.npz(str(f))


def test_npz_single_npy_refused(tmp_path):
    f = tmp_path / "x.npy"
    np.save(f, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="not an .npz archive"):
        data.npz(str(f))


def test_npz_targets_binary_multiclass_and_regression(tmp_path):
    x = np.linspace(0, 1, 16).reshape(8, 2)

    def save(name, y_train, y_test):
        np.savez(tmp_path / name, X_train=x, y_train=y_train, X_test=x[:4], y_test=y_test)
        return data.npz(str(tmp_path / name))

    three = save("three.npz", np.array([0, 1, 2, 2, 0, 1, 2, 0]), np.array([0, 1, 2, 1]))
    assert (three.num_classes, three.task) == (3, "classification")
    reg = save("reg.npz", np.linspace(0.05, 0.95, 8), np.array([0.1, 0.2, 0.3, 0.4]))
    assert (reg.num_classes, reg.task) == (2, "regression")
    np.testing.assert_allclose(reg.y_pool, np.linspace(0.05, 0.95, 8), rtol=1e-6)
    outside = r"reg2: pool targets must be finite and in \[0, 1\] \(labels that are not integers"
    with pytest.raises(ValueError, match=outside):
        save("reg2.npz", np.linspace(0.5, 4.5, 8), np.array([0.1, 0.2, 0.3, 0.4]))
    with pytest.raises(ValueError, match=r"gap: the pool has no example of label\(s\) \[1\]"):
        save("gap.npz", np.array([0, 2, 2, 0, 0, 2, 2, 0]), np.array([0, 2, 2, 0]))
    with pytest.raises(ValueError, match=r"neg: class labels must be integers 0..K-1, found -1"):
        save("neg.npz", np.array([0, 1, -1, 1, 0, 1, 0, 1]), np.array([0, 1, 0, 1]))


def test_arrays_as_a_dataset():
    rng = np.random.default_rng(3)
    x = rng.uniform(size=(60, 4))
    y = (x[:, 0] > 0.5).astype(int)
    ds = data.as_dataset((x[:40], y[:40], jnp.asarray(x[40:]), y[40:]), name="mine")
    assert ds.name == "mine" and ds.x_pool.shape == (40, 4) and ds.num_classes == 2
    np.testing.assert_allclose(ds.x_pool, x[:40].astype(np.float32))
    assert data.as_dataset(ds) is ds
    accepted = (
        r"a poison_jax.poisoning.data.Dataset or a tuple \(x_pool, y_pool, x_test, y_test\) of numpy or JAX arrays"
    )
    with pytest.raises(TypeError, match=rf"dataset must be {accepted}, got a tuple of 2 items"):
        data.as_dataset((x, y))
    with pytest.raises(TypeError, match=r"got a dict"):
        data.as_dataset({"x": x})
    reg = data.from_arrays(x[:40], x[:40, 1], x[40:], x[40:, 1], task="regression")
    assert reg.task == "regression"
    with pytest.raises(ValueError, match=r"task='classification' needs integer labels"):
        data.from_arrays(x[:40], x[:40, 1], x[40:], x[40:, 1], task="classification")


def test_npz_nan_features(tmp_path):
    x = np.zeros((4, 2))
    x[1, 1] = np.nan
    x[3, 0] = np.inf
    f = tmp_path / "nan.npz"
    np.savez(f, X_train=np.zeros((4, 2)), y_train=np.zeros(4), X_test=x, y_test=np.zeros(4))
    msg = r"2 non-finite feature values .* in the test set, the first at row 1, column 1"
    with pytest.raises(ValueError, match=msg):
        data.npz(str(f))


# --------------------------------------------------------------------------------------------
# Validation at the boundary
# --------------------------------------------------------------------------------------------


def test_unknown_source():
    msg = r"Unknown data source 'cifar'; allowed: synthetic, digits, diabetes, mnist5k, mnist"
    with pytest.raises(ValueError, match=msg):
        data.load_dataset("cifar")


@pytest.mark.parametrize("source", ["digits", "mnist5k", "mnist"])
def test_class_out_of_range(source):
    with pytest.raises(ValueError, match=r"class 11 is outside the range 0\.\.9"):
        data.load_dataset(source, classes=(0, 11))


def test_equal_classes():
    with pytest.raises(ValueError, match=r"two different classes, got \(3, 3\)"):
        data.load_dataset("digits", classes=(3, 3))


@pytest.mark.parametrize("source", ["digits", "mnist5k", "mnist"])
def test_repeated_class_in_a_list(source):
    with pytest.raises(ValueError, match=re.escape(f"{source}: classes (0, 4, 2, 4, 0) repeat the class(es) [0, 4]")):
        data.load_dataset(source, classes=(0, 4, 2, 4, 0))


@pytest.mark.parametrize("classes", [(1,), 5, (0.5, 1), ()])
def test_classes_not_a_list(classes):
    with pytest.raises(ValueError, match=re.escape(f"got {classes!r}")):
        data.load_dataset("digits", classes=classes)


def test_option_the_source_does_not_take():
    msg = r"'synthetic' does not take classes; it takes n_pool, n_test, seed"
    with pytest.raises(ValueError, match=msg):
        data.load_dataset("synthetic", classes=(0, 1))
    with pytest.raises(ValueError, match=r"'npz' does not take seed"):
        data.load_dataset("npz", path="x.npz", seed=3)
    with pytest.raises(ValueError, match=r"'npz' needs path"):
        data.load_dataset("npz")


def test_bad_counts():
    with pytest.raises(ValueError, match=r"^digits 0 v 8: n_test must be an integer in 1\.\.351, got 352$"):
        data.load_dataset("digits", n_test=352)
    with pytest.raises(ValueError, match=r"^synthetic: n_pool must be an integer >= 2, got 1$"):
        data.synthetic(n_pool=1)
    with pytest.raises(ValueError, match=r"^mnist5k: seed must be an integer >= 0, got -1$"):
        data.load_dataset("mnist5k", seed=-1)


def test_dataset_checks_through_from_arrays():
    x, y = np.zeros((4, 3)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"pool labels must have shape \(4,\) .* got \(3,\)"):
        data.from_arrays(x, y[:3], x, y, name="t")
    with pytest.raises(ValueError, match=r"test features must be 2-D .* got shape \(4,\)"):
        data.from_arrays(x, y, y, y, name="t")
    with pytest.raises(ValueError, match=r"pool features have 3 dimensions but test features 2"):
        data.from_arrays(x, y, x[:, :2], y, name="t")
    bad = x.copy()
    bad[2, 0] = 1e39  # finite in float64, inf in float32
    msg = r"1 non-finite .* in the pool set, the first at row 2, column 0"
    with pytest.raises(ValueError, match=msg):
        data.from_arrays(bad, y, x, y, name="t")
    with pytest.raises(ValueError, match=r"t: the pool has no example of label\(s\) \[2\]"):
        data.from_arrays(x, y, x, np.array([0, 2, 0, 0]), name="t")


def test_dataset_label_checks():
    """The label checks every source shares (a built-in source's labels never reach them wrong)."""
    x, y = np.zeros((4, 3)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"test labels must be 0 or 1, found the values \{-1, 1\}"):
        _dataset.make_dataset(x, y, x, np.array([-1, 1, 1, 1]), "t")
    with pytest.raises(ValueError, match=r"test labels must be integers 0\.\.2, found the values \{0, 1.5\}"):
        _dataset.make_dataset(x, np.array([0, 1, 2, 1]), x, np.array([0, 1.5, 0, 0]), "t", num_classes=3)
    with pytest.raises(ValueError, match=r"pool targets must be finite and in \[0, 1\]"):
        _dataset.make_dataset(x, np.array([0, 1, 2, 1]), x, y, "t", regression=True)


def test_sample_splits_pool_too_small(digits08):
    msg = "sample_splits asks for n_train=600 + n_val=171 = 771 points but the pool of 'digits 0 v 8' holds 282"
    with pytest.raises(ValueError, match=re.escape(msg)):
        data.sample_splits(digits08, seeds=[0], n_train=600, n_val=171)


@pytest.mark.parametrize("n_train, n_val, field", [(0, 10, "n_train"), (10, -1, "n_val")])
def test_sample_splits_bad_sizes(digits08, n_train, n_val, field):
    bad = min(n_train, n_val)
    with pytest.raises(ValueError, match=rf"^sample_splits: {field} must be a positive integer, got {bad}$"):
        data.sample_splits(digits08, seeds=[0], n_train=n_train, n_val=n_val)


@pytest.mark.parametrize(
    "seeds, shown",
    [
        ([], "seeds is empty"),
        ([0, -1], "got -1"),
        ([1.5], "got 1.5"),
        ([True], "got True"),
        ([2**32], "got 4294967296"),
    ],
)
def test_sample_splits_bad_seeds(digits08, seeds, shown):
    with pytest.raises(ValueError, match=re.escape(shown)):
        data.sample_splits(digits08, seeds=seeds, n_train=10, n_val=10)
