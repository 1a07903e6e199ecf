"""The defender's λ on clean data: k-fold cross-validation over a grid (λ_CLEAN), or hypergradient descent.

Example::

    >>> import jax, jax.numpy as jnp
    >>> from poison_jax import hyperopt, models
    >>> model = models.logistic_regression(3)
    >>> x = jax.random.uniform(jax.random.PRNGKey(0), (2, 60, 3)); y = (x[..., 0] > 0.5).astype(jnp.float32)
    >>> best, curve = hyperopt.cv_log_lambda(model, x, y, jax.random.split(jax.random.PRNGKey(1), 2),
    ...                                      jnp.linspace(-8.0, 1.0, 10), steps=100, lr=0.5)
    >>> best.shape, curve.shape
    ((2,), (2, 10))
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from poison_jax import attack, bilevel, models, seeds

__all__ = ["cv_log_lambda", "learn_lambda_clean"]


@functools.cache
def _fold_loss(model: models.Model):
    """The penalised training loss on the rows of weight 1, ``(w, log_lam, x, y, row_weight)``."""

    def inner_loss(w, lam, x, y, row_weight):
        total = jnp.sum(row_weight * model.loss(model.apply(w, x), y)) + models.penalty(model, w, lam)
        return total / jnp.sum(row_weight)

    return inner_loss


def _cv_one(model, fit, folds, x, y, key, grid):
    n = x.shape[0]
    perm_key, init_key = jax.random.split(key)
    fold_of = jnp.zeros(n, jnp.int32).at[jax.random.permutation(perm_key, n)].set(jnp.arange(n) % folds)

    def held_out_loss(log_lam, fold):
        train_w = (fold_of != fold).astype(x.dtype)
        held_w = 1.0 - train_w
        lam = jnp.full((model.num_lams,), log_lam, x.dtype)
        w = fit(_fold_loss(model), model.init(init_key), lam, x, y, train_w)
        return jnp.sum(held_w * model.loss(model.apply(w, x), y)) / jnp.sum(held_w)

    losses = jax.vmap(lambda g: jax.vmap(lambda f: held_out_loss(g, f))(jnp.arange(folds)))(grid)
    curve = jnp.mean(losses, axis=1)
    return grid[jnp.argmin(curve)], curve


def cv_log_lambda(
    model: models.Model,
    x_train: ArrayLike,
    y_train: ArrayLike,
    keys: ArrayLike,
    grid: ArrayLike,
    *,
    folds: int = 5,
    steps: int | None = None,
    lr=None,
    method: bilevel.Method | None = None,
    seed_lanes: int | None = None,
):
    """λ_CLEAN: k-fold cross-validation of log-λ (one value for all layers) on the clean training set.

    For each seed, each grid value and each fold the model is trained on the other folds by the
    attack's inner training: ``steps`` steps of full-batch gradient descent with step ``lr`` (the
    paper), or ``method.fit`` of a hypergradient strategy (e.g. ``Implicit``'s converged solver);
    the grid value with the lowest mean held-out loss (``model.loss``) wins. Vmapped over seeds × grid ×
    folds.

    Args:
      model: the learner.
      x_train, y_train: ``(S, n, d)``, ``(S, n)`` clean training sets.
      keys: ``(S, 2)`` PRNG keys (fold assignment and initialisation).
      grid: ``(G,)`` candidate log-λ (the paper: over [-8, 1]).
      folds: number of folds (the paper: 5).
      steps, lr: inner gradient descent (give these or ``method``).
      method: a strategy of :mod:`poison_jax.bilevel` whose ``fit`` trains the model.
      seed_lanes: how the seed axis runs, see :func:`poison_jax.seeds.over_seeds`.
    Returns:
      ``(best, curve)``: the chosen log-λ ``(S,)`` and the mean held-out loss ``(S, G)``.
    """
    if folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
    if (method is None) == (steps is None or lr is None):
        raise ValueError("cv_log_lambda trains with steps and lr (gradient descent) or with method=...: give one")
    if method is None:
        assert steps is not None and lr is not None  # checked above
        method = bilevel.RMD(steps=steps, lr=float(lr))
    x_train = jnp.asarray(x_train)
    return _cv(
        model,
        method,
        folds,
        seed_lanes,
        x_train,
        jnp.asarray(y_train),
        jnp.asarray(keys),
        jnp.asarray(grid, x_train.dtype),
    )


@functools.partial(jax.jit, static_argnames=("model", "method", "folds", "seed_lanes"))
def _cv(model, method, folds, seed_lanes, x_train, y_train, keys, grid):
    one = functools.partial(_cv_one, model, method.fit, folds)
    return seeds.over_seeds(lambda x, y, k: one(x, y, k, grid), x_train, y_train, keys, lanes=seed_lanes)


def learn_lambda_clean(settings: attack.AttackSettings, splits, state: attack.AttackState, num_iters: int):
    """λ learned by hypergradient descent on the validation loss with no poison point active (T_λ).

    Starts from ``state.log_lam`` (the paper warm-starts at log 5) and returns ``(state, info)`` as
    :func:`poison_jax.attack.run_attack`, with every poison point inactive.
    """
    clean = attack.set_poison_count(state, 0, 0)
    return attack.run_attack(settings, splits, clean, num_iters=num_iters, update_xp=False, update_lam=True)
