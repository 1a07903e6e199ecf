"""Algorithm 1 of the paper: projected hypergradient ascent on the poison points, descent on Λ.

The attacker replaces ``n_p`` training points by poison points whose labels are flipped and fixed
(:func:`wrong_labels`: ``1 − y`` for two classes, a uniformly drawn wrong class for more) and whose
features ``Xp`` live in a box; the defender's regularisation ``Λ`` (one log-λ per layer)
is learned on the validation set at the same time (the multiobjective attack), kept fixed (the
classical attack), or learned on clean data (no poison active).

Everything here works on a leading *seed* axis: ``Splits`` from :mod:`poison_jax.poisoning.data` stacks the
random train/validation splits, :class:`AttackState` stacks one attack per split, and
:func:`poison_step` / :func:`run_attack` advance all of them in one jitted, vmapped call.

Cumulative poisoning compiles once: ``Xp`` always holds the largest number of poison points, and
masks say which are in the training set (``active``) and which are being optimised
(``trainable``, the current batch; earlier batches are frozen). See :func:`set_poison_count`.

Example (digits 0 v 8, 2 seeds, one batch of 5 points)::

    >>> import jax
    >>> from poison_jax.poisoning import attack, data, models
    >>> from poison_jax.engine import RMD
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
import itertools
import math
import time
import weakref
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from poison_jax import engine
from poison_jax.engine import Warm
from poison_jax.poisoning import models, outer, seeds

__all__ = [
    "Add",
    "AttackSettings",
    "MODES",
    "Replace",
    "AttackState",
    "StepInfo",
    "attack_objective",
    "check_box",
    "init_attack",
    "PoisonData",
    "make_losses",
    "poison_data",
    "poisoning_losses",
    "poison_step",
    "poisoned_training_set",
    "run_attack",
    "set_poison_count",
    "wrong_labels",
]


@dataclasses.dataclass(frozen=True)
class Replace:
    """The paper's poison mode: each active poison point takes the place of a training row, so the
    poisoned set keeps ``n_train`` rows."""

    def clean_weights(self, replace_idx, active, n_train, dtype):
        return jnp.ones(n_train, dtype).at[replace_idx].set(jnp.where(active, 0.0, 1.0).astype(dtype))

    def size(self, n_train, active):
        return jnp.asarray(n_train, jnp.float32)

    def training_set(self, state, x_train, y_train):
        """``(x, y, weights)``: the rows active poison points replace are overwritten (weights None: all 1)."""
        rows = jnp.where(state.active, state.replace_idx, x_train.shape[0])  # inactive -> dropped
        x = x_train.at[rows].set(state.xp, mode="drop")
        y = y_train.at[rows].set(state.yp, mode="drop")
        return x, y, None


@dataclasses.dataclass(frozen=True)
class Add:
    """Biggio et al.'s (and secml's) poison mode: active poison points are appended, so the poisoned
    set has ``n_train + n_active`` rows."""

    def clean_weights(self, replace_idx, active, n_train, dtype):
        return jnp.ones(n_train, dtype)

    def size(self, n_train, active):
        return n_train + jnp.sum(active).astype(jnp.float32)

    def training_set(self, state, x_train, y_train):
        """``(x, y, weights)``: ``n_train + P`` rows, inactive poison rows with weight 0."""
        x = jnp.concatenate([x_train, state.xp.astype(x_train.dtype)])
        y = jnp.concatenate([y_train, state.yp.astype(y_train.dtype)])
        weights = jnp.concatenate([jnp.ones(x_train.shape[0], x_train.dtype), state.active.astype(x_train.dtype)])
        return x, y, weights


MODES: dict[str, type[Replace] | type[Add]] = {"replace": Replace, "add": Add}
_STEP_RULES = (outer.Normalised, outer.SGD, outer.Adam, outer.Optimistic, outer.Armijo)


@dataclasses.dataclass(frozen=True)
class AttackSettings:
    """Static settings of Algorithm 1 (hashable: a static argument of the jitted steps).

    Attributes:
      model: the learner (:func:`poison_jax.poisoning.models.logistic_regression` or ``mlp``).
      method: how hypergradients are computed: ``RMD(steps, lr)`` (the paper), ``IFT(...)`` or
        ``Implicit(...)`` (a converged, warm-started inner solve: the strong attack).
      alpha: step size of the rule on ``Xp`` (> 0).
      beta: step size of the rule on log-λ (> 0).
      x_box: ``(low, high)`` box Φ(Dp) of the poison features.
      lam_box: ``(low, high)`` box Φ(Λ) of log-λ.
      xp_step: the rule moving ``Xp`` (ascent), a value from :mod:`poison_jax.poisoning.outer`; the paper's
        :class:`~poison_jax.poisoning.outer.Normalised` by default.
      lam_step: the rule moving log-λ (descent); the paper's :class:`~poison_jax.poisoning.outer.SGD` by default.
      mode: :class:`Replace` (the paper, default) or :class:`Add` (secml).
      seed_lanes: how the seed axis runs (:func:`poison_jax.poisoning.seeds.over_seeds`): ``None`` vmaps all
        seeds (the default; what a GPU wants); ``L`` runs ``L`` lanes that each loop over their
        seeds, so a converged solver's iterations are not paid for the slowest seed by all (on a
        CPU, one lane per device). Results are the same either way.
    """

    model: models.Model
    method: engine.Method
    alpha: float
    beta: float
    x_box: tuple[float, float]
    lam_box: tuple[float, float]
    xp_step: outer.Normalised | outer.SGD | outer.Adam | outer.Optimistic | outer.Armijo = outer.Normalised()
    lam_step: outer.Normalised | outer.SGD | outer.Adam | outer.Optimistic | outer.Armijo = outer.SGD()
    mode: Replace | Add = Replace()
    seed_lanes: int | None = None

    def __post_init__(self):
        if not isinstance(self.model, models.Model):
            raise TypeError(
                f"model must be a poison_jax.poisoning.models.Model, got {type(self.model).__name__}: wrap a flax "
                "module with poison_jax.poisoning.models.from_flax(module, example_x), or build "
                "models.Model(name, init, apply, layers, "
                "random_init)"
            )
        if not isinstance(self.method, (engine.RMD, engine.IFT, engine.Implicit)):
            raise TypeError(f"method must be RMD(...), IFT(...) or Implicit(...), got {self.method!r}")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("x_box", "lam_box"):
            box = getattr(self, name)
            if not (
                isinstance(box, tuple) and len(box) == 2 and all(math.isfinite(b) for b in box) and box[0] < box[1]
            ):
                raise ValueError(f"{name} must be a pair (low, high) of finite numbers with low < high, got {box!r}")
        for name in ("xp_step", "lam_step"):
            if not isinstance(getattr(self, name), _STEP_RULES):
                raise TypeError(
                    f"{name} must be one of poison_jax.poisoning.outer's rules "
                    f"({', '.join(r.__name__ + '()' for r in _STEP_RULES)}), got {getattr(self, name)!r}"
                )
        if not isinstance(self.mode, (Replace, Add)):
            raise TypeError(f"mode must be Replace() or Add(), got {self.mode!r}")
        if self.seed_lanes is not None and (
            isinstance(self.seed_lanes, bool) or not isinstance(self.seed_lanes, int) or self.seed_lanes <= 0
        ):
            raise ValueError(f"seed_lanes must be None or a positive integer, got {self.seed_lanes!r}")


class AttackState(NamedTuple):
    """The attack on one split (or on all, stacked on a leading seed axis).

    Attributes:
      xp: ``(P, d)`` poison features, ``P`` the largest number of poison points.
      yp: ``(P,)`` their labels, wrong labels of the validation points they were cloned from
        (:func:`wrong_labels`).
      replace_idx: ``(P,)`` int32, the training rows each poison point replaces.
      active: ``(P,)`` bool, poison point is in the training set.
      trainable: ``(P,)`` bool, poison point is being optimised (the current batch).
      log_lam: ``(model.num_lams,)`` log-λ (one per layer; two for an elastic-net penalty).
      key: PRNG key for the random inner initialisation (MLP).
      nonfinite_steps: int32, hyperiterations whose hypergradient was not finite; their update was
        skipped, so a positive count means the inner training diverged.
      warm: the :class:`~poison_jax.engine.Warm` start (inner solution and adjoint) carried from
        one hyperiteration to the next when the method warm-starts (``Implicit``); ``None`` otherwise.
      xp_opt, lam_opt: the states of the outer rules on ``Xp`` and log-λ (e.g. Adam's moments, the
        line search's last step length).
      unconverged_solves: int32, hypergradients whose inner solve stopped at its iteration cap
        before reaching its tolerance (always 0 for fixed-step training).
    """

    xp: jax.Array
    yp: jax.Array
    replace_idx: jax.Array
    active: jax.Array
    trainable: jax.Array
    log_lam: jax.Array
    key: jax.Array
    nonfinite_steps: jax.Array
    warm: Warm | None = None
    xp_opt: object = None
    lam_opt: object = None
    unconverged_solves: jax.Array | None = None


class StepInfo(NamedTuple):
    """What one hyperiteration saw, per seed.

    Attributes:
      val_loss: validation loss at the start of the hyperiteration (the attacker's objective).
      inner_grad_norm: ``||grad_w||`` of the inner loss after training (how converged w(T) is).
      cg_residual: IFT's relative CG residual (0 for RMD).
      finite: whether the hyperiteration's hypergradients were finite.
      inner_converged: whether the inner solves reached their tolerance (fixed-step: finite).
    """

    val_loss: jax.Array
    inner_grad_norm: jax.Array
    cg_residual: jax.Array
    finite: jax.Array
    inner_converged: jax.Array


class PoisonData(NamedTuple):
    """What the poisoning losses read of one split: the engine's data arguments (traced).

    Attributes:
      x_train, y_train: ``(n_train, d)``, ``(n_train,)`` the clean training set.
      x_val, y_val: ``(n_val, d)``, ``(n_val,)`` the validation set (the outer objective).
      clean_weight: ``(n_train,)`` 1 for a clean row in the poisoned set, 0 for a replaced one.
      poison_weight: ``(P,)`` 1 for an active poison point.
      yp: ``(P,)`` the poison points' labels.
      size: scalar, the number of rows of the poisoned set (the loss is a mean over them).
    """

    x_train: jax.Array
    y_train: jax.Array
    x_val: jax.Array
    y_val: jax.Array
    clean_weight: jax.Array
    poison_weight: jax.Array
    yp: jax.Array
    size: jax.Array


def poison_data(
    x_train: ArrayLike,
    y_train: ArrayLike,
    x_val: ArrayLike,
    y_val: ArrayLike,
    state: AttackState,
    mode: Replace | Add = Replace(),
) -> PoisonData:
    """The :class:`PoisonData` of one split and attack state under poison ``mode``."""
    x_train, y_train, x_val, y_val = (jnp.asarray(a) for a in (x_train, y_train, x_val, y_val))
    n_train = x_train.shape[0]
    return PoisonData(
        x_train,
        y_train,
        x_val,
        y_val,
        clean_weight=mode.clean_weights(state.replace_idx, state.active, n_train, x_train.dtype),
        poison_weight=state.active.astype(x_train.dtype),
        yp=state.yp,
        size=mode.size(n_train, state.active).astype(x_train.dtype),
    )


@functools.cache
def poisoning_losses(model: models.Model):
    """``(inner_loss, outer_loss)`` of the poisoning problem, ``(w, theta, data) -> scalar``.

    ``theta = {"xp": (P, d), "log_lam": (model.num_lams,)}`` and ``data`` a :class:`PoisonData`. The same two
    function objects for the same model, so jitted hypergradients compile once for every split.

    inner: ``(Σ model.loss + the model's penalty) / n`` over the poisoned training set of ``n`` rows:
    in :class:`Replace` mode the clean rows that active poison points replace are left out, so
    ``n = n_train``; in :class:`Add` mode ``n = n_train + n_active``. See
    :func:`poison_jax.poisoning.models.l2_penalty` for the scaling.
    outer: mean ``model.loss`` on the validation set (no penalty; cross-entropy for the paper's model).
    """

    def inner_loss(w, theta, data: PoisonData):
        clean = jnp.sum(data.clean_weight * model.loss(model.apply(w, data.x_train), data.y_train))
        poison = jnp.sum(data.poison_weight * model.loss(model.apply(w, theta["xp"]), data.yp))
        return (clean + poison + models.penalty(model, w, theta["log_lam"])) / data.size

    def outer_loss(w, theta, data: PoisonData):
        return jnp.mean(model.loss(model.apply(w, data.x_val), data.y_val))

    return inner_loss, outer_loss


def make_losses(
    model: models.Model,
    x_train: ArrayLike,
    y_train: ArrayLike,
    x_val: ArrayLike,
    y_val: ArrayLike,
    state: AttackState,
    mode: Replace | Add = Replace(),
):
    """The losses of :func:`poisoning_losses` with one split's data closed over: ``(w, theta) -> scalar``.

    Convenient for one problem; to loop over splits without recompiling, pass the data as
    arguments instead (``poisoning_losses(model)`` and :func:`poison_data`).
    """
    inner, outer = poisoning_losses(model)
    data = poison_data(x_train, y_train, x_val, y_val, state, mode)
    return (lambda w, theta: inner(w, theta, data)), (lambda w, theta: outer(w, theta, data))


def wrong_labels(key: jax.Array, y: jax.Array, num_classes: int) -> jax.Array:
    """The poison points' labels: a wrong label for each true label ``y`` (class indices as floats).

    Two classes: ``1 − y``, the paper's flip (``key`` unused). ``K > 2`` classes: a wrong class drawn
    uniformly, ``(y + u) mod K`` with ``u`` uniform on 1..K−1, independently per point. Uniform
    rather than the clean model's most likely wrong class: it needs no clean fit, and it spreads the
    poison over every wrong class instead of the few confusable pairs.

    Args:
      key: PRNG key.
      y: ``(P,)`` true labels in 0..K−1.
      num_classes: ``K`` (static).
    Returns:
      ``(P,)`` labels, each different from its ``y``, of ``y``'s dtype.
    """
    if num_classes == 2:
        return 1.0 - y
    shift = jax.random.randint(key, y.shape, 1, num_classes)
    return jnp.mod(y.astype(jnp.int32) + shift, num_classes).astype(y.dtype)


def _init_one(settings, n_poison, log_lam, key, x_train, y_train, x_val, y_val):
    n_train, n_val = x_train.shape[0], x_val.shape[0]
    key, clone_key, replace_key = jax.random.split(key, 3)
    clone_idx = jax.random.choice(clone_key, n_val, (n_poison,), replace=False)
    replace_idx = jax.random.choice(replace_key, n_train, (n_poison,), replace=False).astype(jnp.int32)
    none = jnp.zeros(n_poison, bool)
    xp = jnp.clip(x_val[clone_idx], *settings.x_box)  # poison points start inside the box
    warm = None
    if settings.method.warm_starts:
        w0 = settings.model.init(key)
        warm = Warm(w0, jax.tree_util.tree_map(jnp.zeros_like, w0))
    return AttackState(
        xp=xp,
        yp=wrong_labels(jax.random.fold_in(clone_key, 1), y_val[clone_idx], settings.model.num_classes),
        replace_idx=replace_idx,
        active=none,
        trainable=none,
        log_lam=log_lam,
        key=key,
        nonfinite_steps=jnp.asarray(0, jnp.int32),
        warm=warm,
        xp_opt=settings.xp_step.init(xp),
        lam_opt=settings.lam_step.init(log_lam),
        unconverged_solves=jnp.asarray(0, jnp.int32),
    )


@functools.partial(jax.jit, static_argnames=("settings", "n_poison"))
def _init_attack(settings, keys, splits, log_lam, *, n_poison):
    init = functools.partial(_init_one, settings, n_poison)
    return jax.vmap(init, in_axes=(0, 0, 0, 0, 0, 0))(
        log_lam, keys, splits.x_train, splits.y_train, splits.x_val, splits.y_val
    )


def init_attack(settings: AttackSettings, keys: ArrayLike, splits, n_poison: int, log_lam: ArrayLike) -> AttackState:
    """Poison initialisation of Algorithm 1, for every split at once.

    Clones ``n_poison`` validation points (drawn without replacement) with wrong labels
    (:func:`wrong_labels`), clipped into ``settings.x_box`` (data lying outside the box: see
    :func:`check_box`), and picks
    the ``n_poison`` training rows (without replacement) they will replace, in batch order. No poison
    point is active yet: use :func:`set_poison_count`.

    Args:
      settings: the attack settings (for the model's number of layers and the boxes).
      keys: ``(S, 2)`` PRNG keys, one per split (derive them from the seeds for reproducibility).
      splits: :class:`poison_jax.poisoning.data.Splits` with ``S`` stacked splits.
      n_poison: the largest number of poison points (static: fixes the shapes).
      log_lam: initial log-λ: a scalar, ``(model.num_lams,)`` or ``(S, model.num_lams)``; clipped into
        ``settings.lam_box``.
    Returns:
      An :class:`AttackState` stacked over ``S``.
    """
    num_seeds, n_train = splits.x_train.shape[:2]
    n_val = splits.x_val.shape[1]
    models.output_shape(settings.model, jax.ShapeDtypeStruct(splits.x_train.shape[1:], jnp.float32))  # no broadcasting
    _check_labels(settings.model, splits)
    if isinstance(n_poison, bool) or not isinstance(n_poison, int) or not 0 <= n_poison <= min(n_train, n_val):
        raise ValueError(
            f"n_poison must be an integer in [0, min(n_train, n_val)] = [0, {min(n_train, n_val)}], got {n_poison!r}"
        )
    keys = jnp.asarray(keys)
    if keys.shape[0] != num_seeds:
        raise ValueError(f"keys must hold one key per split: {num_seeds} splits, got keys of shape {keys.shape}")
    log_lam = jnp.asarray(log_lam, jnp.float32)
    num_lams = settings.model.num_lams
    if log_lam.ndim and log_lam.shape[-1] != num_lams:
        raise ValueError(
            f"log_lam has {log_lam.shape[-1]} value(s) per seed, but the model's penalty "
            f"{settings.model.penalty} needs {num_lams} ({settings.model.penalty.lams_per_layer} per layer "
            f"x {settings.model.num_layers} layer(s)); a scalar sets them all"
        )
    log_lam = jnp.broadcast_to(log_lam, (num_seeds, num_lams))
    log_lam = jnp.clip(log_lam, *settings.lam_box)
    return _init_attack(settings, keys, splits, log_lam, n_poison=n_poison)


def _check_labels(model: models.Model, splits) -> None:
    """Labels a classifier cannot score (e.g. ten classes for one score) are refused, not trained on."""
    if model.loss.task != "classification":
        return
    k = model.num_classes
    for name in ("y_train", "y_val"):
        y = getattr(splits, name)
        if not getattr(y, "is_fully_addressable", True):  # a multi-host array: checked where it was loaded
            continue
        values = np.unique(np.asarray(y))
        if not np.isin(values, np.arange(k)).all():
            shown = ", ".join(f"{v:g}" for v in values[:10]) + (", ..." if len(values) > 10 else "")
            raise ValueError(
                f"{model.name} classifies {k} classes (labels 0..{k - 1}), but splits.{name} holds the labels "
                f"{{{shown}}}: build the model with num_classes={max(int(values.max()) + 1, 2)} or relabel the data"
            )


def check_box(x: ArrayLike, x_box: tuple[float, float], name: str = "the data") -> None:
    """Refuse features that lie outside the poison box ``x_box``, naming them.

    The attacker's points live in the box; data far outside it mean the box is in the wrong units
    (e.g. ``(0, 1)`` against standardised features), and an attack inside it would be silently weak.

    Args:
      x: ``(..., d)`` features (e.g. a data set's pool).
      x_box: ``(low, high)``.
      name: what ``x`` is, for the message.
    Raises:
      ValueError: naming up to five features outside the box with their ranges, and the range of all.
    """
    x = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
    low, high = x_box
    slack = 1e-6 * (high - low)
    lows, highs = x.min(axis=0), x.max(axis=0)
    outside = np.flatnonzero((lows < low - slack) | (highs > high + slack))
    if outside.size:
        shown = ", ".join(f"{j} in [{lows[j]:.3g}, {highs[j]:.3g}]" for j in outside[:5])
        more = f" and {outside.size - 5} more" if outside.size > 5 else ""
        raise ValueError(
            f"{name} lie outside the poison box x_box = {tuple(x_box)}: {outside.size} of {x.shape[1]} feature(s), "
            f"feature {shown}{more}. All features lie in [{lows.min():.4g}, {highs.max():.4g}]: set x_box to a "
            f"box holding the data (or None for exactly that range), scale the data, or let the data lie outside "
            f"(outside_box='clip': poison points start clipped into the box)"
        )


def set_poison_count(state: AttackState, n_active: ArrayLike, batch_size: ArrayLike) -> AttackState:
    """Put the first ``n_active`` poison points in the training set; the last ``batch_size`` of them
    are the ones being optimised, the earlier ones stay frozen (cumulative batches).

    ``n_active`` may be traced; the shapes do not change, so every fraction runs the same compiled
    step. Works on one state or on states stacked over seeds.
    """
    index, n_active = jnp.arange(state.active.shape[-1]), jnp.asarray(n_active)
    active = jnp.broadcast_to(index < n_active, state.active.shape)
    trainable = active & jnp.broadcast_to(index >= n_active - jnp.asarray(batch_size), state.active.shape)
    return state._replace(active=active, trainable=trainable)


def _all_finite(*trees):
    leaves = jax.tree_util.tree_leaves(trees)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def _step_one(
    settings: AttackSettings, update_xp: bool, update_lam: bool, state: AttackState, x_train, y_train, x_val, y_val
):
    key, init_key = jax.random.split(state.key)
    w0 = settings.model.init(init_key)  # a fresh random init each hyperiteration for the MLP
    inner_loss, outer_loss = poisoning_losses(settings.model)
    data = poison_data(x_train, y_train, x_val, y_val, state, settings.mode)
    method = settings.method
    # The paper restarts training from w(0); a converged solver starts where the last one ended.
    warm = state.warm if method.warm_starts else Warm(w0, None)

    def hypergrad(xp, log_lam, warm):
        value, dtheta, info = engine.warm_hypergrad(
            method, inner_loss, outer_loss, warm, {"xp": xp, "log_lam": log_lam}, data
        )
        return value, dtheta, info, info.warm if method.warm_starts else warm

    def objective(xp, log_lam, warm):
        """The attacker's objective at a line search's trial point, and the inner solution there."""
        theta = {"xp": xp, "log_lam": log_lam}
        w = method.fit(inner_loss, warm.w, theta, data)
        return outer_loss(w, theta, data), w

    def step(rule, x, g, opt, lr, ascent, box, mask, value, objective_at, warm):
        """A rule's step; a warm-started method starts its next solve from the taken trial's solution."""
        x, opt, w = rule.step_and_aux(
            x, g, opt, lr=lr, ascent=ascent, box=box, mask=mask, value=value, value_fn=objective_at, aux=warm.w
        )
        return x, opt, warm._replace(w=w) if method.warm_starts else warm

    xp, log_lam, xp_opt, lam_opt = state.xp, state.log_lam, state.xp_opt, state.lam_opt
    finite, converged = jnp.asarray(True), jnp.asarray(True)
    first = None
    if update_xp:
        value, dtheta, info, new_warm = hypergrad(xp, log_lam, warm)
        ok = _all_finite(value, dtheta["xp"])
        new_xp, new_opt, new_warm = step(
            settings.xp_step,
            xp,
            dtheta["xp"],
            xp_opt,
            settings.alpha,
            True,
            settings.x_box,
            state.trainable[:, None],
            value,
            lambda x: objective(x, log_lam, new_warm),
            new_warm,
        )
        xp, xp_opt, warm = _keep_if(ok, (new_xp, new_opt, new_warm), (xp, xp_opt, warm))
        finite &= ok
        converged &= info.solve.converged
        first = (value, info)
    if update_lam:  # with the updated Xp, as Algorithm 1 prescribes
        value, dtheta, info, new_warm = hypergrad(xp, log_lam, warm)
        ok = _all_finite(value, dtheta["log_lam"])
        new_lam, new_opt, new_warm = step(
            settings.lam_step,
            log_lam,
            dtheta["log_lam"],
            lam_opt,
            settings.beta,
            False,
            settings.lam_box,
            True,
            value,
            lambda lam: objective(xp, lam, new_warm),
            new_warm,
        )
        log_lam, lam_opt, warm = _keep_if(ok, (new_lam, new_opt, new_warm), (log_lam, lam_opt, warm))
        finite &= ok
        converged &= info.solve.converged
        first = first if first is not None else (value, info)
    if first is None:  # neither updated: report the objective only
        value, _, info, _ = hypergrad(xp, log_lam, warm)
        converged &= info.solve.converged
        first = (value, info)

    value, info = first
    state = state._replace(
        xp=xp,
        log_lam=log_lam,
        key=key,
        xp_opt=xp_opt,
        lam_opt=lam_opt,
        warm=warm if method.warm_starts else None,
        nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32),
        unconverged_solves=_count(state.unconverged_solves) + (~converged).astype(jnp.int32),
    )
    return state, StepInfo(value, info.inner_grad_norm, info.cg.residual, finite, converged)


def _count(counter: jax.Array | None) -> jax.Array:
    return jnp.asarray(0, jnp.int32) if counter is None else counter


def _keep_if(ok, new, old):
    """``new`` where ``ok`` (a scalar bool), else ``old``, leaf by leaf."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)


def _vmapped_step(settings, update_xp, update_lam, splits, state):
    step = functools.partial(_step_one, settings, update_xp, update_lam)
    return seeds.over_seeds(
        step, state, splits.x_train, splits.y_train, splits.x_val, splits.y_val, lanes=settings.seed_lanes
    )


@functools.partial(jax.jit, static_argnames=("settings", "update_xp", "update_lam"))
def poison_step(
    settings: AttackSettings, splits, state: AttackState, *, update_xp: bool = True, update_lam: bool = True
) -> tuple[AttackState, StepInfo]:
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


def run_attack(
    settings: AttackSettings,
    splits,
    state: AttackState,
    *,
    num_iters: int,
    update_xp: bool = True,
    update_lam: bool = True,
    progress: bool | Callable[[int], None] | None = None,
) -> tuple[AttackState, StepInfo]:
    """``num_iters`` hyperiterations of :func:`poison_step` in one jitted ``lax.scan``.

    Modes: Λ fixed (``update_lam=False``, T_Dp iterations), Λ learned on clean data (no active poison,
    ``update_xp=False``, T_λ) and the multiobjective attack (both, T_mul).

    Args:
      settings, splits, state: as :func:`poison_step`.
      num_iters: hyperiterations (static).
      update_xp, update_lam: which of ``Xp`` and log-λ move (static).
      progress: report hyperiterations as they finish, from inside the compiled loop
        (``jax.debug.callback``): ``True`` draws a tqdm bar, a function is called with the number
        done so far (e.g. to update a notebook widget); ``None`` or ``False`` reports nothing and
        returns at once (asynchronous dispatch). Every hyperiteration is reported when they take
        longer than 50 ms (and on the first call of ``settings``); faster ones every few, about 20
        reports a second, so a host callback of a few hundred µs never weighs on a millisecond step;
        the last is always reported. Changing the function never recompiles. What the function
        raises is raised once the compiled loop has finished.

    Returns:
      ``(state, info)`` with :class:`StepInfo` fields of shape ``(S, num_iters)``.
    """
    if not progress:
        return _run_attack(
            settings,
            splits,
            state,
            _NO_TOKEN,
            _NO_TOKEN,
            num_iters=num_iters,
            update_xp=update_xp,
            update_lam=update_lam,
            report=False,
        )
    bar = None
    if callable(progress):
        sink = progress
    else:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_iters, unit="hyperit", dynamic_ncols=True)
        sink = lambda done: bar.update(done - bar.n)  # noqa: E731
    token = next(_TOKENS)
    _SINKS[token] = sink
    # At most about one report per _REPORT_SECONDS: a host callback costs a few hundred µs, which
    # would be felt by a millisecond step; the first call (and every slow step) reports each one.
    seconds = _SECONDS_PER_ITER.get(settings)
    every = 1 if seconds is None else max(1, min(num_iters, int(_REPORT_SECONDS / max(seconds, 1e-9))))
    started = time.perf_counter()
    try:
        out = _run_attack(
            settings,
            splits,
            state,
            jnp.asarray(token, jnp.int32),
            jnp.asarray(every, jnp.int32),
            num_iters=num_iters,
            update_xp=update_xp,
            update_lam=update_lam,
            report=True,
        )
        out = jax.block_until_ready(out)  # every report has arrived before the sink goes
        jax.effects_barrier()
        _SECONDS_PER_ITER[settings] = (time.perf_counter() - started) / num_iters
        if _LAST.get(token, 0) < num_iters:  # the last report comes from here: no callback in the loop's end
            _report(token, num_iters, None)
    finally:
        _SINKS.pop(token, None)
        _LAST.pop(token, None)
        error = _ERRORS.pop(token, None)
        if bar is not None:
            bar.close()
    if error is not None:  # raised by the progress function: raised here, once the compiled loop is done
        raise error
    return out


_SINKS: dict[int, Callable[[int], None]] = {}  # token -> the progress function of a running call
_SECONDS_PER_ITER: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # settings -> last measured
_REPORT_SECONDS = 0.05
_ERRORS: dict[int, BaseException] = {}  # token -> what its progress function raised
_LAST: dict[int, int] = {}  # token -> the last number reported
_TOKENS = itertools.count(1)
_NO_TOKEN = np.int32(0)


def _report(token, done, _after):
    """Host side of the progress callback (``_after``: the step's output, so it runs after the step).

    JAX swallows what a callback raises; the first error is kept and raised by :func:`run_attack`.
    """
    sink = _SINKS.get(int(token))
    if sink is None:
        return
    _LAST[int(token)] = int(done)
    try:
        sink(int(done))
    except BaseException as err:  # e.g. a notebook's stop request: re-raised after the loop
        _SINKS.pop(int(token), None)
        _ERRORS.setdefault(int(token), err)


@functools.partial(jax.jit, static_argnames=("settings", "num_iters", "update_xp", "update_lam", "report"))
def _run_attack(settings, splits, state, token, every, *, num_iters, update_xp, update_lam, report):
    def body(carry, i):
        carry, info = _vmapped_step(settings, update_xp, update_lam, splits, carry)
        if report:
            done = i + 1
            # The step's output as an operand: the report runs after the step. Summed, so a seed axis
            # sharded over devices sends one replicated scalar to the host.
            after = jnp.sum(carry.nonfinite_steps)
            jax.lax.cond(
                done % every == 0,
                lambda: jax.debug.callback(_report, token, done, after),
                lambda: None,
            )
        return carry, info

    state, info = jax.lax.scan(body, state, jnp.arange(num_iters, dtype=jnp.int32))
    return state, jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), info)


def _objective_one(settings, state, x_train, y_train, x_val, y_val):
    inner_loss, outer_loss = poisoning_losses(settings.model)
    data = poison_data(x_train, y_train, x_val, y_val, state, settings.mode)
    theta = {"xp": state.xp, "log_lam": state.log_lam}
    w0 = state.warm.w if settings.method.warm_starts else settings.model.init(state.key)
    return outer_loss(settings.method.fit(inner_loss, w0, theta, data), theta, data)


@functools.partial(jax.jit, static_argnames=("settings",))
def attack_objective(settings: AttackSettings, splits, state: AttackState) -> jax.Array:
    """The attacker's objective per seed, ``(S,)``: validation loss after inner training on the
    poisoned set with the state's Λ (the method's training: its steps and step size from ``w(0)``,
    or its converged solve from the carried warm start)."""
    return seeds.over_seeds(
        functools.partial(_objective_one, settings),
        state,
        splits.x_train,
        splits.y_train,
        splits.x_val,
        splits.y_val,
        lanes=settings.seed_lanes,
    )


@functools.partial(jax.jit, static_argnames=("mode",))
def poisoned_training_set(splits, state: AttackState, mode: Replace | Add = Replace()):
    """The poisoned training sets of every split.

    Returns:
      ``(x, y, weights)``: in :class:`Replace` mode ``(S, n_train, d)``, ``(S, n_train)`` with the
      active poison points in place of the rows they replace, and ``weights`` None (every row
      counts); in :class:`Add` mode ``(S, n_train + P, d)``, ``(S, n_train + P)`` and per-row
      weights ``(S, n_train + P)``, 0 for the poison points not yet active.
    """
    return jax.vmap(lambda st, x, y: mode.training_set(st, x, y))(state, splits.x_train, splits.y_train)
