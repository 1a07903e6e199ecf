"""Victim evaluation: train on the (poisoned) training set by mini-batch SGD, measure on the test set.

Example::

    >>> import jax, jax.numpy as jnp
    >>> from poison_jax.poisoning import models, victims
    >>> model = models.logistic_regression(3)
    >>> x = jax.random.uniform(jax.random.PRNGKey(0), (2, 100, 3)); y = (x[..., 0] > 0.5).astype(jnp.float32)
    >>> m = victims.evaluate_victim(model, x, y, jnp.full((2, 1), -4.0), jax.random.split(jax.random.PRNGKey(1), 2),
    ...                              x[0], y[0], lr=0.5, epochs=20)
    >>> m.error.shape, m.sq_norm.shape
    ((2,), (2, 1))
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from poison_jax import engine
from poison_jax.engine import checks
from poison_jax.poisoning import models, seeds

__all__ = [
    "ConvergedVictim",
    "SGDVictim",
    "VictimMetrics",
    "classification_metrics",
    "confusion_matrix",
    "evaluate_victim",
    "predicted_classes",
    "train_victim",
]


class VictimMetrics(NamedTuple):
    """Test-set metrics of the victim, one row per seed.

    Attributes:
      error: ``(S,)`` test error; for a regression loss (``model.loss.task == "regression"``) the
        test mean squared error.
      fpr: ``(S,)`` false-positive rate (negatives, label 0, predicted 1); NaN for a regression and
        for more than two classes.
      fnr: ``(S,)`` false-negative rate (positives predicted 0); NaN as ``fpr``.
      log_lam: ``(S, L)`` the log-λ the victim was trained with.
      sq_norm: ``(S, L)`` ``||W_l||²`` of each layer's weights.
      sq_norm_per_weight: ``(S, L)`` ``||W_l||² / (number of weights of layer l)`` (the paper's DNN figure).
      finite: ``(S,)`` whether training stayed finite (a False row's metrics are meaningless).
      converged: ``(S,)`` whether a :class:`ConvergedVictim` reached its tolerance (always True for SGD).
      per_class_error: ``(S, K)`` the test error within each true class ``(K = max(model.num_classes, 2))``;
        for two classes ``[fpr, fnr]``; NaN for a regression.
      confusion: ``(S, K, K)`` test counts, row the true class, column the predicted one
        (:func:`confusion_matrix`); NaN for a regression.
    """

    error: jax.Array
    fpr: jax.Array
    fnr: jax.Array
    log_lam: jax.Array
    sq_norm: jax.Array
    sq_norm_per_weight: jax.Array
    finite: jax.Array
    converged: jax.Array
    per_class_error: jax.Array
    confusion: jax.Array


def train_victim(
    model: models.Model,
    x: ArrayLike,
    y: ArrayLike,
    log_lam: ArrayLike,
    key: jax.Array,
    *,
    lr: ArrayLike,
    epochs: int,
    batch_size: int = 64,
    weights: ArrayLike | None = None,
):
    """Mini-batch SGD on ``(Σ_i ℓ_i + penalty) / n`` (``ℓ = model.loss``), reshuffled every epoch, in ``lax.scan``.

    Each step follows the batch estimate ``mean_batch ℓ + penalty / n`` of that objective.

    One split (no seed axis): ``x (n, d)``, ``y (n,)``, ``log_lam (L,)``. The last batch of an epoch
    holds the ``n mod batch_size`` remaining points (padding carries zero weight). ``weights``
    ``(n,)`` in {0, 1} (optional) leaves out the rows of weight 0 (e.g. poison points of
    :class:`~poison_jax.poisoning.attack.Add` mode not yet active): every epoch shuffles the rows of weight
    1 into the first batches, and batches with no such row make no step.

    Returns:
      The trained parameters.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    n = x.shape[0]
    num_batches = -(-n // batch_size)
    pad = num_batches * batch_size - n
    row_weights, n_used = _row_weights(weights, n, pad, x.dtype)
    init_key, key = jax.random.split(key)
    params = model.init(init_key)
    tx = optax.sgd(lr)

    def batch_loss(p, idx, wts):
        # A row of weight 0 never contributes, even a non-finite one (zeroed before the model sees it).
        xb = jnp.where(wts[:, None] > 0, x[idx], 0.0)
        per_row = jnp.where(wts > 0, wts * model.loss(model.apply(p, xb), y[idx]), 0.0)
        mean_bce = jnp.sum(per_row) / jnp.maximum(jnp.sum(wts), 1)
        return mean_bce + models.penalty(model, p, log_lam) / n_used

    def batch_step(carry, idx):
        p, opt_state = carry
        wts = row_weights[idx]
        grads = jax.grad(batch_loss)(p, idx, wts)
        updates, new_state = tx.update(grads, opt_state, p)
        stepped = (optax.apply_updates(p, updates), new_state)
        return jax.tree_util.tree_map(lambda a, b: jnp.where(jnp.sum(wts) > 0, a, b), stepped, carry), None

    def epoch(carry, epoch_key):
        order = _epoch_order(epoch_key, weights, n, pad)
        carry, _ = jax.lax.scan(batch_step, carry, order.reshape(num_batches, batch_size))
        return carry, None

    (params, _), _ = jax.lax.scan(epoch, (params, tx.init(params)), jax.random.split(key, epochs))
    return params


def _row_weights(weights, n: int, pad: int, dtype) -> tuple[jax.Array, jax.Array]:
    """``(per-row weights (n + pad,), the number of rows that count)``: every row 1 when ``weights`` is
    None, else ``weights``; the ``pad`` padding rows 0."""
    if weights is None:
        row_weights, n_used = jnp.ones(n, dtype), jnp.asarray(n, dtype)
    else:
        weights = jnp.asarray(weights)
        row_weights, n_used = weights.astype(dtype), jnp.sum(weights).astype(dtype)
    return jnp.concatenate([row_weights, jnp.zeros(pad, dtype)]), n_used


def _epoch_order(key, weights, n: int, pad: int) -> jax.Array:
    """One epoch's order of the rows, ``(n + pad,)``: a permutation, the rows of weight 1 first (in
    random order) when ``weights`` are given, then ``pad`` times index ``n`` (a padding row of weight 0)."""
    if weights is None:
        order = jax.random.permutation(key, n)
    else:
        order = jnp.argsort(jnp.where(jnp.asarray(weights) > 0, jax.random.uniform(key, (n,)), 2.0))
    return jnp.concatenate([order, jnp.full(pad, n, jnp.int32)])


@dataclasses.dataclass(frozen=True)
class SGDVictim:
    """The paper's victim: :func:`train_victim` (mini-batch SGD, step ``lr``, ``epochs``, ``batch_size``)."""

    lr: float
    epochs: int
    batch_size: int = 64
    name = "sgd"

    def __post_init__(self):
        checks.positive_finite("SGDVictim lr", self.lr, error=ValueError)
        for field in ("epochs", "batch_size"):
            checks.positive_int(f"SGDVictim {field}", getattr(self, field))

    def train(self, model, x, y, weights, log_lam, key):
        params = train_victim(
            model,
            x,
            y,
            log_lam,
            key,
            lr=self.lr,
            epochs=self.epochs,
            batch_size=min(self.batch_size, x.shape[0]),
            weights=weights,
        )
        return params, jnp.asarray(True)


@dataclasses.dataclass(frozen=True)
class ConvergedVictim:
    """A victim trained to convergence: ``solver`` (e.g. :class:`~poison_jax.engine.NewtonCG`) on
    the full objective ``(Σ_i ℓ_i + penalty) / n`` (``ℓ = model.loss``) from the model's
    initialisation. Whether it reached the solver's tolerance is reported in
    :attr:`VictimMetrics.converged`."""

    solver: engine.NewtonCG | engine.LBFGS | engine.DenseNewton = engine.NewtonCG(tol=1e-5, maxiter=200)
    name = "converged"

    def __post_init__(self):
        if not isinstance(self.solver, (engine.NewtonCG, engine.LBFGS, engine.DenseNewton)):
            raise TypeError(
                f"ConvergedVictim solver must be NewtonCG(...), LBFGS(...) or DenseNewton(...), got {self.solver!r}"
            )

    def train(self, model, x, y, weights, log_lam, key):
        weights = jnp.ones(x.shape[0], x.dtype) if weights is None else weights.astype(x.dtype)
        x = jnp.where(weights[:, None] > 0, x, 0.0)  # rows of weight 0 never contribute, even non-finite ones

        def objective(p):
            total = jnp.sum(weights * model.loss(model.apply(p, x), y)) + models.penalty(model, p, log_lam)
            return total / jnp.sum(weights)

        solution = self.solver.solve(objective, model.init(key))
        return solution.w, solution.status == engine.RESULTS.successful


def predicted_classes(scores: ArrayLike) -> jax.Array:
    """The predicted class, int32 ``(n,)``: ``scores > 0`` for one score per example ``(n,)``, the
    argmax of ``(n, K)`` scores."""
    scores = jnp.asarray(scores)
    return jnp.argmax(scores, axis=-1).astype(jnp.int32) if scores.ndim == 2 else (scores > 0).astype(jnp.int32)


def confusion_matrix(scores: ArrayLike, y: ArrayLike, num_classes: int) -> jax.Array:
    """Counts ``(K, K)`` (float32) of the test points by true class (row) and predicted class
    (:func:`predicted_classes`, column); labels ``y (n,)`` in 0..K−1."""
    true = jnp.asarray(y).astype(jnp.int32)
    return jnp.zeros((num_classes, num_classes), jnp.float32).at[true, predicted_classes(scores)].add(1.0)


def classification_metrics(logits: ArrayLike, y: ArrayLike):
    """``(error, fpr, fnr)`` of the predictions ``logits > 0`` against labels ``y`` in {0, 1}."""
    predicted = jnp.asarray(logits) > 0
    positive = jnp.asarray(y) > 0.5
    error = jnp.mean(predicted != positive)
    fpr = jnp.sum(predicted & ~positive) / jnp.maximum(jnp.sum(~positive), 1)
    fnr = jnp.sum(~predicted & positive) / jnp.maximum(jnp.sum(positive), 1)
    return error, fpr, fnr


def evaluate_victim(
    model: models.Model,
    x_train: ArrayLike,
    y_train: ArrayLike,
    log_lam: ArrayLike,
    keys: ArrayLike,
    x_test: ArrayLike,
    y_test: ArrayLike,
    *,
    lr: float | None = None,
    epochs: int | None = None,
    batch_size: int = 64,
    victim: SGDVictim | ConvergedVictim | None = None,
    weights=None,
    seed_lanes: int | None = None,
) -> VictimMetrics:
    """Train one victim per seed and measure it on the shared test set.

    Args:
      model: the learner.
      x_train, y_train: ``(S, n, d)``, ``(S, n)`` (poisoned) training sets.
      log_lam: ``(S, L)`` log-λ per seed and layer.
      keys: ``(S, 2)`` PRNG keys (initialisation and shuffling).
      x_test, y_test: ``(n_test, d)``, ``(n_test,)``.
      lr, epochs, batch_size: the paper's SGD victim (batch 64), when ``victim`` is None.
      victim: :class:`SGDVictim` or :class:`ConvergedVictim` (give this or ``lr`` and ``epochs``).
      weights: ``(S, n)`` row weights in {0, 1}, or None (every row counts).
      seed_lanes: how the seed axis runs, see :func:`poison_jax.poisoning.seeds.over_seeds`.
    Returns:
      :class:`VictimMetrics` with a leading seed axis.
    """
    if victim is None:
        if lr is None or epochs is None:
            raise ValueError("evaluate_victim needs victim=SGDVictim(...)/ConvergedVictim(...), or lr and epochs")
        victim = SGDVictim(lr=lr, epochs=epochs, batch_size=batch_size)
    elif lr is not None or epochs is not None:
        raise ValueError(f"evaluate_victim got victim={victim!r} and lr/epochs: give one or the other")
    return _evaluate(model, victim, seed_lanes, x_train, y_train, weights, log_lam, keys, x_test, y_test)


@functools.partial(jax.jit, static_argnames=("model", "victim", "seed_lanes"))
def _evaluate(model, victim, seed_lanes, x_train, y_train, weights, log_lam, keys, x_test, y_test):
    def one(x, y, w, lam, key):
        params, converged = victim.train(model, x, y, w, lam, key)
        scores = model.apply(params, x_test)
        k = model.num_classes
        if model.loss.task == "regression":  # no classes: the per-class metrics are NaN
            error, fpr, fnr = jnp.mean((scores - y_test) ** 2), jnp.nan, jnp.nan
            confusion, per_class = jnp.full((k, k), jnp.nan), jnp.full((k,), jnp.nan)
        else:
            confusion = confusion_matrix(scores, y_test, k)
            # A class absent from the test set has no error to measure: 0 rather than 0/0.
            per_class = 1.0 - jnp.diag(confusion) / jnp.maximum(jnp.sum(confusion, axis=1), 1.0)
            if k == 2:
                error, fpr, fnr = classification_metrics(scores, y_test)
            else:
                error, fpr, fnr = 1.0 - jnp.trace(confusion) / jnp.sum(confusion), jnp.nan, jnp.nan
        sq_norm = models.squared_norms(model, params)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(params)]))
        norm_per_weight = sq_norm / models.weight_sizes(model, params)
        return VictimMetrics(error, fpr, fnr, lam, sq_norm, norm_per_weight, finite, converged, per_class, confusion)

    return seeds.over_seeds(one, x_train, y_train, weights, log_lam, keys, lanes=seed_lanes)
