"""Data-sanitisation defences as values: anomaly scores, removal rules and the sanitiser (floor 1).

A defender drops the training rows that look anomalous before fitting (Koh, Steinhardt & Liang,
"Stronger data poisoning attacks break data sanitization defenses", 2022). A :class:`Sanitiser`
is a score, a removal rule and where the statistics come from. Every piece is pure JAX with static
shapes: ``keep`` can be jitted and vmapped (over seeds, over poison counts padded to one shape).

Rows are masked, never indexed away: ``present`` (bool, ``(n,)``) marks the rows that exist;
absent rows (padding, inactive poison rows) enter no statistic whatever they hold, and their
scores are meaningless. Labels are class indices ``0..K-1`` (ints or floats), ``K = num_classes``
a static int; statistics are per class.

Scores (``scores(x, y, present, ref_x, ref_y, ref_present, num_classes) -> (n,)``, higher is more
anomalous; ``(x, y, present)`` is scored, ``(ref_x, ref_y, ref_present)`` gives the statistics):

* :class:`Sphere` -- ``||x − μ_y||₂``, ``μ_c`` the mean of the reference rows of class ``c``;
* :class:`Slab` -- ``|⟨x − μ_y, v⟩|``, ``v = (μ_0 − μ_1)/||μ_0 − μ_1||`` (two classes only);
* :class:`KNN` -- the summed distances to the ``k`` nearest reference rows of the same class (the
  row itself excluded when the reference *is* the scored array, ``ref_x is x``);
* :class:`SVD` -- the norm of ``x − μ_y`` outside the span of the top right singular vectors of
  class ``y``'s centred reference rows, as many as first hold ``mass`` of the squared singular
  values.

Removal rules (per class): :class:`Fraction` removes the ``ceil(f · n_c)`` highest-scoring present
rows; :class:`Percentile` removes the present rows scoring above the ``q``-th percentile of the
reference rows' own scores. Statistics are ``"data-dependent"`` (from the poisoned set itself,
what a real defender has) or ``"oracle"`` (from the clean training set).

Example::

    >>> import jax.numpy as jnp
    >>> from poison_jax.poisoning import defences
    >>> x = jnp.array([[0.0], [1.0], [2.0], [3.0], [30.0], [10.0], [11.0], [13.0]])
    >>> y = jnp.array([0, 0, 0, 0, 0, 1, 1, 1])
    >>> present = jnp.ones(8, bool)
    >>> sanitiser = defences.Sanitiser(defences.Sphere(), defences.Fraction(0.2))
    >>> keep = sanitiser.keep(x, y, present, x, y)  # one row a class: ceil(0.2 · 5) = ceil(0.2 · 3) = 1
    >>> keep.tolist()
    [True, True, True, True, False, True, True, False]
    >>> stats = defences.removal_stats(keep, present, is_poison=jnp.arange(8) == 4)
    >>> {name: round(float(value), 3) for name, value in stats.items()}
    {'poison_removed': 1.0, 'clean_removed': 1.0, 'recall': 1.0, 'false_positive_rate': 0.143}
    >>> defences.KNN(k=0)
    Traceback (most recent call last):
    ...
    ValueError: KNN k must be a positive integer, got 0
"""

from __future__ import annotations

import dataclasses
import fractions
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from poison_jax.engine import checks

__all__ = [
    "KNN",
    "SANITISERS",
    "STATISTICS",
    "SVD",
    "Sanitised",
    "Fraction",
    "Percentile",
    "Rule",
    "Sanitiser",
    "Score",
    "Slab",
    "Sphere",
    "centroids",
    "removal_stats",
    "share_counts",
]

STATISTICS = ("oracle", "data-dependent")


def _class_masks(y: jax.Array, present: jax.Array, num_classes: int) -> jax.Array:
    """``(K, n)`` bool: row ``i`` is present and of class ``c``."""
    return (y[None, :] == jnp.arange(num_classes)[:, None]) & present[None, :]


def _labels(y: jax.Array) -> jax.Array:
    """Labels as indices. An absent row's garbage label still gathers some class (JAX wraps negative
    indices and clamps large ones): its score is never used."""
    return y.astype(jnp.int32)


def _centroids(x: jax.Array, masks: jax.Array) -> jax.Array:
    """``(K, d)`` the mean of the rows each mask selects (zeros for an empty class)."""
    rows = jnp.where(masks.any(0)[:, None], x, 0.0)  # 0 · NaN is NaN: zero absent rows, don't weight them
    return (masks.astype(x.dtype) @ rows) / jnp.maximum(masks.sum(1), 1)[:, None]


def share_counts(share: float, n: int, divisor: int = 1) -> np.ndarray:
    """``(n + 1,)`` int32: ``ceil(share · m / divisor)`` rows removed of ``m = 0..n`` (over ``divisor``
    rounds), exact for ``share`` as written (floats make ``0.07 · 100`` 7.000000000000001: 8).

    >>> share_counts(0.07, 100)[[0, 1, 100]].tolist()
    [0, 1, 7]
    """
    ratio = fractions.Fraction(str(share)) / divisor
    return np.array([math.ceil(ratio * m) for m in range(n + 1)], dtype=np.int32)


def centroids(x: jax.Array, y: jax.Array, present: jax.Array, num_classes: int) -> jax.Array:
    """``(K, d)`` each class's mean of the present rows of ``x (n, d)`` (zeros for an empty class):
    the ``μ_c`` of every score."""
    return _centroids(x, _class_masks(y, present, num_classes))


@dataclasses.dataclass(frozen=True)
class Sphere:
    """``||x − μ_y||₂``: the distance to the class centroid of the reference rows (the L2 ball)."""

    def scores(
        self,
        x: jax.Array,
        y: jax.Array,
        present: jax.Array,
        ref_x: jax.Array,
        ref_y: jax.Array,
        ref_present: jax.Array,
        num_classes: int,
    ) -> jax.Array:
        """``(n,)`` the distance of each row of ``x (n, d)`` to its class's reference centroid."""
        mu = _centroids(ref_x, _class_masks(ref_y, ref_present, num_classes))
        return jnp.linalg.norm(x - mu[_labels(y)], axis=-1)


@dataclasses.dataclass(frozen=True)
class Slab:
    """``|⟨x − μ_y, v⟩|`` with ``v = (μ_0 − μ_1)/||μ_0 − μ_1||``: the distance along the line joining
    the two reference centroids (binary classification only; ``v = 0`` if the centroids coincide)."""

    def scores(
        self,
        x: jax.Array,
        y: jax.Array,
        present: jax.Array,
        ref_x: jax.Array,
        ref_y: jax.Array,
        ref_present: jax.Array,
        num_classes: int,
    ) -> jax.Array:
        """``(n,)`` each row's offset from its class centroid along ``v``."""
        if num_classes != 2:
            checks.fail("Slab num_classes", num_classes, "2 (the slab's direction joins two class centroids)")
        mu = centroids(ref_x, ref_y, ref_present, num_classes)
        return jnp.abs((x - mu[_labels(y)]) @ self.direction(mu))

    @staticmethod
    def direction(mu: jax.Array) -> jax.Array:
        """``(d,)`` the unit vector ``v`` from the centroids ``mu (2, d)`` (zeros if they coincide)."""
        gap = mu[0] - mu[1]
        return gap / jnp.maximum(jnp.linalg.norm(gap), jnp.finfo(gap.dtype).tiny)


@dataclasses.dataclass(frozen=True)
class KNN:
    """The summed Euclidean distances to the ``k`` nearest present reference rows of the same class.

    When the reference is the scored array itself (``ref_x is x``, as a data-dependent sanitiser
    passes it) each row's own index is excluded. A row with fewer than ``k`` such neighbours
    scores ``inf``. Memory: one ``(n, m)`` distance matrix.
    """

    k: int = 5

    def __post_init__(self):
        checks.positive_int("KNN k", self.k)

    def scores(
        self,
        x: jax.Array,
        y: jax.Array,
        present: jax.Array,
        ref_x: jax.Array,
        ref_y: jax.Array,
        ref_present: jax.Array,
        num_classes: int,
    ) -> jax.Array:
        """``(n,)`` the sum of each row's ``k`` smallest same-class distances."""
        if self.k > ref_x.shape[0]:
            checks.fail("KNN k", self.k, f"at most the {ref_x.shape[0]} reference rows")
        squared = jnp.sum(x**2, -1)[:, None] + jnp.sum(ref_x**2, -1)[None, :] - 2 * x @ ref_x.T
        # rounding can make a duplicate's slightly < 0; sqrt's derivative at 0 is inf (NaN gradients)
        positive = squared > 0
        distances = jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)
        valid = ref_present[None, :] & (ref_y[None, :] == y[:, None])
        if ref_x is x:
            valid = valid & ~jnp.eye(x.shape[0], dtype=bool)
        nearest, _ = jax.lax.top_k(-jnp.where(valid, distances, jnp.inf), self.k)
        return -nearest.sum(-1)


@dataclasses.dataclass(frozen=True)
class SVD:
    """The norm of ``x − μ_y`` outside the span of class ``y``'s top ``r`` right singular vectors of
    its centred reference rows, ``r`` the smallest count holding ``mass`` in (0, 1] of the squared
    singular values (data-dependent: a mask over the vectors, never a Python int). Singular values
    at rounding level (``≤ max(m, d) · eps · σ_1``) span no data direction and are never kept."""

    mass: float = 0.95

    def __post_init__(self):
        if not checks.is_real(self.mass) or not 0 < self.mass <= 1:
            checks.fail("SVD mass", self.mass, "a number in (0, 1] (the share of squared singular values kept)")

    def scores(
        self,
        x: jax.Array,
        y: jax.Array,
        present: jax.Array,
        ref_x: jax.Array,
        ref_y: jax.Array,
        ref_present: jax.Array,
        num_classes: int,
    ) -> jax.Array:
        """``(n,)`` each row's residual outside its class's principal subspace."""
        masks = _class_masks(ref_y, ref_present, num_classes)
        mu = _centroids(ref_x, masks)
        residuals = jax.vmap(self._residuals, in_axes=(None, None, 0, 0))(x, ref_x, masks, mu)  # (K, n)
        return residuals[_labels(y), jnp.arange(x.shape[0])]

    def _residuals(self, x: jax.Array, ref_x: jax.Array, mask: jax.Array, mu: jax.Array) -> jax.Array:
        """``(n,)`` the residuals of all rows under one class's centroid ``mu`` and subspace."""
        centred = jnp.where(mask[:, None], ref_x - mu, 0.0)  # zero rows leave the span unchanged
        _, s, vt = jnp.linalg.svd(centred, full_matrices=False)
        power = s**2
        before = jnp.cumsum(power) - power  # the mass of the larger singular values
        rounding = max(centred.shape) * jnp.finfo(s.dtype).eps * s[0]
        kept = (before < self.mass * power.sum()) & (s > rounding)
        offsets = x - mu
        return jnp.linalg.norm(offsets - ((offsets @ vt.T) * kept) @ vt, axis=-1)


@dataclasses.dataclass(frozen=True)
class Fraction:
    """Per class, remove the ``ceil(f · n_c)`` highest-scoring present rows, ``f`` in [0, 1) and
    ``n_c`` the present rows of class ``c`` (ties: the lower index goes first)."""

    f: float = 0.05

    def __post_init__(self):
        if not checks.is_real(self.f) or not 0 <= self.f < 1:
            checks.fail("Fraction f", self.f, "a number in [0, 1) (the share of each class removed)")

    def removed(
        self,
        scores: jax.Array,
        y: jax.Array,
        present: jax.Array,
        ref_scores: jax.Array,
        ref_y: jax.Array,
        ref_present: jax.Array,
        num_classes: int,
    ) -> jax.Array:
        """``(n,)`` bool, the removed rows. The count comes from the scored set: the reference
        scores are not used (under jit XLA drops their computation)."""
        masks = _class_masks(y, present, num_classes)
        quotas = jnp.asarray(share_counts(self.f, y.shape[0]))[masks.sum(1)]

        def one_class(mask: jax.Array, quota: jax.Array) -> jax.Array:
            order = jnp.argsort(jnp.where(mask, -scores, jnp.inf), stable=True)  # the class, highest first
            rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.size))
            return mask & (rank < quota)

        return jax.vmap(one_class)(masks, quotas).any(0)


@dataclasses.dataclass(frozen=True)
class Percentile:
    """Per class, remove the present rows scoring above the ``q``-th percentile (``q`` in (0, 100],
    numpy's linear interpolation) of that class's present reference rows' scores (none if the class
    has no reference rows)."""

    q: float = 90.0

    def __post_init__(self):
        if not checks.is_real(self.q) or not 0 < self.q <= 100:
            checks.fail("Percentile q", self.q, "a number in (0, 100] (the percentile of the reference scores)")

    def removed(
        self,
        scores: jax.Array,
        y: jax.Array,
        present: jax.Array,
        ref_scores: jax.Array,
        ref_y: jax.Array,
        ref_present: jax.Array,
        num_classes: int,
    ) -> jax.Array:
        """``(n,)`` bool, the removed rows."""
        thresholds = self.thresholds(ref_scores, ref_y, ref_present, num_classes)
        return present & (scores > thresholds[_labels(y)])

    def thresholds(
        self, ref_scores: jax.Array, ref_y: jax.Array, ref_present: jax.Array, num_classes: int
    ) -> jax.Array:
        """``(K,)`` each class's ``q``-th percentile of its present reference rows' scores (``inf`` for
        a class without any): a row of class ``c`` scoring above ``thresholds[c]`` is removed."""
        masks = _class_masks(ref_y, ref_present, num_classes)
        return jax.vmap(self._threshold, in_axes=(None, 0))(ref_scores, masks)

    def _threshold(self, values: jax.Array, mask: jax.Array) -> jax.Array:
        """The ``q``-th percentile of ``values[mask]``; ``inf`` for an empty mask."""
        ordered = jnp.sort(jnp.where(mask, values, jnp.inf))
        count = mask.sum()
        position = self.q / 100 * (count - 1)
        low = jnp.floor(position)
        weight = position - low
        low_index = jnp.clip(low.astype(jnp.int32), 0, values.shape[0] - 1)
        high_index = jnp.minimum(low_index + 1, values.shape[0] - 1)
        # weigh, not difference: two infinite scores (k-NN without k neighbours) would give inf − inf
        mixed = (1 - weight) * ordered[low_index] + weight * ordered[high_index]
        value = jnp.where(weight > 0, mixed, ordered[low_index])
        return jnp.where(count > 0, value, jnp.inf)


Score = Sphere | Slab | KNN | SVD
Rule = Fraction | Percentile
SANITISERS: dict[str, type[Sphere] | type[Slab] | type[KNN] | type[SVD]] = {
    "sphere": Sphere,
    "slab": Slab,
    "knn": KNN,
    "svd": SVD,
}


class Sanitised(NamedTuple):
    """What a defence leaves of a training set: ``keep (n,)`` bool, the rows the victim fits, and
    ``y (n,)``, their labels (changed only by a defence that relabels rows)."""

    keep: jax.Array
    y: jax.Array


@dataclasses.dataclass(frozen=True)
class Sanitiser:
    """A score, a removal rule and where the statistics come from: ``statistics`` is
    ``"data-dependent"`` (the poisoned set itself) or ``"oracle"`` (the clean training set)."""

    score: Score
    rule: Rule = Fraction()
    statistics: str = "data-dependent"

    def __post_init__(self):
        if not isinstance(self.score, (Sphere, Slab, KNN, SVD)):
            checks.fail("Sanitiser score", self.score, "a score: Sphere(), Slab(), KNN(k) or SVD(mass)")
        if not isinstance(self.rule, (Fraction, Percentile)):
            checks.fail("Sanitiser rule", self.rule, "a removal rule: Fraction(f) or Percentile(q)")
        checks.one_of("Sanitiser statistics", self.statistics, STATISTICS)

    def keep(
        self,
        x: jax.Array,
        y: jax.Array,
        present: jax.Array,
        x_clean: jax.Array,
        y_clean: jax.Array,
        num_classes: int = 2,
    ) -> jax.Array:
        """``(n,)`` bool: the rows of the training set ``x (n, d)``, ``y (n,)``, ``present (n,)`` that
        survive (absent rows: False). ``x_clean (m, d)``, ``y_clean (m,)`` (all present) give the
        oracle's statistics; with data-dependent statistics they are not used."""
        num_classes = checks.positive_int("num_classes", num_classes)
        if self.statistics == "data-dependent":
            ref = (x, y, present)
        else:
            ref = (x_clean, y_clean, jnp.ones(y_clean.shape, bool))
        scores = self.score.scores(x, y, present, *ref, num_classes)
        # the reference rows' own scores, against the same reference (the Percentile rule's radii)
        ref_scores = scores if self.statistics == "data-dependent" else self.score.scores(*ref, *ref, num_classes)
        return present & ~self.rule.removed(scores, y, present, ref_scores, ref[1], ref[2], num_classes)

    def sanitise(self, x, y, present, x_clean, y_clean, num_classes: int = 2, learner: Any = None) -> Sanitised:
        """Every defence's protocol: :meth:`keep`, the labels unchanged (``learner``, the model a
        model-based defence fits, is not used: the scores are geometric)."""
        return Sanitised(self.keep(x, y, present, x_clean, y_clean, num_classes), y)


def removal_stats(keep: jax.Array, present: jax.Array, is_poison: jax.Array) -> dict[str, jax.Array]:
    """Scalars: ``poison_removed`` and ``clean_removed`` (present rows not kept), ``recall`` (the
    share of present poison rows removed) and ``false_positive_rate`` (the share of present clean
    rows removed); a share of no rows is 0."""
    removed = present & ~keep
    poison_removed, clean_removed = (removed & is_poison).sum(), (removed & ~is_poison).sum()
    poison, clean = (present & is_poison).sum(), (present & ~is_poison).sum()
    return {
        "poison_removed": poison_removed,
        "clean_removed": clean_removed,
        "recall": jnp.where(poison > 0, poison_removed / jnp.maximum(poison, 1), 0.0),
        "false_positive_rate": jnp.where(clean > 0, clean_removed / jnp.maximum(clean, 1), 0.0),
    }
