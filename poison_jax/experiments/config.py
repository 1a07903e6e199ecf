"""Experiment configs (floor 2): one frozen config of sections, each a choice holding only what it reads.

An :class:`ExperimentConfig` has a name and nine sections; each section is a frozen dataclass
checked at construction, its fields documented where they are defined, and a field the chosen
alternative does not read does not exist (``RMD`` has no ``solver``)::

    data     digits(classes, n_test) | diabetes(n_test) | mnist5k(classes, n_test)      + x_box,
             | mnist(classes, data_dir) | fashion_mnist(classes, data_dir)                 outside_box
             | npz(path, test_path, scale) | arrays(scale) | synthetic(n_test)           (every source)
    model    lr | mlp(hidden)
    penalty  l2 | l1(smoothing) | elastic-net(smoothing)
    loss     logistic | smoothed-hinge(smoothing) | squared
    method   rmd(steps, lr, checkpoint) | ift(steps, lr, cg_iters, cg_tol, damping)
             | implicit(solver, cg_iters, cg_tol, damping);  solver: newton-cg(tol, iters) | lbfgs(tol, iters)
    attack   alpha, beta, xp_step, lam_step (normalised | sgd | adam | optimistic | armijo(min_scale)),
             poison_mode, log_lam_box, poison_batch, num_batches, iters_fixed, iters_clean,
             iters_multi, adaptive (none | project(statistics, q, iters) | relax(temperature)), concentrate,
             stealth, log_lam_init
    victim   sgd(lr, epochs, batch) | converged(solver)
    defence  none | sphere | slab | knn(k) | svd(mass) | loss   + statistics, rule: fraction(f) | percentile(q)
             | trim(f, iters) | sever(f, rounds) | label(k, eta)
    sweep    seed, num_seeds, n_train, n_val, settings, log_lam_small, log_lam_large,
             cv_log_lam_grid, cv_folds

Choices: in this folder's `sections`, `sources` and `defence_sections` modules. :func:`override`
changes a config by dotted paths (``{"method.steps": 50}``; ``{"method": "implicit"}`` switches the choice,
keeping the fields the new alternative shares with the old one, except the data source, which starts from its
defaults); ``--set`` reads its values with :func:`poison_jax.experiments.overrides.parse_overrides`. The hash
that files results keeps 0.1.0's (:mod:`poison_jax.experiments.legacy`): results folders written before resume.

Example::

    >>> from poison_jax.experiments import config, presets
    >>> c = presets.preset("digits-lr", {"sweep.num_seeds": 2, "attack.num_batches": 1})
    >>> c.fractions, c.method.steps
    ((0.0, 0.035), 100)
    >>> config.override(c, {"method": "implicit"}).method.solver.kind
    'newton-cg'
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from poison_jax.engine import checks
from poison_jax.experiments import checked
from poison_jax.experiments import defence_sections as ds
from poison_jax.experiments import sections as s
from poison_jax.experiments._together import check_together
from poison_jax.experiments.checked import ConfigError, Section, option
from poison_jax.experiments.sources import SOURCES, Digits, Npz, Source
from poison_jax.poisoning import attack as attacks
from poison_jax.poisoning import models, victims

__all__ = ["SETTINGS", "Attack", "ExperimentConfig", "Sweep", "describe", "override", "setting_label"]

SETTINGS = ("small", "large", "clean", "learned")


def _settings(path: str, value: Any) -> None:
    ok = isinstance(value, tuple) and value and set(value) <= set(SETTINGS) and len(set(value)) == len(value)
    if not ok:
        checks.fail(path, value, f"a non-empty tuple of distinct names from {', '.join(SETTINGS)}", error=ConfigError)


_ITERS = "hyperiterations"


@dataclasses.dataclass(frozen=True)
class Attack(Section):
    """Algorithm 1: the outer steps on the poison points Xp (ascent) and log λ (descent), the batches."""

    at: ClassVar[str] = "attack"
    alpha: float = option(0.99, "α, step size of the Xp rule", checked.positive)
    beta: float = option(0.8, "β, step size of the log λ rule", checked.positive)
    xp_step: s.StepRule = option(
        s.NormalisedStep(), "rule moving Xp (ascent; the paper: normalised)", checked.is_a(s.STEP_RULES)
    )
    lam_step: s.StepRule = option(
        s.SGDStep(), "rule moving log λ (descent; the paper: sgd)", checked.is_a(s.STEP_RULES)
    )
    poison_mode: str = option(
        "replace",
        "replace (the paper: poison points take training rows' places) or add (secml: appended)",
        checked.one_of(*attacks.MODES),
    )
    log_lam_box: tuple[float, float] = option(
        (-8.0, math.log(200.0)), "Φ(Λ), the (low, high) box of log λ", checked.box
    )
    poison_batch: int = option(
        7, "poison points per batch (cumulative: batch b adds to the earlier ones)", checked.positive_int
    )
    num_batches: int = option(
        5, "batches; fractions are b * poison_batch / n_train for b = 0 .. num_batches", checked.count
    )
    iters_fixed: int = option(100, f"T_Dp, {_ITERS} per batch with Λ fixed (small, large, clean)", checked.positive_int)
    iters_clean: int = option(
        50, f"T_λ, {_ITERS} learning log λ on clean data (learned, fraction 0)", checked.positive_int
    )
    iters_multi: int = option(100, f"T_mul, {_ITERS} per batch of the multiobjective attack", checked.positive_int)
    adaptive: ds.NonAdaptive | ds.Project | ds.Relax = option(
        ds.NonAdaptive(), "how the attacker adapts to a sanitiser: none, project or relax", checked.is_a(ds.ADAPTIVE)
    )
    concentrate: int = option(
        0, "tie each batch's poison points of a label into this many moving points (0: each its own)", checked.count
    )
    stealth: float = option(
        0.0, "γ, weight of the detectability penalty in the attacker's objective", checked.non_negative
    )
    log_lam_init: float = option(
        math.log(5.0), "log λ where learned starts (learned on clean data from there)", checked.finite
    )


@dataclasses.dataclass(frozen=True)
class Sweep(Section):
    """The sweep: seeds and split sizes, the Λ settings and their log λ."""

    at: ClassVar[str] = "sweep"
    seed: int = option(0, "the first split seed (seeds seed .. seed + num_seeds - 1)", checked.count)
    num_seeds: int = option(10, "random train/validation splits, one per seed, run together", checked.positive_int)
    n_train: int = option(200, "training points per split", checked.positive_int)
    n_val: int = option(70, "validation points per split (the attacker's and Λ's objective)", checked.positive_int)
    settings: tuple[str, ...] = option(
        SETTINGS, "Λ settings to run: small, large, clean (λ_CLEAN by CV), learned (under attack)", _settings
    )
    log_lam_small: float = option(-8.0, "log λ of the small setting (about no regularisation)", checked.finite)
    log_lam_large: float = option(math.log(200.0), "log λ of the large setting", checked.finite)
    cv_log_lam_grid: tuple[float, float, int] = option(
        (-8.0, 1.0, 19), "clean: (low, high, count) grid of log λ searched by cross-validation", checked.grid
    )
    cv_folds: int = option(
        5, "clean: cross-validation folds (>= 2)", lambda p, v: checks.integer(p, v, low=2, error=ConfigError)
    )


#: ``{field name: its alternatives}`` for the fields that are choices, and the sections without alternatives.
CHOICES: dict[str, Mapping[str, type[Section]]] = {
    "data": SOURCES,
    "model": s.MODELS,
    "penalty": s.PENALTIES,
    "loss": s.LOSSES,
    "method": s.METHODS,
    "victim": s.VICTIMS,
    "defence": ds.DEFENCES,
    "rule": ds.RULES,
    "adaptive": ds.ADAPTIVE,
    "solver": s.SOLVERS,
    "xp_step": s.STEP_RULES,
    "lam_step": s.STEP_RULES,
}
PLAIN = {"attack": Attack, "sweep": Sweep}


@dataclasses.dataclass(frozen=True)
class ExperimentConfig(Section):
    """Every setting of one experiment (the paper's Tables 1–3), in sections; checked at construction.

    ``poison-jax presets NAME`` prints every field with a preset's value and meaning (:func:`describe`).
    """

    name: str = option("custom", "the preset it came from (labels only; not in the config hash)", checked.name)
    data: Source = option(Digits(), "data source", checked.is_a(SOURCES))
    model: s.LR | s.MLP = option(s.LR(), "learner", checked.is_a(s.MODELS))
    penalty: s.L2 | s.L1 | s.ElasticNet = option(
        s.L2(), "regularisation, one log λ per layer each", checked.is_a(s.PENALTIES)
    )
    loss: s.Logistic | s.SmoothedHinge | s.Squared = option(s.Logistic(), "per-example loss", checked.is_a(s.LOSSES))
    method: s.RMD | s.IFT | s.Implicit = option(s.RMD(), "hypergradient", checked.is_a(s.METHODS))
    attack: Attack = option(Attack(), "the attack", checked.is_a({"": Attack}))
    victim: s.SGD | s.Converged = option(s.SGD(), "victim judged on the poisoned set", checked.is_a(s.VICTIMS))
    defence: ds.NoDefence | ds.Sphere | ds.Slab | ds.KNN | ds.SVD | ds.Loss | ds.Trim | ds.Sever | ds.Label = option(
        ds.NoDefence(), "sanitiser of the poisoned set before the victim fits", checked.is_a(ds.DEFENCES)
    )
    sweep: Sweep = option(Sweep(), "the sweep", checked.is_a({"": Sweep}))

    def __post_init__(self) -> None:
        super().__post_init__()
        check_together(self)

    # -- derived values ------------------------------------------------------------------
    @property
    def run_name(self) -> str:
        """What a run of this config is called (its default output folder): the name of a user's
        data file (``npz``: the file's stem), else the preset's name."""
        if isinstance(self.data, Npz) and self.data.path is not None:
            return Path(self.data.path).stem
        return self.name

    @property
    def fractions(self) -> tuple[float, ...]:
        """Poisoning fraction of each cell: ``b * poison_batch / n_train`` for b = 0..num_batches."""
        return tuple(b * self.attack.poison_batch / self.sweep.n_train for b in range(self.attack.num_batches + 1))

    @property
    def num_classes(self) -> int:
        """``K``: the number of classes (2 for the source's default pair and for a regression)."""
        classes = getattr(self.data, "classes", None)
        return len(classes) if classes is not None else 2

    @property
    def n_poison(self) -> int:
        return self.attack.poison_batch * self.attack.num_batches

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.sweep.seed, self.sweep.seed + self.sweep.num_seeds))

    def attack_settings(self, model: models.Model, x_box: tuple[float, float] | None = None) -> attacks.AttackSettings:
        """The :class:`~poison_jax.poisoning.attacks.AttackSettings` of this config for ``model``; ``x_box``: the
        poison box when the config's is None (the data's range, which the config cannot know)."""
        box = self.data.x_box if self.data.x_box is not None else x_box
        if box is None:
            raise ConfigError("data.x_box is None (the data's range): pass the data's range as x_box")
        a = self.attack
        return attacks.AttackSettings(
            model,
            self.method.build(),
            alpha=a.alpha,
            beta=a.beta,
            x_box=(float(box[0]), float(box[1])),
            lam_box=(float(a.log_lam_box[0]), float(a.log_lam_box[1])),
            xp_step=a.xp_step.build(),
            lam_step=a.lam_step.build(),
            mode=attacks.MODES[a.poison_mode](),
            **a.adaptive.attack_fields(self.defence),
            concentrate=a.concentrate or None,
            stealth=float(a.stealth),
        )

    def victim_model(self) -> victims.SGDVictim | victims.ConvergedVictim:
        """The victim the attack is judged on."""
        return self.victim.build(self.sweep.n_train)

    def hash(self) -> str:
        """The hash results are filed under: 0.1.0's, of every field that changes results (``name``
        and ``settings`` excluded; :func:`poison_jax.experiments.legacy.config_hash`)."""
        from poison_jax.experiments import legacy  # the 0.1.0 view reads the presets, which build configs

        return legacy.config_hash(self)

    @classmethod
    def from_dict(cls, tree: Mapping[str, Any]) -> ExperimentConfig:
        """The config of :meth:`to_dict`'s dict (``config.json``'s ``"config"``)."""
        return _build(cls, tree, "")  # type: ignore[return-value]


def setting_label(config: ExperimentConfig, setting: str) -> str:
    """The label of a Λ setting in tables and figures (``"log λ = -8"``, ``"large λ"``, ...)."""
    return {
        "small": f"log λ = {config.sweep.log_lam_small:g}",
        "large": "large λ",
        "clean": "λ_CLEAN",
        "learned": "λ learned",
    }[setting]


# -- dicts and paths ---------------------------------------------------------------------------


def _class_of(field: str, node: Any, at: str) -> type[Section]:
    if field in PLAIN:
        return PLAIN[field]
    kind = node.get("kind") if isinstance(node, Mapping) else node
    if not isinstance(kind, str) or kind not in CHOICES[field]:
        checks.fail(at, kind, f"one of {', '.join(CHOICES[field])}", error=ConfigError)
    return CHOICES[field][kind]


def _fields(cls: type[Section]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _build(cls: type[Section], tree: Mapping[str, Any], at: str) -> Section:
    unknown = sorted(set(tree) - set(_fields(cls)) - {"kind"})
    if unknown:
        raise ConfigError(
            f"{_what(cls, at)} has no field(s) {', '.join(unknown)}; its fields: {', '.join(_fields(cls)) or 'none'}"
        )
    kwargs = {}
    for field, value in tree.items():
        path = f"{at}.{field}" if at else field
        if field != "kind" and (field in CHOICES or field in PLAIN) and not isinstance(value, Section):
            value = _build(_class_of(field, value, path), value if isinstance(value, Mapping) else {}, path)
        if field != "kind":
            kwargs[field] = value
    try:
        return cls(**kwargs)
    except ConfigError as err:  # a section's checks name it by its label ("solver.tol"): name its path
        message = str(err)
        if cls.at and at and at != cls.at and message.startswith(cls.at + "."):
            raise ConfigError(at + message[len(cls.at) :]) from None
        raise


def _what(cls: type[Section], at: str) -> str:
    if not at:
        return "the config"
    return f"{at} {cls.kind!r}" if cls.kind else at


def override(config: ExperimentConfig, overrides: Mapping[str, Any]) -> ExperimentConfig:
    """``config`` with the fields at dotted paths set: ``{"sweep.num_seeds": 2, "method": "implicit",
    "method.cg_iters": 50, "data": sources.Npz(path="my.npz")}``.

    A choice set by its kind (``"method": "implicit"``) switches to that alternative, keeping the
    fields it shares with the old one (the data source starts from its defaults); a section value
    replaces the section. Choices are switched before their fields are set, whatever the order.

    Raises:
      ConfigError: naming the path or value and what is allowed.
    """
    tree = config.to_dict()
    for path, value in sorted(overrides.items(), key=lambda item: item[0].count(".")):
        _set(tree, path, value)
    return ExperimentConfig.from_dict(tree)


def _set(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node, at = tree, ""
    cls: type[Section] = ExperimentConfig
    for part in parents:
        if part not in _fields(cls) or not (part in CHOICES or part in PLAIN):
            raise ConfigError(f"config path {path!r}: {_what(cls, at)} has no section {part!r}{_hint(cls)}")
        at = f"{at}.{part}" if at else part
        if part not in node:  # a choice just switched: its section at its defaults
            node[part] = getattr(cls(), part).to_dict()
        node, cls = node[part], _class_of(part, node[part], at)
    at_last = f"{at}.{last}" if at else last
    if last not in _fields(cls):
        switch = f"; switch {at} first (its kinds: {', '.join(CHOICES[at.rsplit('.', 1)[-1]])})" if cls.kind else ""
        raise ConfigError(f"config path {path!r}: {_what(cls, at)} has no field {last!r}{_hint(cls)}{switch}")
    if isinstance(value, Section):
        value = value.to_dict()
    if last in CHOICES and value is None and "none" in CHOICES[last]:
        value = "none"  # --set defence=none reads as None: the choice's kind "none"
    if last in CHOICES and isinstance(value, str):
        new = _class_of(last, value, at_last)
        keep = {} if last == "data" else {k: v for k, v in node.get(last, {}).items() if k in _fields(new)}
        value = {"kind": value, **keep}
    elif isinstance(node.get(last), list) and isinstance(value, str):
        value = [value]  # one name for a tuple of names, e.g. sweep.settings=learned
    node[last] = value


def _hint(cls: type[Section]) -> str:
    return f" (its fields: {', '.join(_fields(cls)) or 'none'})"


def describe(section: Section, at: str = "") -> list[tuple[str, Any, str]]:
    """``(path, value, meaning)`` of every field of ``section`` (a config), choices as their kind."""
    rows = []
    for f in dataclasses.fields(section):
        value, path = getattr(section, f.name), f"{at}.{f.name}" if at else f.name
        if isinstance(value, Section):
            if value.kind:
                alternatives = ", ".join(CHOICES[f.name])
                rows.append((path, value.kind, f"{f.metadata['help']}: {alternatives} -- {_doc(value)}"))
            rows += describe(value, path)
        else:
            rows.append((path, value, f.metadata["help"]))
    return rows


def _doc(section: Section) -> str:
    return (type(section).__doc__ or "").strip().splitlines()[0]
