"""The poisoning problem of one split (private; its names are public in :mod:`poison_jax.poisoning.attack`):
the poison modes, the engine's data arguments and the inner and outer losses."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from poison_jax.poisoning import models
from poison_jax.poisoning.relaxed import Relaxed

AttackState = Any  # poison_jax.poisoning.attack.AttackState: xp, yp, replace_idx, active, trainable, ...


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

    def poison_rows(self, state, n_train):
        """``(n_train,)`` bool: the rows of :meth:`training_set` that hold active poison points."""
        rows = jnp.where(state.active, state.replace_idx, n_train)
        return jnp.zeros(n_train, bool).at[rows].set(True, mode="drop")


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

    def poison_rows(self, state, n_train):
        """``(n_train + P,)`` bool: the rows of :meth:`training_set` that hold active poison points."""
        return jnp.concatenate([jnp.zeros(n_train, bool), state.active])


MODES: dict[str, type[Replace] | type[Add]] = {"replace": Replace, "add": Add}


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


def poisoning_losses(model: models.Model, relaxed: Relaxed | None = None):
    """``(inner_loss, outer_loss)`` of the poisoning problem, ``(w, theta, data) -> scalar``.

    ``theta = {"xp": (P, d), "log_lam": (model.num_lams,)}`` and ``data`` a :class:`PoisonData`. The same two
    function objects for the same model and ``relaxed``, so jitted hypergradients compile once for
    every split.

    inner: ``(Σ model.loss + the model's penalty) / n`` over the poisoned training set of ``n`` rows:
    in :class:`Replace` mode the clean rows that active poison points replace are left out, so
    ``n = n_train``; in :class:`Add` mode ``n = n_train + n_active``. See
    :func:`poison_jax.poisoning.models.penalty` for the scaling. With a
    :class:`~poison_jax.poisoning.relaxed.Relaxed` sanitiser, each row of the poisoned set weighs
    its soft keep-weight (oracle statistics from ``data.x_train``), computed from ``theta["xp"]`` so
    the hypergradient sees it: ``(Σ weight · model.loss + penalty) / Σ weight``, the mean the
    victim fits over the rows a hard sanitiser keeps.
    outer: mean ``model.loss`` on the validation set (no penalty; cross-entropy for the paper's model).
    """
    return _losses(model, relaxed)


@functools.cache
def _losses(model: models.Model, relaxed: Relaxed | None):
    def outer_loss(w, theta, data: PoisonData):
        return jnp.mean(model.loss(model.apply(w, data.x_val), data.y_val))

    if relaxed is None:

        def inner_loss(w, theta, data: PoisonData):
            clean = jnp.sum(data.clean_weight * model.loss(model.apply(w, data.x_train), data.y_train))
            poison = jnp.sum(data.poison_weight * model.loss(model.apply(w, theta["xp"]), data.yp))
            return (clean + poison + models.penalty(model, w, theta["log_lam"])) / data.size

        return inner_loss, outer_loss
    prepare, weighted = prepared_inner_loss(model, relaxed)
    return (lambda w, theta, data: weighted(w, prepare(theta, data), data)), outer_loss


@functools.cache
def prepared_inner_loss(model: models.Model, relaxed: Relaxed):
    """``(prepare, inner)`` with ``inner(w, prepare(theta, data), data)`` the inner loss of
    :func:`poisoning_losses` under ``relaxed``: ``prepare`` adds ``theta["weights"]``, each row's
    presence times its soft keep-weight (the clean rows, then the poison points), which depend on
    ``theta`` alone. A solver then computes them once, not in every inner step (about 3x the cost
    of a hypergradient on MNIST 1 v 7 otherwise); the hypergradient chains their derivative
    (``jax.vjp`` of ``prepare``)."""

    def prepare(theta, data: PoisonData):
        x = jnp.concatenate([data.x_train, theta["xp"].astype(data.x_train.dtype)])
        y = jnp.concatenate([data.y_train, data.yp.astype(data.y_train.dtype)])
        presence = jnp.concatenate([data.clean_weight, data.poison_weight])
        soft = relaxed.weights(x, y, presence > 0, data.x_train, data.y_train, model.num_classes)
        return {**theta, "weights": presence * soft}

    def inner_loss(w, theta, data: PoisonData):
        n, weights = data.x_train.shape[0], theta["weights"]
        clean = jnp.sum(weights[:n] * model.loss(model.apply(w, data.x_train), data.y_train))
        poison = jnp.sum(weights[n:] * model.loss(model.apply(w, theta["xp"]), data.yp))
        return (clean + poison + models.penalty(model, w, theta["log_lam"])) / jnp.sum(weights)

    return prepare, inner_loss


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


@functools.partial(jax.jit, static_argnames=("mode",))
def poison_rows(splits, state: AttackState, mode: Replace | Add = Replace()) -> jax.Array:
    """Which rows of :func:`poisoned_training_set`'s ``x`` hold active poison points: ``(S, n)`` bool
    (what a sanitiser should remove; its recall and false-positive rate are measured on it)."""
    n_train = splits.x_train.shape[1]
    return jax.vmap(lambda st: mode.poison_rows(st, n_train))(state)
