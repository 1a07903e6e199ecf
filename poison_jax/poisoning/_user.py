"""A user's data for :mod:`poison_jax.poisoning.data` (their one public path): arrays, ``.npz``
files, and the optional scaling of features."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from poison_jax.poisoning._dataset import Dataset, make_dataset

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
    dataset = make_dataset(
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
