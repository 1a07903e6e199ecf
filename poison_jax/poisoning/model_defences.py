"""Model-based data-sanitisation defences: the loss defence, TRIM, SEVER and kNN label sanitisation.

Where the scores of :mod:`poison_jax.poisoning.defences` are geometric, these defences fit the
learner itself and judge the rows by it:

* :class:`LossSanitiser` -- each row's loss under the model fit on the reference rows (the poisoned
  set, or the clean one for the oracle), removed per class by a :class:`~poison_jax.poisoning.defences.Fraction`
  or :class:`~poison_jax.poisoning.defences.Percentile` rule (Koh, Steinhardt & Liang 2022);
* :class:`Trim` -- fit, keep the rows with the smallest losses, refit on them, until the kept set is
  stable (Jagielski et al., S&P 2018);
* :class:`Sever` -- rounds of: fit on the kept rows, score them by the squared projection of their
  centred loss gradients on the top singular vector, remove the highest (Diakonikolas et al., ICML 2019);
* :class:`LabelSanitiser` -- relabel a row to its ``k`` nearest neighbours' majority label when that
  label's share is at least ``eta`` (Paudice, Muñoz-González & Lupu 2018).

Every defence follows the protocol of :meth:`poison_jax.poisoning.defences.Sanitiser.sanitise`:
``sanitise(x, y, present, x_clean, y_clean, num_classes, learner) -> Sanitised(keep, y)``, pure JAX
with static shapes (jittable, vmappable over seeds). Absent rows (``present`` False) enter no fit
and no statistic whatever they hold (NaN included) and are never kept. The :class:`Learner` is the
model, the victim that trains it (:class:`~poison_jax.poisoning.victims.ConvergedVictim` or
:class:`~poison_jax.poisoning.victims.SGDVictim`), its log-λ and its PRNG key.

Example::

    >>> import jax, jax.numpy as jnp
    >>> from poison_jax import engine
    >>> from poison_jax.poisoning import losses, model_defences, models, victims
    >>> x = jnp.linspace(0.0, 1.0, 12)[:, None]
    >>> y = 2.0 * x[:, 0] + 1.0
    >>> y = y.at[3].set(40.0)  # one row far off the line
    >>> learner = model_defences.Learner(models.logistic_regression(1, loss=losses.Squared()),
    ...     victims.ConvergedVictim(engine.NewtonCG(tol=1e-6, maxiter=50)), jnp.array([-6.0]), jax.random.PRNGKey(0))
    >>> present = jnp.ones(12, bool)
    >>> keep, _ = model_defences.Trim(f=0.05).sanitise(x, y, present, x, y, 1, learner)
    >>> jnp.flatnonzero(~keep).tolist()  # ceil(0.05 · 12) = 1 row trimmed
    [3]
    >>> model_defences.Trim(f=1.0)
    Traceback (most recent call last):
    ...
    ValueError: Trim f must be a number in [0, 1), got 1.0
"""

from __future__ import annotations

import dataclasses
import fractions
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from poison_jax.engine import checks
from poison_jax.poisoning import defences

__all__ = [
    "MODEL_DEFENCES",
    "LabelSanitiser",
    "Learner",
    "LossSanitiser",
    "ModelDefence",
    "Sever",
    "Trim",
    "relabel_stats",
]


class Learner(NamedTuple):
    """The model a defence fits: ``model`` (:class:`~poison_jax.poisoning.models.Model`), ``victim``
    (anything with ``.train(model, x, y, weights, log_lam, key) -> (params, converged)``), ``log_lam
    (L,)`` and ``key`` (the victim's PRNG key; every fit uses the same one)."""

    model: Any
    victim: Any
    log_lam: jax.Array
    key: jax.Array

    def fit(self, x: jax.Array, y: jax.Array, weights: jax.Array) -> Any:
        """The parameters the victim trains on the rows of ``x (n, d)``, ``y (n,)`` with ``weights (n,)``
        in {0, 1} (rows of weight 0 are left out)."""
        params, _ = self.victim.train(self.model, x, y, weights, self.log_lam, self.key)
        return params

    def losses(self, params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        """``(n,)`` each row's ``model.loss`` (no penalty)."""
        return self.model.loss(self.model.apply(params, x), y)

    def row_grads(self, params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        """``(n, p)`` each row's gradient of its loss with respect to the flattened parameters."""
        flat, unravel = ravel_pytree(params)

        def one(w, xi, yi):
            return self.losses(unravel(w), xi[None], yi[None])[0]

        return jax.vmap(jax.grad(one), in_axes=(None, 0, 0))(flat, x, y)


def _zeroed(x: jax.Array, y: jax.Array, present: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``x`` and ``y`` with the absent rows set to 0: a fit weighs them 0, and 0 · NaN would be NaN."""
    return jnp.where(present[:, None], x, 0.0), jnp.where(present, y, 0)


def _drop_highest(scores: jax.Array, mask: jax.Array, count: jax.Array) -> jax.Array:
    """``(n,)`` bool: the ``mask`` rows left once its ``count`` highest-scoring rows are dropped (ties:
    the lower index goes first)."""
    order = jnp.argsort(jnp.where(mask, -scores, jnp.inf), stable=True)
    rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.size))
    return mask & (rank >= count)


def _check_share(name: str, value: Any) -> None:
    """A share of the present rows removed: a real number in [0, 1)."""
    if not checks.is_real(value) or not 0 <= value < 1:
        checks.fail(name, value, "a number in [0, 1)")


@dataclasses.dataclass(frozen=True)
class LossSanitiser:
    """Koh et al.'s loss defence: score each row by its loss under the learner fit on the reference
    rows (``statistics``: ``"data-dependent"``, the present rows themselves; ``"oracle"``, the clean
    set) and remove by ``rule`` per class; for a regression (``model.loss.task == "regression"``) the
    rows form one group."""

    rule: defences.Rule = defences.Fraction(0.05)
    statistics: str = "data-dependent"

    def __post_init__(self):
        if not isinstance(self.rule, (defences.Fraction, defences.Percentile)):
            checks.fail("LossSanitiser rule", self.rule, "a removal rule: Fraction(f) or Percentile(q)")
        checks.one_of("LossSanitiser statistics", self.statistics, defences.STATISTICS)

    def sanitise(self, x, y, present, x_clean, y_clean, num_classes: int, learner: Learner) -> defences.Sanitised:
        """``Sanitised(keep (n,), y)``: the present rows the rule keeps, the labels unchanged."""
        num_classes = checks.positive_int("num_classes", num_classes)
        xz, yz = _zeroed(x, y, present)
        if self.statistics == "data-dependent":
            ref = (xz, yz, present)
        else:
            ref = (x_clean, y_clean, jnp.ones(y_clean.shape, bool))
        params = learner.fit(ref[0], ref[1], ref[2].astype(xz.dtype))
        scores = learner.losses(params, xz, yz)
        ref_scores = scores if self.statistics == "data-dependent" else learner.losses(params, ref[0], ref[1])
        groups, ref_groups = yz, ref[1]
        if learner.model.loss.task == "regression":  # targets are no classes: one group
            groups, ref_groups, num_classes = jnp.zeros_like(yz), jnp.zeros_like(ref[1]), 1
        removed = self.rule.removed(scores, groups, present, ref_scores, ref_groups, ref[2], num_classes)
        return defences.Sanitised(present & ~removed, y)


@dataclasses.dataclass(frozen=True)
class Trim:
    """TRIM (Jagielski et al. 2018): keep ``n_keep = n − ceil(f · n)`` of the ``n`` present rows.
    Fit on all of them, then repeat: keep the ``n_keep`` rows with the smallest loss and refit on
    them, until the kept set stops changing or after ``iters`` refits. ``f`` in [0, 1)."""

    f: float = 0.1
    iters: int = 10

    def __post_init__(self):
        _check_share("Trim f", self.f)
        checks.positive_int("Trim iters", self.iters)

    def sanitise(self, x, y, present, x_clean, y_clean, num_classes: int, learner: Learner) -> defences.Sanitised:
        """``Sanitised(keep (n,), y)``: the rows of the last selection, the labels unchanged
        (``x_clean``, ``y_clean`` and ``num_classes`` are not used: the trim is global)."""
        xz, yz = _zeroed(x, y, present)
        trimmed = jnp.asarray(defences.share_counts(self.f, x.shape[0]))[present.sum()]

        def select(weights):  # the present rows left once the highest losses under the fit on `weights` go
            params = learner.fit(xz, yz, weights.astype(xz.dtype))
            return _drop_highest(learner.losses(params, xz, yz), present, trimmed)

        def refit(carry):
            keep, _, count = carry
            new = select(keep)
            return new, jnp.any(new != keep), count + 1

        first = (select(present), jnp.asarray(True), jnp.asarray(0))
        keep, _, _ = jax.lax.while_loop(lambda carry: carry[1] & (carry[2] < self.iters), refit, first)
        return defences.Sanitised(keep, y)


@dataclasses.dataclass(frozen=True)
class Sever:
    """SEVER (Diakonikolas et al. 2019): ``rounds`` times, fit on the kept rows, centre their loss
    gradients ``g_i`` by their mean ``ḡ``, score ``τ_i = ((g_i − ḡ)·v)²`` with ``v`` the top right
    singular vector of the centred gradients, and remove the ``ceil(f · n / rounds)`` highest-scoring
    kept rows (``n`` present rows): about ``f · n`` in all, globally (not per class).

    ``v`` comes from ``jnp.linalg.svd`` of the ``(n, p)`` centred gradients: exact, with no
    iteration count or start vector to choose and no slow convergence when the top two singular
    values are close; for linear models (``p = d + 1``) it costs about what the fit does. A model
    with many parameters (an MLP) would want power iteration instead."""

    f: float = 0.05
    rounds: int = 4

    def __post_init__(self):
        _check_share("Sever f", self.f)
        checks.positive_int("Sever rounds", self.rounds)

    def sanitise(self, x, y, present, x_clean, y_clean, num_classes: int, learner: Learner) -> defences.Sanitised:
        """``Sanitised(keep (n,), y)``: the rows left after the last round, the labels unchanged
        (``x_clean``, ``y_clean`` and ``num_classes`` are not used)."""
        xz, yz = _zeroed(x, y, present)
        per_round = jnp.asarray(defences.share_counts(self.f, x.shape[0], self.rounds))[present.sum()]

        def one_round(keep, _):
            params = learner.fit(xz, yz, keep.astype(xz.dtype))
            scores = self.scores(learner.row_grads(params, xz, yz), keep)
            return _drop_highest(scores, keep, per_round), None

        keep, _ = jax.lax.scan(one_round, present, None, length=self.rounds)
        return defences.Sanitised(keep, y)

    @staticmethod
    def scores(grads: jax.Array, keep: jax.Array) -> jax.Array:
        """``(n,)`` ``τ_i = ((g_i − ḡ)·v)²`` of the rows ``grads (n, p)``; ``ḡ`` and ``v`` from the
        ``keep`` rows only."""
        mean = jnp.where(keep[:, None], grads, 0.0).sum(0) / jnp.maximum(keep.sum(), 1)
        centred = jnp.where(keep[:, None], grads - mean, 0.0)  # zero rows leave the singular vectors unchanged
        _, _, vt = jnp.linalg.svd(centred, full_matrices=False)
        return ((grads - mean) @ vt[0]) ** 2


@dataclasses.dataclass(frozen=True)
class LabelSanitiser:
    """kNN label sanitisation (Paudice et al. 2018): each present row's ``k`` nearest other present
    rows (Euclidean, every class) vote; when the most common label holds a share ``≥ eta`` of the
    ``k`` votes the row takes it (a tie goes to the lower class). Every present row is kept.
    Classification only. Memory: one ``(n, n)`` distance matrix."""

    k: int = 10
    eta: float = 0.5

    def __post_init__(self):
        checks.positive_int("LabelSanitiser k", self.k)
        if not checks.is_real(self.eta) or not 0 < self.eta <= 1:
            checks.fail("LabelSanitiser eta", self.eta, "a number in (0, 1] (the neighbours' share that relabels)")

    def sanitise(self, x, y, present, x_clean, y_clean, num_classes: int, learner: Learner) -> defences.Sanitised:
        """``Sanitised(present, labels (n,))``: the new labels, ``y``'s dtype (the learner only tells a
        regression, which is refused; ``x_clean``, ``y_clean`` are not used)."""
        num_classes = checks.positive_int("num_classes", num_classes)
        if learner.model.loss.task == "regression":
            checks.fail("LabelSanitiser learner's task", "regression", "classification (it relabels classes)")
        if self.k >= x.shape[0]:
            checks.fail(
                "LabelSanitiser k", self.k, f"below the {x.shape[0]} rows (each row's neighbours are the others)"
            )
        xz, yz = _zeroed(x, y, present)
        squared = jnp.sum(xz**2, -1)[:, None] + jnp.sum(xz**2, -1)[None, :] - 2 * xz @ xz.T
        valid = present[None, :] & ~jnp.eye(x.shape[0], dtype=bool)
        _, nearest = jax.lax.top_k(-jnp.where(valid, squared, jnp.inf), self.k)
        voting = jnp.take_along_axis(valid, nearest, 1)  # fewer than k present others: the rest don't vote
        ballots = jax.nn.one_hot(yz.astype(jnp.int32)[nearest], num_classes) * voting[..., None]
        votes = ballots.sum(1)  # (n, K)
        needed = math.ceil(fractions.Fraction(str(self.eta)) * self.k)  # exact: 0.7 · 10 is 7, not 7.000000000000001
        relabel = present & (votes.max(1) >= needed)
        return defences.Sanitised(present, jnp.where(relabel, jnp.argmax(votes, 1).astype(y.dtype), y))


def relabel_stats(
    y_before: jax.Array, y_after: jax.Array, present: jax.Array, is_poison: jax.Array
) -> dict[str, jax.Array]:
    """Scalars: ``poison_relabelled`` and ``clean_relabelled``, the present poison and clean rows
    whose label a defence changed."""
    changed = present & (y_before != y_after)
    return {"poison_relabelled": (changed & is_poison).sum(), "clean_relabelled": (changed & ~is_poison).sum()}


ModelDefence = LossSanitiser | Trim | Sever | LabelSanitiser
MODEL_DEFENCES: dict[str, type[LossSanitiser] | type[Trim] | type[Sever] | type[LabelSanitiser]] = {
    "loss": LossSanitiser,
    "trim": Trim,
    "sever": Sever,
    "label": LabelSanitiser,
}
