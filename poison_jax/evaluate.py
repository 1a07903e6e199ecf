"""Victim evaluation: train on the (poisoned) training set by mini-batch SGD, measure on the test set.

Example::

    >>> import jax, jax.numpy as jnp
    >>> from poison_jax import evaluate, models
    >>> model = models.logistic_regression(3)
    >>> x = jax.random.uniform(jax.random.PRNGKey(0), (2, 100, 3)); y = (x[..., 0] > 0.5).astype(jnp.float32)
    >>> m = evaluate.evaluate_victim(model, x, y, jnp.full((2, 1), -4.0), jax.random.split(jax.random.PRNGKey(1), 2),
    ...                              x[0], y[0], lr=0.5, epochs=20)
    >>> m.error.shape, m.sq_norm.shape
    ((2,), (2, 1))
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from poison_jax import models

__all__ = ["VictimMetrics", "classification_metrics", "evaluate_victim", "train_victim"]


class VictimMetrics(NamedTuple):
    """Test-set metrics of the victim, one row per seed.

    Attributes:
      error: ``(S,)`` test error.
      fpr: ``(S,)`` false-positive rate (negatives, label 0, predicted 1).
      fnr: ``(S,)`` false-negative rate (positives predicted 0).
      log_lam: ``(S, L)`` the log-λ the victim was trained with.
      sq_norm: ``(S, L)`` ``||W_l||²`` of each layer's weights.
      sq_norm_per_weight: ``(S, L)`` ``||W_l||² / (number of weights of layer l)`` (the paper's DNN figure).
      finite: ``(S,)`` whether training stayed finite (a False row's metrics are meaningless).
    """

    error: jax.Array
    fpr: jax.Array
    fnr: jax.Array
    log_lam: jax.Array
    sq_norm: jax.Array
    sq_norm_per_weight: jax.Array
    finite: jax.Array


def train_victim(model: models.Model, x, y, log_lam, key, *, lr, epochs: int, batch_size: int = 64):
    """Mini-batch SGD on ``(Σ_i BCE_i + Σ_l exp(λ_l)/2 ||W_l||²) / n``, reshuffled every epoch, in ``lax.scan``.

    Each step follows the batch estimate ``mean_batch BCE + penalty / n`` of that objective.

    One split (no seed axis): ``x (n, d)``, ``y (n,)``, ``log_lam (L,)``. The last batch of an epoch
    holds the ``n mod batch_size`` remaining points (padding carries zero weight).

    Returns:
      The trained parameters.
    """
    n = x.shape[0]
    num_batches = -(-n // batch_size)
    pad = num_batches * batch_size - n
    weights = jnp.concatenate([jnp.ones(n, x.dtype), jnp.zeros(pad, x.dtype)]).reshape(num_batches, batch_size)
    init_key, key = jax.random.split(key)
    params = model.init(init_key)
    tx = optax.sgd(lr)

    def batch_loss(p, idx, wts):
        mean_bce = jnp.sum(wts * models.bce(model.apply(p, x[idx]), y[idx])) / jnp.sum(wts)
        return mean_bce + models.l2_penalty(model, p, log_lam) / n

    def batch_step(carry, batch):
        p, opt_state = carry
        grads = jax.grad(batch_loss)(p, *batch)
        updates, opt_state = tx.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), None

    def epoch(carry, epoch_key):
        order = jnp.concatenate([jax.random.permutation(epoch_key, n), jnp.zeros(pad, jnp.int32)])
        carry, _ = jax.lax.scan(batch_step, carry, (order.reshape(num_batches, batch_size), weights))
        return carry, None

    (params, _), _ = jax.lax.scan(epoch, (params, tx.init(params)), jax.random.split(key, epochs))
    return params


def classification_metrics(logits, y):
    """``(error, fpr, fnr)`` of the predictions ``logits > 0`` against labels ``y`` in {0, 1}."""
    predicted = logits > 0
    positive = y > 0.5
    error = jnp.mean(predicted != positive)
    fpr = jnp.sum(predicted & ~positive) / jnp.maximum(jnp.sum(~positive), 1)
    fnr = jnp.sum(~predicted & positive) / jnp.maximum(jnp.sum(positive), 1)
    return error, fpr, fnr


@functools.partial(jax.jit, static_argnames=("model", "epochs", "batch_size"))
def evaluate_victim(model: models.Model, x_train, y_train, log_lam, keys, x_test, y_test, *, lr, epochs: int,
                    batch_size: int = 64) -> VictimMetrics:
    """Train one victim per seed with :func:`train_victim` and measure it on the shared test set.

    Args:
      model: the learner.
      x_train, y_train: ``(S, n, d)``, ``(S, n)`` (poisoned) training sets.
      log_lam: ``(S, L)`` log-λ per seed and layer.
      keys: ``(S, 2)`` PRNG keys (initialisation and shuffling).
      x_test, y_test: ``(n_test, d)``, ``(n_test,)``.
      lr, epochs, batch_size: SGD settings (the paper: batch 64).
    Returns:
      :class:`VictimMetrics` with a leading seed axis.
    """
    def one(x, y, lam, key):
        params = train_victim(model, x, y, lam, key, lr=lr, epochs=epochs, batch_size=batch_size)
        error, fpr, fnr = classification_metrics(model.apply(params, x_test), y_test)
        sq_norm = models.squared_norms(model, params)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(params)]))
        return VictimMetrics(error, fpr, fnr, lam, sq_norm, sq_norm / models.weight_sizes(model, params), finite)

    return jax.vmap(one)(x_train, y_train, log_lam, keys)
