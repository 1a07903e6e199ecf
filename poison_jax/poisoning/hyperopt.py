"""Learning hyperparameters: λ_CLEAN by k-fold cross-validation over a grid, or by hypergradient descent.

* :func:`cv_log_lambda` -- the defender's λ_CLEAN: a grid of log-λ, k-fold cross-validated
  (vmapped over seeds × grid × folds).
* :func:`learn_lambda_clean` -- λ learned by the attack's hypergradient loop with no poison.
* :func:`fit` -- the general outer loop on the engine alone: any bilevel problem, any strategy of
  :mod:`poison_jax.engine`, any optax optimiser, a box, warm starts; one ``lax.scan`` under
  ``jax.jit``. See the docs page "Learning hyperparameters with the engine".

Example::

    >>> import jax, jax.numpy as jnp
    >>> from poison_jax.poisoning import hyperopt, models
    >>> model = models.logistic_regression(3)
    >>> x = jax.random.uniform(jax.random.PRNGKey(0), (2, 60, 3)); y = (x[..., 0] > 0.5).astype(jnp.float32)
    >>> best, curve = hyperopt.cv_log_lambda(model, x, y, jax.random.split(jax.random.PRNGKey(1), 2),
    ...                                      jnp.linspace(-8.0, 1.0, 10), steps=100, lr=0.5)
    >>> best.shape, curve.shape
    ((2,), (2, 10))

:func:`fit` on ridge regression's log-λ against a validation set::

    >>> import jax.numpy as jnp, optax
    >>> from poison_jax import engine
    >>> from poison_jax.poisoning import hyperopt
    >>> def inner(w, log_lam, x, y, xv, yv):
    ...     return jnp.sum((x @ w - y) ** 2) + jnp.exp(log_lam) * jnp.sum(w ** 2)
    >>> def outer(w, log_lam, x, y, xv, yv):
    ...     return jnp.mean((xv @ w - yv) ** 2)
    >>> x = jnp.array([[1., 0.], [0., 1.], [1., 1.], [1., -1.]]); y = jnp.array([1., 0., 1.5, 0.])
    >>> xv = jnp.array([[1., 1.], [2., 0.]]); yv = jnp.array([0.8, 1.2])
    >>> result = hyperopt.fit(engine.Implicit(), inner, outer, jnp.zeros(2), jnp.array(0.0),
    ...                       x, y, xv, yv, optimizer=optax.adam(0.1), steps=50, box=(-3.0, 3.0))
    >>> result.values.shape, bool(result.values[-1] < result.values[0]), int(result.skipped)
    ((50,), True, 0)
    >>> bool(jnp.all(result.status == engine.RESULTS.successful)), bool(-3.0 <= result.theta <= 3.0)
    (True, True)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu
from jax.typing import ArrayLike

from poison_jax import engine
from poison_jax.poisoning import attack, models, seeds

__all__ = ["FitResult", "cv_log_lambda", "fit", "learn_lambda_clean"]

PyTree = Any


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
    method: engine.Method | None = None,
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
      method: a strategy of :mod:`poison_jax.engine` whose ``fit`` trains the model.
      seed_lanes: how the seed axis runs, see :func:`poison_jax.poisoning.seeds.over_seeds`.
    Returns:
      ``(best, curve)``: the chosen log-λ ``(S,)`` and the mean held-out loss ``(S, G)``.
    """
    if folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
    if (method is None) == (steps is None or lr is None):
        raise ValueError("cv_log_lambda trains with steps and lr (gradient descent) or with method=...: give one")
    if method is None:
        assert steps is not None and lr is not None  # checked above
        method = engine.RMD(steps=steps, lr=float(lr))
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
    :func:`poison_jax.poisoning.attack.run_attack`, with every poison point inactive.
    """
    clean = attack.set_poison_count(state, 0, 0)
    return attack.run_attack(settings, splits, clean, num_iters=num_iters, update_xp=False, update_lam=True)


# --------------------------------------------------------------------------------------------
# The general outer loop: hyperparameters learned by any optax optimiser on the engine's
# hypergradients.


class FitResult(NamedTuple):
    """What :func:`fit` did. ``K`` is the number of outer steps.

    Attributes:
      theta: the final hyperparameters (structured like ``theta0``), after the last update and its
        projection onto the box.
      w: the inner solution at the final ``theta`` (structured like ``w0``): the converged solve of
        :class:`~poison_jax.engine.Implicit` (warm-started), ``w_T`` trained from ``w0`` for
        :class:`~poison_jax.engine.RMD` and :class:`~poison_jax.engine.IFT`.
      value: scalar, the outer loss at the final ``(w, theta)``.
      grad: the hypergradient at the final ``theta`` (structured like ``theta``).
      result: the :class:`~poison_jax.engine.Result` of that final evaluation (its ``warm`` holds
        the final inner solution and adjoint).
      values: ``(K,)``, the outer loss at the ``theta`` each step started from (``values[0]`` at
        ``theta0``, projected).
      grad_norms: ``(K,)``, the norm of each step's hypergradient (over all leaves of ``theta``).
      status: ``(K,)`` int32, each step's :class:`~poison_jax.engine.RESULTS` code (0: its solves
        converged and its values were finite; ``engine.message`` explains the others).
      stats: each step's :attr:`~poison_jax.engine.Result.stats`, every entry ``(K,)``: e.g.
        ``inner_steps`` (with :class:`~poison_jax.engine.Implicit` the warm starts show here) and,
        where the method solves an adjoint system, ``adjoint_steps``.
      finite: ``(K,)`` bool, each step's outer value and hypergradient were finite; a step where
        they were not was skipped: ``theta``, the optimiser state and the warm start kept.
      skipped: int32 scalar, the number of skipped steps (``K - sum(finite)``).
    """

    theta: PyTree
    w: PyTree
    value: jax.Array
    grad: PyTree
    result: engine.Result
    values: jax.Array
    grad_norms: jax.Array
    status: jax.Array
    stats: dict[str, jax.Array]
    finite: jax.Array
    skipped: jax.Array


def _all_finite(tree: PyTree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in leaves])) if leaves else jnp.asarray(True)


def _select(pred: jax.Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _cast_like(tree: PyTree, like: PyTree) -> PyTree:
    """``tree`` in the dtypes of ``like`` (a scan's carry keeps its dtypes)."""
    return jax.tree_util.tree_map(lambda a, b: jnp.asarray(a, jnp.result_type(b)), tree, like)


def _strong(tree: PyTree) -> PyTree:
    """Arrays with a fixed dtype (a Python float becomes a float array that is not weakly typed)."""
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.asarray(a).dtype), tree)


def _check_box(box: Any, theta: PyTree) -> tuple[PyTree, PyTree] | None:
    """``None``, or ``(low, high)`` as two pytrees like ``theta`` (a scalar bound broadcast to every leaf)."""
    if box is None:
        return None
    if not isinstance(box, (tuple, list)) or len(box) != 2:
        raise ValueError(f"box must be None or a (low, high) pair of scalars or pytrees like theta0, got {box!r}")
    theta_struct: Any = jax.tree_util.tree_structure(theta)  # PyTreeDef's stubs lack __eq__
    bounds = []
    for name, bound in zip(("box[0] (low)", "box[1] (high)"), box, strict=True):
        struct = jax.tree_util.tree_structure(bound)
        if struct == theta_struct:
            leaves = jax.tree_util.tree_leaves(bound)
        elif jax.tree_util.treedef_is_leaf(struct) and bound is not None and jnp.ndim(bound) == 0:
            leaves = [bound] * theta_struct.num_leaves
        else:
            raise ValueError(
                f"{name} must be a scalar or a pytree with the structure of theta0, {theta_struct}; got {bound!r}"
            )
        cast = []
        for leaf, t in zip(leaves, jax.tree_util.tree_leaves(theta), strict=True):
            leaf = jnp.asarray(leaf, jnp.result_type(t))
            if np.broadcast_shapes(jnp.shape(leaf), jnp.shape(t)) != jnp.shape(t):
                raise ValueError(
                    f"{name} has a leaf of shape {jnp.shape(leaf)} for a theta0 leaf of shape {jnp.shape(t)}"
                )
            cast.append(leaf)
        bounds.append(jax.tree_util.tree_unflatten(theta_struct, cast))
    low, high = bounds
    try:
        ordered = all(bool(jnp.all(lo <= hi)) for lo, hi in zip(*map(jax.tree_util.tree_leaves, bounds), strict=True))
    except jax.errors.ConcretizationTypeError:  # bounds traced by a caller's jit: not checkable here
        ordered = True
    if not ordered:
        raise ValueError(f"box must have low <= high in every entry, got low={low!r}, high={high!r}")
    return low, high


def fit(
    method: engine.Method,
    inner_loss: Callable[..., jax.Array],
    outer_loss: Callable[..., jax.Array],
    w0: PyTree,
    theta0: PyTree,
    *args: Any,
    optimizer: optax.GradientTransformation,
    steps: int,
    box: tuple[Any, Any] | None = None,
) -> FitResult:
    """Learn ``theta``: ``steps`` steps of ``optimizer`` descending ``A(theta) = outer_loss(w*(theta), theta, *args)``.

    Each step computes the hypergradient with ``method`` (:func:`poison_jax.engine.hypergrad`),
    applies ``optimizer.update(dtheta, state, theta)`` and projects ``theta`` onto ``box``
    (``optax.projections.projection_box``). :class:`~poison_jax.engine.Implicit` starts each inner
    solve and each adjoint CG from the previous step's solutions (``result.warm``);
    :class:`~poison_jax.engine.RMD` and :class:`~poison_jax.engine.IFT` train from ``w0`` at every
    step, which is what they define. A step whose outer value or hypergradient is not finite is
    skipped -- ``theta``, the optimiser state and the warm start stay as they were -- and reported
    in ``finite`` and ``skipped`` (on a deterministic problem the next step then meets the same
    ``theta`` again, so the steps after it are skipped too). After the last step the inner problem is
    solved once more at the final ``theta``, for ``w``, ``value`` and ``grad``.

    One ``jax.lax.scan`` under ``jax.jit`` (``method``, the losses, ``optimizer`` and ``steps``
    static; the rest traced): pass the *same* loss functions and optimizer object to reuse the
    compiled loop. ``fit`` is pure and runs under ``jax.jit`` and ``jax.vmap``. Example: the module's.

    Args:
      method: :class:`~poison_jax.engine.RMD`, :class:`~poison_jax.engine.IFT` or
        :class:`~poison_jax.engine.Implicit` with its settings.
      inner_loss: ``(w, theta, *args) -> scalar``, the training loss.
      outer_loss: ``(w, theta, *args) -> scalar``, the objective of ``theta`` (e.g. a validation loss).
      w0: initial inner weights, any pytree of float arrays.
      theta0: initial hyperparameters, any pytree of float arrays (e.g. a log-λ); projected onto
        ``box`` before the first step.
      *args: data passed on to both losses (traced).
      optimizer: any ``optax.GradientTransformation`` (``optax.adam(0.05)``, ``optax.sgd(...)``, a
        chain or a schedule); it receives the hypergradient, so it descends.
      steps: the number of outer steps ``K`` (> 0).
      box: ``None`` (no constraint) or ``(low, high)``, each a scalar (for every entry of ``theta``) or
        a pytree like ``theta0``; ``-inf``/``inf`` leave a side open.
    Returns:
      A :class:`FitResult`: the final ``theta`` and ``w``, the final outer value and hypergradient,
      and per step ``(K,)`` the outer value, the hypergradient norm, the status, the method's stats
      and whether the step was finite.
    """
    if not isinstance(method, engine.Method):
        raise TypeError(f"method must be an engine.Method (RMD(...), IFT(...), Implicit(...)), got {method!r}")
    steps = engine.checks.positive_int("steps", steps)
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(f"optimizer must be an optax.GradientTransformation (init, update), got {optimizer!r}")
    try:
        hash(optimizer)
    except TypeError as err:
        raise TypeError(f"optimizer must be hashable (it is a static argument of the jitted loop): {err}") from err
    w0, theta0 = _strong(w0), _strong(theta0)
    bounds = _check_box(box, theta0)
    return _fit(method, inner_loss, outer_loss, optimizer, steps, w0, theta0, bounds, args)


@functools.partial(jax.jit, static_argnames=("method", "inner_loss", "outer_loss", "optimizer", "steps"))
def _fit(method, inner_loss, outer_loss, optimizer, steps, w0, theta0, bounds, args) -> FitResult:
    def project(theta):
        if bounds is None:
            return theta
        return _cast_like(optax.projections.projection_box(theta, *bounds), theta)

    def hypergrad(theta, warm):  # Implicit continues from the last solutions; RMD and IFT restart from w0
        return engine.hypergrad(method, inner_loss, outer_loss, w0, theta, *args, warm=warm)

    def step(carry, _):
        theta, opt_state, warm = carry
        result = hypergrad(theta, warm)
        finite = jnp.isfinite(result.value) & _all_finite(result.grad)
        updates, next_state = optimizer.update(result.grad, opt_state, theta)
        next_theta = project(optax.apply_updates(theta, updates))
        theta, opt_state = _select(finite, (next_theta, next_state), (theta, opt_state))
        if method.warm_start:
            next_warm = _cast_like(result.warm, warm)
            warm = _select(_all_finite(next_warm), next_warm, warm)
        return (theta, opt_state, warm), (result.value, otu.tree_norm(result.grad), result.status, result.stats, finite)

    theta0 = project(theta0)
    # The carried warm start has a fixed structure: a zero adjoint (CG from zero, as ``None``).
    warm0 = engine.Warm(w0, otu.tree_zeros_like(w0)) if method.warm_start else None
    (theta, _, warm), (values, grad_norms, status, stats, finite) = jax.lax.scan(
        step, (theta0, optimizer.init(theta0), warm0), None, length=steps
    )
    result = hypergrad(theta, warm)
    skipped = jnp.asarray(steps, jnp.int32) - jnp.sum(finite, dtype=jnp.int32)
    return FitResult(
        theta,
        result.warm.w,
        result.value,
        result.grad,
        result,
        values,
        grad_norms,
        status,
        stats,
        finite,
        skipped,
    )
