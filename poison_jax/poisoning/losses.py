"""Per-example losses of the learners, as values (floor 1).

A model's loss turns its scores ``s = model.apply(params, x)`` and targets ``y`` into per-example
losses; the poisoning problem, the victims and the CV all use it (the attacker's objective is its
mean on the validation set). ``loss.task`` says how a victim is judged: ``"classification"``
(labels in {0, 1}, class 1 predicted where ``s > 0``; or labels in {0, ..., K-1} with scores
``(n, K)``, the argmax predicted; test error) or ``"regression"`` (targets in [0, 1], test mean
squared error).

* :class:`Logistic` -- the binary cross-entropy of logistic regression, the paper's (default); on
  ``(n, K)`` scores the softmax cross-entropy (multinomial logistic regression);
* :class:`SmoothedHinge` -- a linear SVM's hinge loss ``max(0, 1 − m)`` on the margin
  ``m = (2y − 1) s``, smoothed quadratically over ``1 − h < m < 1``: ``0`` for ``m ≥ 1``,
  ``(1 − m)² / (2h)`` in between and ``1 − m − h/2`` below. It is continuously differentiable with
  curvature ``1/h`` on the smoothed band and 0 elsewhere, so with the L2 penalty the inner problem
  is strongly convex and the hypergradients are those of this smoothed SVM (exact where no margin
  sits on a band edge, which has probability zero for continuous data);
* :class:`Squared` -- ``(s − y)² / 2``: with the L2 penalty, ridge regression.

Example::

    >>> import jax.numpy as jnp
    >>> from poison_jax.poisoning import losses
    >>> s, y = jnp.array([2.0, 0.8, -3.0]), jnp.array([1.0, 1.0, 1.0])
    >>> [round(v, 4) for v in losses.SmoothedHinge(smoothing=0.5)(s, y).tolist()]
    [0.0, 0.04, 3.75]
    >>> [round(v, 4) for v in losses.Logistic()(jnp.zeros((2, 4)), jnp.array([0.0, 3.0])).tolist()]  # log 4
    [1.3863, 1.3863]
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from poison_jax.engine import checks

__all__ = ["LOSSES", "Logistic", "Loss", "SmoothedHinge", "Squared", "bce"]


def bce(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example binary cross-entropy of ``logits`` against labels ``y`` in {0, 1} (stable)."""
    return jax.nn.softplus(logits) - y * logits


@dataclasses.dataclass(frozen=True)
class Logistic:
    """Binary cross-entropy on logits ``(n,)`` (logistic regression; the paper's loss), or the softmax
    cross-entropy on logits ``(n, K)`` against labels ``(n,)`` holding class indices 0..K-1 as floats."""

    task = "classification"

    def __call__(self, scores: jax.Array, y: jax.Array) -> jax.Array:
        if scores.ndim == y.ndim + 1:  # K scores per example: multinomial
            return optax.losses.softmax_cross_entropy_with_integer_labels(scores, y.astype(jnp.int32))
        return bce(scores, y)


@dataclasses.dataclass(frozen=True)
class SmoothedHinge:
    """The hinge loss of a linear SVM, smoothed quadratically over a band of width ``smoothing`` (> 0)."""

    smoothing: float = 0.5
    task = "classification"

    def __post_init__(self):
        if not checks.is_real(self.smoothing) or self.smoothing <= 0:
            checks.fail("SmoothedHinge smoothing", self.smoothing, "a finite number > 0 (the band's width)")

    def __call__(self, scores: jax.Array, y: jax.Array) -> jax.Array:
        h = self.smoothing
        gap = 1.0 - (2.0 * y - 1.0) * scores  # 1 − margin
        return jnp.where(gap <= 0, 0.0, jnp.where(gap < h, gap**2 / (2 * h), gap - h / 2))


@dataclasses.dataclass(frozen=True)
class Squared:
    """``(s − y)² / 2``, the squared error of a regression (ridge regression with the L2 penalty)."""

    task = "regression"

    def __call__(self, scores: jax.Array, y: jax.Array) -> jax.Array:
        return 0.5 * (scores - y) ** 2


Loss = Logistic | SmoothedHinge | Squared
LOSSES: dict[str, type[Logistic] | type[SmoothedHinge] | type[Squared]] = {
    "logistic": Logistic,
    "smoothed-hinge": SmoothedHinge,
    "squared": Squared,
}
