"""A sanitiser relaxed into soft keep-weights, so the attacker's hypergradient sees it (floor 1).

A :class:`~poison_jax.poisoning.defences.Sanitiser` keeps a row of class ``c`` when its score
``s`` lies at or below the class's threshold ``t_c``: a step function, whose derivative with
respect to the poison points is zero almost everywhere. :class:`Relaxed` replaces the step by a
sigmoid,

    weight_i = σ((t_c − s_i) / τ_c),    τ_c = temperature · (the median score of class c),

so a poison point that a sanitiser would remove weighs little in the inner problem and the
hypergradient tells the attacker how moving it changes that weight: an attacker that knows the
sanitiser, the kind that breaks it (Koh, Steinhardt & Liang, "Stronger data poisoning attacks break
data sanitization defenses", 2022), here through the bilevel problem itself. With
:attr:`~poison_jax.poisoning.attack.AttackSettings.relaxed` set, the attack's inner loss is the
weighted mean over the poisoned set (:func:`~poison_jax.poisoning.attack.poisoning_losses`).

The scores, thresholds and scales are the sanitiser's own, from the same statistics: the poisoned
set itself (``"data-dependent"``: the clean rows' weights move with the poison too) or the clean
training set (``"oracle"``). Thresholds: ``Percentile(q)``: its
:meth:`~poison_jax.poisoning.defences.Percentile.thresholds`; ``Fraction(f)``: halfway between the
class's highest kept and lowest removed score of the hard rule (exactly its decision, where the
``(1 − f)`` quantile is off by one row for some class sizes). Scale: the median of the class's
finite reference scores, which a minority of poison points cannot move far and which is finite
where ``t_c`` is not (a class the rule leaves whole); 1 where it is 0 or there is none. So the
temperature is unit-free: at 0.1 a row a tenth of a typical score inside the threshold weighs
σ(1) ≈ 0.73. As the temperature goes to 0 the weights go to the hard ``Sanitiser.keep`` (a row
scoring exactly ``t_c`` weighs 1/2).

Example::

    >>> import jax.numpy as jnp
    >>> from poison_jax.poisoning import defences, relaxed
    >>> x = jnp.array([[0.0], [1.0], [2.0], [3.0], [30.0], [10.0], [11.0], [13.0]])
    >>> y = jnp.array([0, 0, 0, 0, 0, 1, 1, 1])
    >>> present = jnp.ones(8, bool)
    >>> sanitiser = defences.Sanitiser(defences.Sphere(), defences.Fraction(0.2))
    >>> sanitiser.keep(x, y, present, x, y).tolist()
    [True, True, True, True, False, True, True, False]
    >>> soft = relaxed.Relaxed(sanitiser, temperature=0.1).weights(x, y, present, x, y, num_classes=2)
    >>> [round(float(w), 2) for w in soft]
    [1.0, 1.0, 1.0, 1.0, 0.0, 0.78, 1.0, 0.22]
    >>> relaxed.Relaxed(defences.Sanitiser(defences.SVD()))
    Traceback (most recent call last):
    ...
    ValueError: Relaxed score must be Sphere(), Slab() or KNN(k), got SVD(mass=0.95)
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from poison_jax.engine import checks
from poison_jax.poisoning import defences

__all__ = ["Relaxed"]

_MEDIAN = defences.Percentile(50.0)
# The scale of a class whose median score is 0 or undefined (no finite reference score).
_NO_SCALE = 1.0


def _class_masks(y: jax.Array, present: jax.Array, num_classes: int) -> jax.Array:
    """``(K, n)`` bool: row ``i`` is present and of class ``c``."""
    return (y[None, :] == jnp.arange(num_classes)[:, None]) & present[None, :]


def _parked(x: jax.Array, present: jax.Array, *others: jax.Array) -> jax.Array:
    """``x`` with each absent row moved to one corner beyond every present row and every row of
    ``others`` (the reference), so absent rows (NaN, or a copy of a centroid or a neighbour) make no
    zero distance: a distance's derivative at 0 is NaN, and through the shared centroids it would
    reach every row's gradient."""
    highest = [jnp.max(jnp.where(present[:, None], x, -jnp.inf), 0), *(jnp.max(o, 0) for o in others)]
    corner = functools.reduce(jnp.maximum, highest) + 1.0
    corner = jax.lax.stop_gradient(jnp.where(jnp.isfinite(corner), corner, 0.0))  # no present row: any point
    return jnp.where(present[:, None], x, corner)


def _margin(thresholds: jax.Array, scores: jax.Array, tau: jax.Array) -> jax.Array:
    """``(t − s)/τ`` elementwise; ±inf where ``t`` or ``s`` is infinite (``+inf`` where ``t >= s``:
    kept), computed so that no infinity enters a derivative."""
    finite = jnp.isfinite(thresholds) & jnp.isfinite(scores)
    inside = (jnp.where(finite, thresholds, 0.0) - jnp.where(finite, scores, 0.0)) / tau
    return jnp.where(finite, inside, jnp.where(thresholds >= scores, jnp.inf, -jnp.inf))


@dataclasses.dataclass(frozen=True)
class Relaxed:
    """The soft keep-weights of ``sanitiser`` at ``temperature`` (> 0, relative to each class's
    median score): see the module docstring.

    The sanitiser's score must be differentiable in the poison points: ``Sphere()``, ``Slab()`` or
    ``KNN(k)``. (``SVD``'s derivative divides by differences of singular values and its subspace's
    size jumps.)
    """

    sanitiser: defences.Sanitiser
    temperature: float = 0.1

    def __post_init__(self):
        if not isinstance(self.sanitiser, defences.Sanitiser):
            checks.fail(
                "Relaxed sanitiser", self.sanitiser, "a poison_jax.poisoning.defences.Sanitiser", error=TypeError
            )
        score = self.sanitiser.score
        if not isinstance(score, (defences.Sphere, defences.Slab, defences.KNN)):
            checks.fail("Relaxed score", score, "Sphere(), Slab() or KNN(k)")
        if not checks.is_real(self.temperature) or self.temperature <= 0:
            checks.fail(
                "Relaxed temperature", self.temperature, "a finite number > 0 (relative to a class's median score)"
            )

    def weights(
        self,
        x: jax.Array,
        y: jax.Array,
        present: jax.Array,
        x_clean: jax.Array,
        y_clean: jax.Array,
        num_classes: int = 2,
    ) -> jax.Array:
        """``(n,)`` the soft keep-weights in [0, 1] of the rows of ``x (n, d)``, ``y (n,)`` (0 for a
        row not ``present (n,)``, whatever it holds: its gradient is 0, never NaN). ``x_clean (m, d)``,
        ``y_clean (m,)`` give the oracle's statistics, as in ``Sanitiser.keep``."""
        num_classes = checks.positive_int("num_classes", num_classes)
        if self.sanitiser.statistics == "data-dependent":
            x = _parked(x, present)
            ref = (x, y, present)  # the same array: KNN leaves each row out of its own neighbours
        else:
            x = _parked(x, present, x_clean)
            ref = (x_clean, y_clean, jnp.ones(y_clean.shape, bool))
        score = self.sanitiser.score
        scores = score.scores(x, y, present, *ref, num_classes)
        ref_scores = scores if ref[0] is x else score.scores(*ref, *ref, num_classes)
        thresholds = self.thresholds(scores, y, present, ref_scores, ref[1], ref[2], num_classes)
        scale = _MEDIAN.thresholds(ref_scores, ref[1], ref[2] & jnp.isfinite(ref_scores), num_classes)
        scale = jnp.where(jnp.isfinite(scale) & (scale > 0), scale, _NO_SCALE)
        labels = jnp.clip(y.astype(jnp.int32), 0, num_classes - 1)  # an absent row's label may be garbage
        margin = _margin(thresholds[labels], scores, self.temperature * scale[labels])
        return jnp.where(present, jax.nn.sigmoid(margin), 0.0)

    def thresholds(
        self,
        scores: jax.Array,
        y: jax.Array,
        present: jax.Array,
        ref_scores: jax.Array,
        ref_y: jax.Array,
        ref_present: jax.Array,
        num_classes: int,
    ) -> jax.Array:
        """``(K,)`` each class's ``t_c``: the hard rule keeps a row of class ``c`` scoring below it and
        removes one above it (``inf``: the class is kept whole; ``-inf``: removed whole)."""
        rule = self.sanitiser.rule
        if isinstance(rule, defences.Percentile):
            return rule.thresholds(ref_scores, ref_y, ref_present, num_classes)
        removed = rule.removed(scores, y, present, ref_scores, ref_y, ref_present, num_classes)
        masks = _class_masks(y, present, num_classes)
        highest_kept = jnp.max(jnp.where(masks & ~removed, scores, -jnp.inf), 1)
        lowest_removed = jnp.min(jnp.where(masks & removed, scores, jnp.inf), 1)
        halfway = (highest_kept + lowest_removed) / 2  # inf − inf (NaN) only where not selected below
        return jnp.where(lowest_removed == jnp.inf, jnp.inf, jnp.where(highest_kept == -jnp.inf, -jnp.inf, halfway))
