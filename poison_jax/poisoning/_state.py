"""The attack's settings, state and per-step record (private; public in :mod:`poison_jax.poisoning.attack`)."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax

from poison_jax import engine
from poison_jax.engine import Warm, checks
from poison_jax.poisoning import defences, models, outer
from poison_jax.poisoning._problem import Add, Replace
from poison_jax.poisoning.feasible import FeasibleSet
from poison_jax.poisoning.relaxed import Relaxed

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
      feasible: ``None`` (the default), or the adaptive attacker's
        :class:`~poison_jax.poisoning.feasible.FeasibleSet`: after each step every trainable poison point
        is projected onto its class's sphere ∩ slab ∩ ``x_box``, with bounds recomputed each
        hyperiteration (from the poisoned set for data-dependent statistics). Binary labels only.
      concentrate: ``None`` (the default: every poison point its own position), or ``k``: the
        trainable poison points of each label are tied into ``k`` groups (point ``i`` in group
        ``i mod k``) that move together, a few distinct points with multiplicities (the concentrated
        attack of Koh, Steinhardt & Liang, which defeats neighbour and subspace sanitisers); each
        step is projected onto the tied positions by averaging each group.
      stealth: ``γ >= 0``, the weight of a detectability penalty in the attacker's objective: the
        Xp rule ascends ``A(Xp) − γ D(Xp)``, ``D`` the trainable points' mean squared distance to
        their class's clean centroid over the clean points' own (strength against stealth); 0 (the
        default): none. The recorded objective stays ``A``.
      seed_lanes: how the seed axis runs (:func:`poison_jax.poisoning.seeds.over_seeds`): ``None`` vmaps all
        seeds (the default; what a GPU wants); ``L`` runs ``L`` lanes that each loop over their
        seeds, so a converged solver's iterations are not paid for the slowest seed by all (on a
        CPU, one lane per device). Results are the same either way.
      relaxed: ``None`` (the default), or the adaptive attacker's
        :class:`~poison_jax.poisoning.relaxed.Relaxed` sanitiser: the inner problem weighs each row of
        the poisoned set by its soft keep-weight, a sigmoid of its margin to the sanitiser's
        threshold computed from ``Xp``, so the hypergradient sees the defence
        (:func:`~poison_jax.poisoning.attack.poisoning_losses`). Classification only; a slab needs
        two classes.
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
    feasible: FeasibleSet | None = None
    concentrate: int | None = None
    stealth: float = 0.0
    seed_lanes: int | None = None
    relaxed: Relaxed | None = None

    def __post_init__(self):
        if not isinstance(self.model, models.Model):
            raise TypeError(
                f"model must be a poison_jax.poisoning.models.Model, got {type(self.model).__name__}: wrap a flax "
                "module with poison_jax.poisoning.models.from_flax(module, example_x), or build "
                "models.Model(name, init, apply, layers, "
                "random_init)"
            )
        if not isinstance(self.method, engine.Method):
            raise TypeError(f"method must be an engine.Method (RMD(...), IFT(...), Implicit(...)), got {self.method!r}")
        for name in ("alpha", "beta"):
            checks.positive_finite(name, getattr(self, name))
        for name in ("x_box", "lam_box"):
            if not isinstance(getattr(self, name), tuple):
                checks.fail(name, getattr(self, name), "a pair (low, high) of finite numbers with low < high")
            checks.box(name, getattr(self, name))
        for name in ("xp_step", "lam_step"):
            if not isinstance(getattr(self, name), _STEP_RULES):
                raise TypeError(
                    f"{name} must be one of poison_jax.poisoning.outer's rules "
                    f"({', '.join(r.__name__ + '()' for r in _STEP_RULES)}), got {getattr(self, name)!r}"
                )
        if not isinstance(self.mode, (Replace, Add)):
            raise TypeError(f"mode must be Replace() or Add(), got {self.mode!r}")
        if self.feasible is not None and not isinstance(self.feasible, FeasibleSet):
            raise TypeError(
                f"feasible must be None or a poison_jax.poisoning.feasible.FeasibleSet, got {self.feasible!r}"
            )
        if self.feasible is not None and self.model.num_classes != 2:
            checks.fail("feasible", self.feasible, f"None with {self.model.num_classes} classes (the slab is binary)")
        checks.positive_finite("stealth", self.stealth, allow_zero=True)
        if self.concentrate is not None and not (checks.is_int(self.concentrate) and self.concentrate > 0):
            checks.fail("concentrate", self.concentrate, "None or a positive integer (groups per label)")
        self._check_relaxed()
        if self.seed_lanes is not None and not (checks.is_int(self.seed_lanes) and self.seed_lanes > 0):
            checks.fail("seed_lanes", self.seed_lanes, "None or a positive integer")

    def _check_relaxed(self):
        if self.relaxed is None:
            return
        if not isinstance(self.relaxed, Relaxed):
            raise TypeError(f"relaxed must be None or a poison_jax.poisoning.relaxed.Relaxed, got {self.relaxed!r}")
        if self.model.loss.task == "regression":
            checks.fail("relaxed", self.relaxed, "None with a regression (sanitisers score rows by class)")
        if isinstance(self.relaxed.sanitiser.score, defences.Slab) and self.model.num_classes != 2:
            checks.fail("relaxed", self.relaxed, f"None or not a slab with {self.model.num_classes} classes")


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
      finite: whether the hyperiteration's hypergradients were finite.
      inner_converged: whether the inner solves reached their tolerance (fixed-step training: whether
        it stayed finite).
      stats: the :attr:`poison_jax.engine.Result.stats` of the hyperiteration's first hypergradient:
        what the method did (``inner_grad_norm`` always; ``adjoint_residual`` where an adjoint
        system is solved; ...).
    """

    val_loss: jax.Array
    finite: jax.Array
    inner_converged: jax.Array
    stats: dict[str, jax.Array]
