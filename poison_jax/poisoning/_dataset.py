"""The data's types, :class:`Dataset` and :class:`Splits`, and the checks every source shares.

Their one public path is :mod:`poison_jax.poisoning.data`, which re-exports ``Dataset`` and ``Splits``;
the helpers here serve the sources (``_sources``, ``_user``) and the splits.
"""

from __future__ import annotations

import operator
from typing import Any, NamedTuple

import jax
import numpy as np

from poison_jax.engine import checks

N_CLASSES = 10  # digits, MNIST and Fashion-MNIST all have classes 0..9


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


def check_xy(
    x: np.ndarray, y: np.ndarray, where: str, name: str, *, regression: bool = False, num_classes: int = 2
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


def make_dataset(
    x_pool: Any, y_pool: Any, x_test: Any, y_test: Any, name: str, *, regression: bool = False, num_classes: int = 2
) -> Dataset:
    """Cast to float32, check both sets (after the cast, so float32 overflow counts as inf)."""
    with np.errstate(over="ignore"):  # overflow gives inf, which the check below reports
        x_pool, y_pool, x_test, y_test = (np.asarray(a, np.float32) for a in (x_pool, y_pool, x_test, y_test))
    for x, y, where in ((x_pool, y_pool, "pool"), (x_test, y_test, "test")):
        check_xy(x, y, where, name, regression=regression, num_classes=num_classes)
    if x_pool.shape[1] != x_test.shape[1]:
        raise ValueError(f"{name}: pool features have {x_pool.shape[1]} dimensions but test features {x_test.shape[1]}")
    if not regression:
        missing = sorted(set(range(num_classes)) - set(np.unique(y_pool).astype(int).tolist()))
        if missing:
            raise ValueError(f"{name}: the pool has no example of label(s) {missing}")
    return Dataset(x_pool, y_pool, x_test, y_test, name, num_classes, "regression" if regression else "classification")


def check_classes(classes, source: str) -> tuple[int, ...]:
    """Return ``classes`` as a tuple of two or more distinct ints in 0..9, else raise ValueError."""
    try:
        picked = tuple(operator.index(c) for c in classes)
    except TypeError:
        picked = ()
    if len(picked) < 2:
        raise ValueError(
            f"{source}: classes must be a list of two or more distinct integers in 0..{N_CLASSES - 1} (a pair: "
            f"binary; more: multiclass), got {classes!r}"
        )
    for c in picked:
        if not 0 <= c < N_CLASSES:
            raise ValueError(f"{source}: class {c} is outside the range 0..{N_CLASSES - 1}")
    repeated = sorted({c for c in picked if picked.count(c) > 1})
    if repeated:
        if len(picked) == 2:
            raise ValueError(f"{source}: classes must be two different classes, got {picked}")
        raise ValueError(f"{source}: classes {picked} repeat the class(es) {repeated}: each class may appear once")
    return picked


def classes_name(classes: tuple[int, ...]) -> str:
    """``"0 v 8"`` for a pair, ``"0-9"`` for all ten digits, else ``"3 v 5 v 8"``."""
    return "0-9" if classes == tuple(range(N_CLASSES)) else " v ".join(map(str, classes))


def count(value, field: str, source: str, *, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``low..high`` (inclusive), else a ValueError naming ``source`` and ``field``."""
    return checks.integer(f"{source}: {field}", value, low=low, high=high)


def relabel(y: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    """Each class's label is its position in ``classes`` (a pair: the first 0, the second 1)."""
    label_of = np.zeros(N_CLASSES, np.float32)
    label_of[list(classes)] = np.arange(len(classes))
    return label_of[np.asarray(y, np.int64)]


def select(x: np.ndarray, y: np.ndarray, classes: tuple[int, ...]):
    """Keep the rows of ``classes``, relabelled by :func:`relabel`."""
    keep = np.isin(y, classes)
    return x[keep], relabel(y[keep], classes)


def hold_out(x, y, n_test, seed: int, name: str, *, regression: bool = False, num_classes: int = 2) -> Dataset:
    """Split a labelled set into a pool and a fixed test set by a seeded permutation."""
    n_test = count(n_test, "n_test", name, low=1, high=len(y) - 1)
    perm = np.random.default_rng(seed).permutation(len(y))
    test, pool = perm[:n_test], perm[n_test:]
    return make_dataset(x[pool], y[pool], x[test], y[test], name, regression=regression, num_classes=num_classes)
