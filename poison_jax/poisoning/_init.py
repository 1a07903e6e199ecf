"""The attack's initial state and its checks (private; public in :mod:`poison_jax.poisoning.attack`)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from poison_jax.engine import Warm
from poison_jax.poisoning import models
from poison_jax.poisoning._problem import wrong_labels
from poison_jax.poisoning._state import AttackSettings, AttackState


def seed_axis(splits):
    """``splits`` without the test set (which has no seed axis): a pytree to map over seeds."""
    return splits._replace(x_test=None, y_test=None)


def _init_one(settings, n_poison, log_lam, key, split):
    x_val, y_val = split.x_val, split.y_val
    n_train, n_val = split.x_train.shape[0], x_val.shape[0]
    key, clone_key, replace_key = jax.random.split(key, 3)
    clone_idx = jax.random.choice(clone_key, n_val, (n_poison,), replace=False)
    replace_idx = jax.random.choice(replace_key, n_train, (n_poison,), replace=False).astype(jnp.int32)
    none = jnp.zeros(n_poison, bool)
    xp = jnp.clip(x_val[clone_idx], *settings.x_box)  # poison points start inside the box
    warm = None
    if settings.method.warm_start:
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
    return jax.vmap(functools.partial(_init_one, settings, n_poison))(log_lam, keys, seed_axis(splits))


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
    # numpy for a host value: jnp.asarray would compile a conversion program in every fresh process.
    log_lam = log_lam.astype(jnp.float32) if isinstance(log_lam, jax.Array) else np.asarray(log_lam, np.float32)
    num_lams = settings.model.num_lams
    if log_lam.ndim and log_lam.shape[-1] != num_lams:
        raise ValueError(
            f"log_lam has {log_lam.shape[-1]} value(s) per seed, but the model's penalty "
            f"{settings.model.penalty} needs {num_lams} ({settings.model.penalty.lams_per_layer} per layer "
            f"x {settings.model.num_layers} layer(s)); a scalar sets them all"
        )
    log_lam = _start_log_lam(log_lam, (num_seeds, num_lams), tuple(settings.lam_box))
    return _init_attack(settings, keys, splits, log_lam, n_poison=n_poison)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _start_log_lam(log_lam, shape: tuple[int, int], box: tuple[float, float]) -> jax.Array:
    """``log_lam`` broadcast to ``(S, num_lams)`` and clipped into ``box``, in one program."""
    return jnp.clip(jnp.broadcast_to(log_lam, shape), *box)


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
    active, trainable = _poison_masks(state.active.shape, n_active, batch_size)
    return state._replace(active=active, trainable=trainable)


@functools.partial(jax.jit, static_argnums=0)
def _poison_masks(shape: tuple[int, ...], n_active, batch_size) -> tuple[jax.Array, jax.Array]:
    """``(active, trainable)`` of :func:`set_poison_count`: one small program (eager, these were seven
    programs, each lowered and loaded again by every fresh process)."""
    index = jnp.arange(shape[-1])
    active = jnp.broadcast_to(index < n_active, shape)
    return active, active & jnp.broadcast_to(index >= n_active - batch_size, shape)
