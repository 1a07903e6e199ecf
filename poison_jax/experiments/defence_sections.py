"""The defence section of an experiment config (floor 2): the sanitiser applied to each poisoned
training set before the victim fits, and its removal rule.

``--set defence=sphere`` (or ``slab``, ``knn``, ``svd``, ``loss``; ``none``, the default, fits the
victim on the whole poisoned set) with ``defence.statistics`` (``oracle``: centroids, radii,
subspaces, neighbours and the loss's model from the clean training set; ``data-dependent``: from the
poisoned set, what a real defender has) and ``defence.rule`` (``fraction``: per class, the
highest-scoring ``rule.f`` of the rows; ``percentile``: per class, the rows scoring above the
``rule.q``-th percentile of the reference rows' scores). ``trim`` and ``sever`` refit the victim's
learner while they remove rows; ``label`` relabels rows to their neighbours' majority. Each builds a
defence of :mod:`poison_jax.poisoning.defences` or :mod:`poison_jax.poisoning.model_defences`
(``build()``; ``none`` builds ``None``). The defence judges the attack: unless the attack adapts
(``attack.adaptive``, ``attack.concentrate``, ``attack.stealth``) the attacker does not see it, and
learned λ is learned on the unsanitised set.

Example::

    >>> from poison_jax.experiments import defence_sections as d
    >>> d.Sphere(statistics="oracle", rule=d.Percentile(q=90.0)).build().statistics
    'oracle'
    >>> d.Fraction(f=1.0)
    Traceback (most recent call last):
    ...
    poison_jax.experiments.checked.ConfigError: rule.f must be a number in [0, 1), got 1.0
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from poison_jax.engine import checks
from poison_jax.experiments.checked import ConfigError, Section, family, is_a, one_of, option, positive, positive_int
from poison_jax.poisoning import defences, feasible, model_defences, relaxed

__all__ = [
    "ADAPTIVE",
    "DEFENCES",
    "KNN",
    "RULES",
    "Label",
    "Loss",
    "Relax",
    "Sever",
    "Trim",
    "SVD",
    "Fraction",
    "NoDefence",
    "NonAdaptive",
    "Percentile",
    "Project",
    "Slab",
    "Sphere",
    "check_applies",
]


def _fraction(path: str, value: Any) -> None:
    if not checks.is_real(value) or not 0 <= value < 1:
        checks.fail(path, value, "a number in [0, 1)", error=ConfigError)


def _percentile(path: str, value: Any) -> None:
    if not checks.is_real(value) or not 0 < value <= 100:
        checks.fail(path, value, "a number in (0, 100]", error=ConfigError)


def _mass(path: str, value: Any) -> None:
    if not checks.is_real(value) or not 0 < value <= 1:
        checks.fail(path, value, "a number in (0, 1]", error=ConfigError)


@dataclasses.dataclass(frozen=True)
class Fraction(Section):
    """Remove, per class, the highest-scoring fraction of the rows."""

    kind: ClassVar[str] = "fraction"
    at: ClassVar[str] = "rule"
    f: float = option(0.05, "fraction of each class's rows removed, in [0, 1)", _fraction)

    def build(self) -> defences.Fraction:
        return defences.Fraction(float(self.f))


@dataclasses.dataclass(frozen=True)
class Percentile(Section):
    """Remove, per class, the rows scoring above a percentile of the reference rows' scores."""

    kind: ClassVar[str] = "percentile"
    at: ClassVar[str] = "rule"
    q: float = option(
        90.0, "the percentile of the reference rows' scores above which rows go, in (0, 100]", _percentile
    )

    def build(self) -> defences.Percentile:
        return defences.Percentile(float(self.q))


RULES = family(Fraction, Percentile)


@dataclasses.dataclass(frozen=True)
class NoDefence(Section):
    """No sanitiser: the victim fits the whole poisoned training set (the paper's setting)."""

    kind: ClassVar[str] = "none"
    at: ClassVar[str] = "defence"

    def build(self) -> None:
        return None


_STATISTICS = "where the statistics come from: oracle (the clean training set) or data-dependent (the poisoned set)"


@dataclasses.dataclass(frozen=True)
class _Sanitiser(Section):
    """A sanitiser: its score (the subclass), where its statistics come from and its removal rule."""

    at: ClassVar[str] = "defence"
    statistics: str = option("data-dependent", _STATISTICS, one_of(*defences.STATISTICS))
    rule: Fraction | Percentile = option(Fraction(), "the removal rule: fraction or percentile", is_a(RULES))

    def score(self) -> Any:
        raise NotImplementedError

    def build(self) -> defences.Sanitiser | model_defences.LossSanitiser:
        return defences.Sanitiser(self.score(), self.rule.build(), self.statistics)


@dataclasses.dataclass(frozen=True)
class Sphere(_Sanitiser):
    """The L2 ball: a row's distance to its class's centroid."""

    kind: ClassVar[str] = "sphere"

    def score(self) -> defences.Sphere:
        return defences.Sphere()


@dataclasses.dataclass(frozen=True)
class Slab(_Sanitiser):
    """The slab: a row's distance to its class's centroid along the centroids' difference (binary)."""

    kind: ClassVar[str] = "slab"

    def score(self) -> defences.Slab:
        return defences.Slab()


@dataclasses.dataclass(frozen=True)
class KNN(_Sanitiser):
    """k nearest neighbours: a row's summed distance to its k nearest rows of its class."""

    kind: ClassVar[str] = "knn"
    k: int = option(5, "neighbours summed", positive_int)

    def score(self) -> defences.KNN:
        return defences.KNN(k=self.k)


@dataclasses.dataclass(frozen=True)
class SVD(_Sanitiser):
    """The SVD subspace: a row's distance outside its class's top singular subspace."""

    kind: ClassVar[str] = "svd"
    mass: float = option(0.95, "the subspace keeps this share of the squared singular values, in (0, 1]", _mass)

    def score(self) -> defences.SVD:
        return defences.SVD(mass=float(self.mass))


@dataclasses.dataclass(frozen=True)
class Loss(_Sanitiser):
    """The loss: a row's loss under the victim's learner fit on the reference rows."""

    kind: ClassVar[str] = "loss"

    def build(self) -> model_defences.LossSanitiser:
        return model_defences.LossSanitiser(self.rule.build(), self.statistics)


@dataclasses.dataclass(frozen=True)
class Trim(Section):
    """TRIM (Jagielski et al. 2018): refit on the rows of smallest loss until they stop changing."""

    kind: ClassVar[str] = "trim"
    at: ClassVar[str] = "defence"
    f: float = option(0.1, "the share of the rows trimmed away, in [0, 1)", _fraction)
    iters: int = option(10, "refits at most", positive_int)

    def build(self) -> model_defences.Trim:
        return model_defences.Trim(f=float(self.f), iters=self.iters)


@dataclasses.dataclass(frozen=True)
class Sever(Section):
    """SEVER (Diakonikolas et al. 2019): remove the rows whose centred loss gradients lie furthest
    along their top singular direction, refitting between rounds."""

    kind: ClassVar[str] = "sever"
    at: ClassVar[str] = "defence"
    f: float = option(0.05, "the share of the rows removed over all rounds, in [0, 1)", _fraction)
    rounds: int = option(4, "fit-score-remove rounds", positive_int)

    def build(self) -> model_defences.Sever:
        return model_defences.Sever(f=float(self.f), rounds=self.rounds)


def _share(path: str, value: Any) -> None:
    if not checks.is_real(value) or not 0 < value <= 1:
        checks.fail(path, value, "a number in (0, 1]", error=ConfigError)


@dataclasses.dataclass(frozen=True)
class Label(Section):
    """k-NN label sanitisation (Paudice et al. 2018): a row takes its k nearest rows' majority
    label when that majority holds at least ``eta`` of them."""

    kind: ClassVar[str] = "label"
    at: ClassVar[str] = "defence"
    k: int = option(10, "neighbours that vote", positive_int)
    eta: float = option(0.5, "the majority's share needed to relabel, in (0, 1]", _share)

    def build(self) -> model_defences.LabelSanitiser:
        return model_defences.LabelSanitiser(k=self.k, eta=float(self.eta))


DEFENCES = family(NoDefence, Sphere, Slab, KNN, SVD, Loss, Trim, Sever, Label)
#: The defences that score rows by class (classification only).
_BY_CLASS = (Sphere, Slab, KNN, SVD, Label)


@dataclasses.dataclass(frozen=True)
class NonAdaptive(Section):
    """The attacker ignores any sanitiser (the paper's attack and the strong one)."""

    kind: ClassVar[str] = "none"
    at: ClassVar[str] = "attack.adaptive"

    def attack_fields(self, defence: Any) -> dict[str, Any]:
        """The :class:`~poison_jax.poisoning.attack.AttackSettings` fields this attacker sets: none."""
        return {}


@dataclasses.dataclass(frozen=True)
class Project(Section):
    """After each step, project every trainable poison point onto its class's sphere ∩ slab ∩ box, the
    feasible set of the sphere and slab sanitisers at a percentile (binary classification)."""

    kind: ClassVar[str] = "project"
    at: ClassVar[str] = "attack.adaptive"
    statistics: str = option(
        "data-dependent", _STATISTICS + "; recomputed each hyperiteration", one_of(*defences.STATISTICS)
    )
    q: float = option(
        90.0, "radius and half-width at this percentile of the reference class's scores, in (0, 100]", _percentile
    )
    iters: int = option(50, "rounds of alternating (Dykstra) projections", positive_int)

    def attack_fields(self, defence: Any) -> dict[str, Any]:
        """``feasible``: the :class:`~poison_jax.poisoning.feasible.FeasibleSet` (whatever the defence)."""
        return {"feasible": feasible.FeasibleSet(statistics=self.statistics, q=float(self.q), iters=self.iters)}


@dataclasses.dataclass(frozen=True)
class Relax(Section):
    """The config's sanitiser relaxed inside the attacker's inner problem: each row weighs the sigmoid
    of its margin to the removal threshold, so the hypergradient sees the defence."""

    kind: ClassVar[str] = "relax"
    at: ClassVar[str] = "attack.adaptive"
    temperature: float = option(0.1, "the sigmoid's width, relative to each class's median score", positive)

    def attack_fields(self, defence: Any) -> dict[str, Any]:
        """``relaxed``: :class:`~poison_jax.poisoning.relaxed.Relaxed` of the defence's sanitiser."""
        return {"relaxed": relaxed.Relaxed(defence.build(), float(self.temperature))}


ADAPTIVE = family(NonAdaptive, Project, Relax)
#: The sanitisers the relaxed attacker can see through (their scores are differentiable).
_RELAXABLE = (Sphere, Slab, KNN)


def check_applies(defence: Section, adaptive: Section, *, regression: bool, num_classes: int) -> None:
    """Refuse a defence or an adaptive attacker where it does not apply: sanitisers that score rows by
    class and the label sanitiser need classification, the slab and the projection two classes, and
    the relaxed attacker a sanitiser with differentiable scores."""
    what = "a regression" if regression else f"{num_classes} classes"
    if isinstance(adaptive, Project) and (regression or num_classes != 2):
        checks.fail("attack.adaptive", adaptive.kind, f"none or relax with {what} (the projection is binary)",
                    error=ConfigError)  # fmt: skip
    if isinstance(adaptive, Relax) and not isinstance(defence, _RELAXABLE):
        allowed = " or ".join(k.kind for k in _RELAXABLE)
        checks.fail("attack.adaptive", adaptive.kind, f"none or project with defence={defence.kind} (relax needs "
                    f"defence {allowed})", error=ConfigError)  # fmt: skip
    if regression and isinstance(defence, _BY_CLASS):
        allowed = "none, loss, trim or sever with loss squared (the others work by class: classification only)"
        checks.fail("defence", defence.kind, allowed, error=ConfigError)
    if isinstance(defence, Slab) and num_classes != 2:
        allowed = f"anything but slab with {what} (the slab is binary)"
        checks.fail("defence", defence.kind, allowed, error=ConfigError)
