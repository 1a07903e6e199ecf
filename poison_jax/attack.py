"""Algorithm 1 of the paper: projected hypergradient ascent on the poison points, descent on Λ.

The attacker replaces ``n_p`` training points by poison points whose labels are flipped and fixed
and whose features ``Xp`` live in a box; the defender's regularisation ``Λ`` (one log-λ per layer)
is learned on the validation set at the same time (the multiobjective attack), kept fixed (the
classical attack), or learned on clean data (no poison active).

Everything here works on a leading *seed* axis: ``Splits`` from :mod:`poison_jax.data` stacks the
random train/validation splits, :class:`AttackState` stacks one attack per split, and
:func:`poison_step` / :func:`run_attack` advance all of them in one jitted, vmapped call.

Cumulative poisoning compiles once: ``Xp`` always holds the largest number of poison points, and
masks say which are in the training set (``active``) and which are being optimised
(``trainable``, the current batch; earlier batches are frozen). See :func:`set_poison_count`.

Example (digits 0 v 8, 2 seeds, one batch of 5 points)::

    >>> import jax
    >>> from poison_jax import attack, data, models
    >>> from poison_jax.bilevel import RMD
    >>> ds = data.load_dataset("digits")
    >>> splits = data.sample_splits(ds, seeds=[0, 1], n_train=100, n_val=50)
    >>> settings = attack.AttackSettings(models.logistic_regression(64), RMD(steps=50, lr=0.5),
    ...                                  alpha=0.5, beta=0.5, x_box=(0.0, 1.0), lam_box=(-8.0, 5.0))
    >>> keys = jax.random.split(jax.random.PRNGKey(0), 2)
    >>> state = attack.init_attack(settings, keys, splits, n_poison=5, log_lam=1.6)
    >>> state = attack.set_poison_count(state, n_active=5, batch_size=5)
    >>> state, info = attack.run_attack(settings, splits, state, num_iters=10, update_xp=True, update_lam=True)
    >>> state.log_lam.shape, info.val_loss.shape
    ((2, 1), (2, 10))
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax import projections

from poison_jax import bilevel, models
from poison_jax.bilevel import IFT, RMD

__all__ = [
    "AttackSettings",
    "AttackState",
    "StepInfo",
    "attack_objective",
    "init_attack",
    "make_losses",
    "poison_step",
    "poisoned_training_set",
    "run_attack",
    "set_poison_count",
]

@dataclasses.dataclass(frozen=True)
class AttackSettings:
    """Static settings of Algorithm 1 (hashable: a static argument of the jitted steps).

    Attributes:
      model: the learner (:func:`poison_jax.models.logistic_regression` or ``mlp``).
      method: how hypergradients are computed, ``RMD(steps, lr)`` (the paper) or ``IFT(...)``.
      alpha: step of the normalised ascent on ``Xp`` (> 0).
      beta: step of the descent on log-λ (> 0).
      x_box: ``(low, high)`` box Φ(Dp) of the poison features.
      lam_box: ``(low, high)`` box Φ(Λ) of log-λ.
    """

    model: models.Model
    method: RMD | IFT
    alpha: float
    beta: float
    x_box: tuple[float, float]
    lam_box: tuple[float, float]

    def __post_init__(self):
        if not isinstance(self.model, models.Model):
            raise TypeError(f"model must be a poison_jax.models.Model, got {self.model!r}")
        if not isinstance(self.method, (RMD, IFT)):
            raise TypeError(f"method must be RMD(...) or IFT(...), got {self.method!r}")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("x_box", "lam_box"):
            box = getattr(self, name)
            if not (isinstance(box, tuple) and len(box) == 2 and all(math.isfinite(b) for b in box)
                    and box[0] < box[1]):
                raise ValueError(f"{name} must be a pair (low, high) of finite numbers with low < high, got {box!r}")


class AttackState(NamedTuple):
    """The attack on one split (or on all, stacked on a leading seed axis).

    Attributes:
      xp: ``(P, d)`` poison features, ``P`` the largest number of poison points.
      yp: ``(P,)`` their labels, flipped from the validation points they were cloned from.
      replace_idx: ``(P,)`` int32, the training rows each poison point replaces.
      active: ``(P,)`` bool, poison point is in the training set.
      trainable: ``(P,)`` bool, poison point is being optimised (the current batch).
      log_lam: ``(L,)`` log-λ per layer.
      key: PRNG key for the random inner initialisation (MLP).
      nonfinite_steps: int32, hyperiterations whose hypergradient was not finite; their update was
        skipped, so a positive count means the inner training diverged.
    """

    xp: jax.Array
    yp: jax.Array
    replace_idx: jax.Array
    active: jax.Array
    trainable: jax.Array
    log_lam: jax.Array
    key: jax.Array
    nonfinite_steps: jax.Array


class StepInfo(NamedTuple):
    """What one hyperiteration saw, per seed.

    Attributes:
      val_loss: validation loss at the start of the hyperiteration (the attacker's objective).
      inner_grad_norm: ``||grad_w||`` of the inner loss after training (how converged w(T) is).
      cg_residual: IFT's relative CG residual (0 for RMD).
      finite: whether the hyperiteration's hypergradients were finite.
    """

    val_loss: jax.Array
    inner_grad_norm: jax.Array
    cg_residual: jax.Array
    finite: jax.Array


def make_losses(model: models.Model, x_train, y_train, x_val, y_val, state: AttackState):
    """Inner and outer losses of one split, ``theta = {"xp": (P, d), "log_lam": (L,)}``.

    inner: ``(Σ cross-entropy + L2 penalty) / n_train`` over the poisoned training set (the clean
    rows that active poison points replace are left out, so the set keeps ``n_train`` rows); see
    :func:`poison_jax.models.l2_penalty` for the scaling.
    outer: mean cross-entropy on the validation set (no penalty).
    """
    n_train = x_train.shape[0]
    clean_weight = jnp.ones(n_train, x_train.dtype).at[state.replace_idx].set(
        jnp.where(state.active, 0.0, 1.0).astype(x_train.dtype))
    poison_weight = state.active.astype(x_train.dtype)

    def inner_loss(w, theta):
        clean = jnp.sum(clean_weight * models.bce(model.apply(w, x_train), y_train))
        poison = jnp.sum(poison_weight * models.bce(model.apply(w, theta["xp"]), state.yp))
        return (clean + poison + models.l2_penalty(model, w, theta["log_lam"])) / n_train

    def outer_loss(w, theta):
        return jnp.mean(models.bce(model.apply(w, x_val), y_val))

    return inner_loss, outer_loss


def _init_one(n_poison, log_lam, key, x_train, y_train, x_val, y_val):
    n_train, n_val = x_train.shape[0], x_val.shape[0]
    key, clone_key, replace_key = jax.random.split(key, 3)
    clone_idx = jax.random.choice(clone_key, n_val, (n_poison,), replace=False)
    replace_idx = jax.random.choice(replace_key, n_train, (n_poison,), replace=False).astype(jnp.int32)
    none = jnp.zeros(n_poison, bool)
    return AttackState(
        xp=x_val[clone_idx], yp=1.0 - y_val[clone_idx], replace_idx=replace_idx, active=none,
        trainable=none, log_lam=log_lam, key=key, nonfinite_steps=jnp.asarray(0, jnp.int32))


@functools.partial(jax.jit, static_argnames=("settings", "n_poison"))
def _init_attack(settings, keys, splits, log_lam, *, n_poison):
    init = functools.partial(_init_one, n_poison)
    return jax.vmap(init, in_axes=(0, 0, 0, 0, 0, 0))(
        log_lam, keys, splits.x_train, splits.y_train, splits.x_val, splits.y_val)


def init_attack(settings: AttackSettings, keys: jax.Array, splits, n_poison: int, log_lam) -> AttackState:
    """Poison initialisation of Algorithm 1, for every split at once.

    Clones ``n_poison`` validation points (drawn without replacement) with flipped labels and picks
    the ``n_poison`` training rows (without replacement) they will replace, in batch order. No poison
    point is active yet: use :func:`set_poison_count`.

    Args:
      settings: the attack settings (for the model's number of layers and the boxes).
      keys: ``(S, 2)`` PRNG keys, one per split (derive them from the seeds for reproducibility).
      splits: :class:`poison_jax.data.Splits` with ``S`` stacked splits.
      n_poison: the largest number of poison points (static: fixes the shapes).
      log_lam: initial log-λ: a scalar, ``(L,)`` or ``(S, L)``; clipped into ``settings.lam_box``.
    Returns:
      An :class:`AttackState` stacked over ``S``.
    """
    num_seeds, n_train = splits.x_train.shape[:2]
    n_val = splits.x_val.shape[1]
    if isinstance(n_poison, bool) or not isinstance(n_poison, int) or not 0 <= n_poison <= min(n_train, n_val):
        raise ValueError(f"n_poison must be an integer in [0, min(n_train, n_val)] = [0, {min(n_train, n_val)}], "
                         f"got {n_poison!r}")
    keys = jnp.asarray(keys)
    if keys.shape[0] != num_seeds:
        raise ValueError(f"keys must hold one key per split: {num_seeds} splits, got keys of shape {keys.shape}")
    log_lam = jnp.broadcast_to(jnp.asarray(log_lam, jnp.float32), (num_seeds, settings.model.num_layers))
    log_lam = jnp.clip(log_lam, *settings.lam_box)
    return _init_attack(settings, keys, splits, log_lam, n_poison=n_poison)


def set_poison_count(state: AttackState, n_active, batch_size) -> AttackState:
    """Put the first ``n_active`` poison points in the training set; the last ``batch_size`` of them
    are the ones being optimised, the earlier ones stay frozen (cumulative batches).

    ``n_active`` may be traced; the shapes do not change, so every fraction runs the same compiled
    step. Works on one state or on states stacked over seeds.
    """
    index = jnp.arange(state.active.shape[-1])
    active = jnp.broadcast_to(index < n_active, state.active.shape)
    trainable = active & jnp.broadcast_to(index >= n_active - batch_size, state.active.shape)
    return state._replace(active=active, trainable=trainable)


def _all_finite(*trees):
    leaves = jax.tree_util.tree_leaves(trees)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def _step_one(settings: AttackSettings, update_xp: bool, update_lam: bool, state: AttackState,
              x_train, y_train, x_val, y_val):
    key, init_key = jax.random.split(state.key)
    w0 = settings.model.init(init_key)  # a fresh random init each hyperiteration for the MLP
    inner_loss, outer_loss = make_losses(settings.model, x_train, y_train, x_val, y_val, state)

    def hypergrad(xp, log_lam):
        return bilevel.hypergrad_with_info(settings.method, inner_loss, outer_loss, w0,
                                           {"xp": xp, "log_lam": log_lam})

    xp, log_lam, finite = state.xp, state.log_lam, jnp.asarray(True)
    first_value = first_info = None
    if update_xp:
        value, dtheta, info = hypergrad(xp, log_lam)
        g = jnp.where(state.trainable[:, None], dtheta["xp"], 0.0)
        step, _ = optax.normalize_by_update_norm(scale_factor=settings.alpha).update(g, optax.EmptyState())
        ok = _all_finite(value, g)
        xp = jnp.where(ok, projections.projection_box(xp + step, *settings.x_box), xp)
        finite &= ok
        first_value, first_info = value, info
    if update_lam:  # with the updated Xp, as Algorithm 1 prescribes
        value, dtheta, info = hypergrad(xp, log_lam)
        g = dtheta["log_lam"]
        tx = optax.sgd(settings.beta)
        step, _ = tx.update(g, tx.init(log_lam))
        ok = _all_finite(value, g)
        log_lam = jnp.where(ok, projections.projection_box(log_lam + step, *settings.lam_box), log_lam)
        finite &= ok
        if first_value is None:
            first_value, first_info = value, info
    if first_value is None:  # neither updated: report the objective only
        first_value, _, first_info = hypergrad(xp, log_lam)

    state = state._replace(xp=xp, log_lam=log_lam, key=key,
                           nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32))
    return state, StepInfo(first_value, first_info.inner_grad_norm, first_info.cg.residual, finite)


def _vmapped_step(settings, update_xp, update_lam, splits, state):
    step = functools.partial(_step_one, settings, update_xp, update_lam)
    return jax.vmap(step)(state, splits.x_train, splits.y_train, splits.x_val, splits.y_val)


@functools.partial(jax.jit, static_argnames=("settings", "update_xp", "update_lam"))
def poison_step(settings: AttackSettings, splits, state: AttackState, *, update_xp: bool = True,
                update_lam: bool = True) -> tuple[AttackState, StepInfo]:
    """One hyperiteration of Algorithm 1 on every split (vmapped over the seed axis).

    1. ``w(0)`` ← the model's init (zeros for logistic regression, fresh random for the MLP);
    2. if ``update_xp``: ``Xp ← Π_Φ(Dp)(Xp + α g/||g||)``, ``g`` the hypergradient w.r.t. the
       trainable poison points;
    3. if ``update_lam``: with the new ``Xp``, ``Λ ← Π_Φ(Λ)(Λ − β ∇_Λ A)``.

    A non-finite hypergradient skips its update and is counted in ``state.nonfinite_steps``.

    Returns:
      ``(state, info)`` with :class:`StepInfo` fields of shape ``(S,)``.
    """
    return _vmapped_step(settings, update_xp, update_lam, splits, state)


@functools.partial(jax.jit, static_argnames=("settings", "num_iters", "update_xp", "update_lam"))
def run_attack(settings: AttackSettings, splits, state: AttackState, *, num_iters: int, update_xp: bool = True,
               update_lam: bool = True) -> tuple[AttackState, StepInfo]:
    """``num_iters`` hyperiterations of :func:`poison_step` in one ``lax.scan``.

    Modes: Λ fixed (``update_lam=False``, T_Dp iterations), Λ learned on clean data (no active poison,
    ``update_xp=False``, T_λ) and the multiobjective attack (both, T_mul).

    Returns:
      ``(state, info)`` with :class:`StepInfo` fields of shape ``(S, num_iters)``.
    """
    def body(carry, _):
        return _vmapped_step(settings, update_xp, update_lam, splits, carry)

    state, info = jax.lax.scan(body, state, None, length=num_iters)
    return state, jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), info)


def _objective_one(settings, state, x_train, y_train, x_val, y_val):
    inner_loss, outer_loss = make_losses(settings.model, x_train, y_train, x_val, y_val, state)
    w0 = settings.model.init(state.key)
    steps, lr = settings.method.steps, settings.method.lr
    w_t = bilevel.unroll(inner_loss, w0, {"xp": state.xp, "log_lam": state.log_lam}, steps=steps, lr=lr)
    return outer_loss(w_t, None)


@functools.partial(jax.jit, static_argnames=("settings",))
def attack_objective(settings: AttackSettings, splits, state: AttackState) -> jax.Array:
    """The attacker's objective per seed, ``(S,)``: validation loss after inner training on the
    poisoned set with the state's Λ (the method's steps and step size)."""
    return jax.vmap(functools.partial(_objective_one, settings))(
        state, splits.x_train, splits.y_train, splits.x_val, splits.y_val)


def _poisoned_one(state, x_train, y_train):
    rows = jnp.where(state.active, state.replace_idx, x_train.shape[0])  # inactive -> dropped
    x = x_train.at[rows].set(state.xp, mode="drop")
    y = y_train.at[rows].set(state.yp, mode="drop")
    return x, y


@jax.jit
def poisoned_training_set(splits, state: AttackState) -> tuple[jax.Array, jax.Array]:
    """The training sets with active poison points in place of the rows they replace.

    Returns:
      ``(x, y)`` of shapes ``(S, n_train, d)`` and ``(S, n_train)``.
    """
    return jax.vmap(_poisoned_one)(state, splits.x_train, splits.y_train)
