"""Outer steps of the attack: how the poison points (ascent) and log-λ (descent) move (floor 1).

Each rule is a frozen dataclass whose step *size* comes from the attack settings (``alpha`` for
the poison points, ``beta`` for log-λ), so swapping a rule never leaves a setting unused:

* :class:`Normalised` -- the paper's step for ``Xp``: ``x ± lr·g/||g||`` (norm over the points
  being optimised);
* :class:`SGD` -- the paper's step for log-λ: ``x ± lr·g``;
* :class:`Adam` -- optax's Adam (the paper's "adaptive learning rates", future work);
* :class:`Optimistic` -- optax's optimistic gradient descent, ``x ± lr·(2 g_t − g_{t−1})``: with
  ascent on ``Xp`` and descent on log-λ this is optimistic gradient descent/ascent for the min-max
  (the paper's other future work);
* :class:`Armijo` -- a projected normalised step whose length is found by backtracking until the
  attacker's objective rises (falls, for descent) by the Armijo condition; the accepted length,
  grown by ``grow``, starts the next search.

All are called the same way, and every result is projected onto the box (``box``: ``(low, high)``, or
a projection ``x -> x`` of its own, e.g. onto a sanitiser's feasible set)::

    state = rule.init(x)
    x, state = rule.step(x, g, state, lr=..., ascent=True, box=(0., 1.), mask=..., value=A(x), value_fn=A)

``mask`` (broadcastable to ``x``) says which entries may move; ``value_fn`` (only
:class:`Armijo` calls it) evaluates the objective at a trial point. :meth:`~Armijo.step_and_aux`
is the same step where ``value_fn`` also returns what it computed on the way (the attack's inner
solution at the trial point) and the step returns that of the point it takes, so the attack's next
hypergradient starts from a solved inner problem instead of solving it again.

Example::

    >>> import jax.numpy as jnp
    >>> from poison_jax.poisoning import outer
    >>> f = lambda x: -jnp.sum((x - 0.7) ** 2)
    >>> rule, x = outer.Armijo(), jnp.zeros(3)
    >>> state = rule.init(x)
    >>> for _ in range(8):
    ...     g = -2 * (x - 0.7)
    ...     x, state = rule.step(x, g, state, lr=0.5, ascent=True, box=(0.0, 1.0), mask=True, value=f(x), value_fn=f)
    >>> bool(jnp.allclose(x, 0.7, atol=1e-2))
    True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from optax import projections

from poison_jax import engine
from poison_jax.engine import checks

__all__ = ["Adam", "Armijo", "Normalised", "OUTER_STEPS", "Optimistic", "SGD"]


def _project(x, box):
    return box(x) if callable(box) else projections.projection_box(x, *box)


@dataclasses.dataclass(frozen=True)
class _OptaxRule:
    """A rule given by an optax transformation of the *descent* gradient (ascent negates it)."""

    def transform(self, lr) -> optax.GradientTransformation:
        raise NotImplementedError

    def init(self, x):
        return self.transform(1.0).init(x)

    def step(self, x, g, state, *, lr, ascent: bool, box, mask, value=None, value_fn=None):
        descent_grad = jnp.where(mask, -g if ascent else g, 0.0)
        updates, state = self.transform(lr).update(descent_grad, state, x)
        return _project(x + jnp.where(mask, updates, 0.0), box), state

    def step_and_aux(self, x, g, state, *, lr, ascent: bool, box, mask, value=None, value_fn=None, aux):
        """:meth:`step`, returning ``aux`` unchanged (this rule evaluates nothing)."""
        return *self.step(x, g, state, lr=lr, ascent=ascent, box=box, mask=mask), aux


@dataclasses.dataclass(frozen=True)
class Normalised(_OptaxRule):
    """``x ± lr·g/||g||``: the paper's step on the poison points (Algorithm 1)."""

    def transform(self, lr):
        # The sign makes it a descent rule like the others; ascent passes -g.
        return optax.normalize_by_update_norm(scale_factor=-lr)


@dataclasses.dataclass(frozen=True)
class SGD(_OptaxRule):
    """``x ± lr·g``: the paper's step on log-λ."""

    def transform(self, lr):
        return optax.sgd(lr)


@dataclasses.dataclass(frozen=True)
class Adam(_OptaxRule):
    """optax's Adam with step size ``lr``, moments ``b1``, ``b2``."""

    b1: float = 0.9
    b2: float = 0.999

    def __post_init__(self):
        for name in ("b1", "b2"):
            value = getattr(self, name)
            if not (checks.is_real(value) and 0 <= value < 1):
                checks.fail(f"Adam {name}", value, "a number in [0, 1)")

    def transform(self, lr):
        return optax.adam(lr, b1=self.b1, b2=self.b2)


@dataclasses.dataclass(frozen=True)
class Optimistic(_OptaxRule):
    """optax's optimistic gradient descent, ``x_{t+1} = x_t − lr·(2 g_t − g_{t−1})`` (signs for ascent)."""

    def transform(self, lr):
        return optax.optimistic_gradient_descent(lr)


@dataclasses.dataclass(frozen=True)
class Armijo:
    """Projected normalised step with a backtracking (Armijo) line search on the objective.

    The trial ``x_t = Π(x ± t·g/||g||)`` is accepted when
    ``±(A(x_t) − A(x)) >= c · ±gᵀ(x_t − x)``; otherwise ``t ← shrink·t``, at most ``max_trials``
    times (then ``x`` stays and the shorter ``t`` is kept). The search starts from the last
    accepted length times ``grow``, kept within ``[min_scale·lr, max_scale·lr]``; the first from
    ``lr``.

    Attributes:
      shrink: factor in (0, 1) of each backtracking step.
      grow: factor >= 1 applied to the last accepted length.
      c: sufficient-increase constant in (0, 1).
      max_trials: objective evaluations per step at most (> 0).
      max_scale: cap on the length, as a multiple of ``lr`` (>= 1).
      min_scale: floor of the starting length, as a multiple of ``lr`` (in [0, 1]).
    """

    shrink: float = 0.5
    grow: float = 2.0
    c: float = 1e-4
    max_trials: int = 8
    max_scale: float = 64.0
    min_scale: float = 1.0

    def __post_init__(self):
        allowed = {
            "shrink": 0 < self.shrink < 1,
            "grow": self.grow >= 1,
            "c": 0 < self.c < 1,
            "max_scale": self.max_scale >= 1,
            "min_scale": 0 <= self.min_scale <= 1,
        }
        for name, ok in allowed.items():
            if not ok or not math.isfinite(getattr(self, name)):
                raise ValueError(
                    f"Armijo {name} = {getattr(self, name)!r} is not allowed: shrink in (0, 1), "
                    f"grow >= 1, c in (0, 1), max_scale >= 1, min_scale in [0, 1]"
                )
        checks.positive_int("Armijo max_trials", self.max_trials)

    def init(self, x):
        return jnp.asarray(jnp.nan, jnp.result_type(x))  # no accepted length yet: start at lr

    def step(self, x, g, state, *, lr, ascent: bool, box, mask, value, value_fn: Callable[[Any], jax.Array]):
        x, state, _ = self.step_and_aux(
            x,
            g,
            state,
            lr=lr,
            ascent=ascent,
            box=box,
            mask=mask,
            value=value,
            value_fn=lambda x: (value_fn(x), ()),
            aux=(),
        )
        return x, state

    def step_and_aux(
        self, x, g, state, *, lr, ascent: bool, box, mask, value, value_fn: Callable[[Any], tuple[jax.Array, Any]], aux
    ):
        """:meth:`step` where ``value_fn(x) -> (objective, aux)``.

        Returns:
          ``(x, state, aux)``: ``aux`` of the accepted trial point, or the given ``aux`` when ``x`` stays.
        """
        sign = 1.0 if ascent else -1.0
        d = jnp.where(mask, sign * g, 0.0)
        d = d / jnp.maximum(jnp.linalg.norm(d), jnp.finfo(d.dtype).tiny)
        # From the last accepted length times grow, within [min_scale·lr, max_scale·lr]: with min_scale = 1
        # a run of rejected trials (a moving target) never leaves the rule crawling; with a small
        # min_scale a converged attack stays cheap (its trials stay short).
        start = jnp.where(jnp.isnan(state), lr, jnp.clip(state * self.grow, self.min_scale * lr, self.max_scale * lr))

        def trial(t):
            x_t = _project(x + t * d, box)
            value_t, aux_t = value_fn(x_t)
            return x_t, aux_t, sign * (value_t - value) >= self.c * sign * jnp.vdot(g, x_t - x)

        # Under a trace, jitted: the trial before the loop and the loop's trials share one trace of the
        # objective (an inner solve), and the nested jit is inlined (the program is the same).
        trial = engine.traced_once(trial, x)

        def cond(carry):
            *_, ok, k = carry
            return ~ok & (k < self.max_trials)

        def body(carry):
            t, *_, k = carry
            t = t * self.shrink
            return t, *trial(t), k + 1

        t, x_t, aux_t, ok, _ = jax.lax.while_loop(cond, body, (start, *trial(start), jnp.asarray(1, jnp.int32)))
        taken = jax.tree_util.tree_map(lambda new, old: jnp.where(ok, new, old), (x_t, aux_t), (x, aux))
        return taken[0], t.astype(state.dtype), taken[1]


OUTER_STEPS = {"normalised": Normalised, "sgd": SGD, "adam": Adam, "optimistic": Optimistic, "armijo": Armijo}
