"""Experiments (floor 2): configs and the paper's presets, and the sweep runner.

A sweep crosses Λ settings × poisoning fractions, with all seeds of a cell in one vmapped call:

* ``small``   log λ = -8 (about no regularisation), fixed;
* ``large``   a large fixed λ (the paper's per-dataset value);
* ``clean``   λ_CLEAN, chosen by k-fold cross-validation on the clean training set, fixed;
* ``learned`` λ learned under attack: on clean data (T_λ) for fraction 0, then by the
  multiobjective attack (T_mul per batch), carried over from batch to batch.

Fractions are built cumulatively (Algorithm 1): batch ``b`` of ``poison_batch`` points is
optimised, then frozen, and the next batch replaces further clean points. Every finished cell is
written at once as one JSON line (:mod:`poison_jax.store`) with the attack's state, so an
interrupted sweep resumes where it stopped.

Example::

    >>> from poison_jax import experiment
    >>> config = experiment.preset("digits-lr", num_seeds=2, iters_fixed=2, iters_clean=2, iters_multi=2,
    ...                            num_batches=1, eval_epochs=2, settings=("small", "learned"))
    >>> config.fractions
    (0.0, 0.035)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from poison_jax import attack, bilevel, data, evaluate, hyperopt, models, outer, solvers
from poison_jax.bilevel import IFT, RMD, Implicit

__all__ = ["FIELDS", "PRESETS", "PRESET_SUMMARIES", "SETTINGS", "ExperimentConfig", "describe_preset", "parse_overrides",
           "preset", "run_sweep", "setting_label", "unused_fields", "use_cpu_cores"]

SETTINGS = ("small", "large", "clean", "learned")


FIELDS: dict[str, str] = {
    "name": "the preset the config came from (labels only; not part of the config hash)",
    "source": "data source: " + ", ".join(data.SOURCES),
    "classes": "the pair of classes (first -> label 0, second -> label 1); None: the source's default pair",
    "data_path": "npz source: the features file",
    "test_path": "npz source: a separate test file",
    "data_dir": "TFDS sources (mnist, fashion_mnist): folder of the prepared data",
    "n_train": "training points per split",
    "n_val": "validation points per split (the attacker's and Λ's objective)",
    "n_test": "test points (the victim's error); None: the source's default",
    "num_seeds": "random train/validation splits, one per seed, run together",
    "seed": "the first split seed (seeds seed .. seed + num_seeds - 1)",
    "model": "learner: lr (logistic regression) or mlp",
    "hidden": "mlp: hidden layer sizes",
    "inner_steps": "rmd/ift: T, full-batch gradient-descent steps of the inner training",
    "inner_lr": "rmd/ift: η, step size of the inner training",
    "hypergrad": "hypergradient: rmd (the paper: reverse mode through T steps), ift (implicit function theorem "
                 "at w_T), implicit (converged warm-started solver, then IFT: the strong attack)",
    "cg_iters": "ift/implicit: conjugate-gradient iterations at most for the adjoint",
    "cg_tol": "ift/implicit: relative CG residual to stop at",
    "damping": "ift/implicit: added to the Hessian's diagonal in the adjoint system",
    "solver": "implicit or converged victim: inner solver, newton-cg or lbfgs",
    "solver_tol": "implicit or converged victim: stop when ||grad_w inner|| <= solver_tol",
    "solver_iters": "implicit or converged victim: solver iterations at most",
    "checkpoint": "rmd: rematerialise the inner loop in segments (memory for time)",
    "xp_step": "rule moving Xp (ascent): " + ", ".join(outer.OUTER_STEPS) + " (the paper: normalised)",
    "lam_step": "rule moving log λ (descent): " + ", ".join(outer.OUTER_STEPS) + " (the paper: sgd)",
    "poison_mode": "replace (the paper: poison points take training rows' places) or add (secml: appended)",
    "victim": "victim judged on the poisoned set: sgd (the paper: eval_lr, eval_epochs, eval_batch) or "
              "converged (the inner solver to convergence)",
    "alpha": "α, step size of the Xp rule",
    "beta": "β, step size of the log λ rule",
    "iters_fixed": "T_Dp, hyperiterations per batch with Λ fixed (small, large, clean)",
    "iters_clean": "T_λ, hyperiterations learning log λ on clean data (learned, fraction 0)",
    "iters_multi": "T_mul, hyperiterations per batch of the multiobjective attack (learned)",
    "x_box": "Φ(Dp), the (low, high) box of the poison features",
    "log_lam_box": "Φ(Λ), the (low, high) box of log λ",
    "poison_batch": "poison points per batch (cumulative: batch b adds its points to the earlier ones)",
    "num_batches": "batches; fractions are b * poison_batch / n_train for b = 0 .. num_batches",
    "log_lam_init": "log λ where learned starts (learned on clean data from there)",
    "log_lam_small": "log λ of the small setting (about no regularisation)",
    "log_lam_large": "log λ of the large setting",
    "cv_log_lam_grid": "clean: (low, high, count) grid of log λ searched by cross-validation",
    "cv_folds": "clean: cross-validation folds",
    "settings": "Λ settings to run: small, large, clean (λ_CLEAN by CV), learned (under attack)",
    "eval_lr": "sgd victim: learning rate η_tr",
    "eval_epochs": "sgd victim: epochs",
    "eval_batch": "sgd victim: mini-batch size",
}


def setting_label(config: "ExperimentConfig", setting: str) -> str:
    """The label of a Λ setting in tables and figures (``"log λ = -8"``, ``"large λ"``, ...)."""
    return {"small": f"log λ = {config.log_lam_small:g}", "large": "large λ", "clean": "λ_CLEAN",
            "learned": "λ learned"}[setting]
MODELS = ("lr", "mlp")
HYPERGRADS = ("rmd", "ift", "implicit")
SOLVERS = {"newton-cg": solvers.NewtonCG, "lbfgs": solvers.LBFGS}
VICTIMS = ("sgd", "converged")


class ConfigError(ValueError):
    """A config field has a value that is not allowed; the message names both."""


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Every setting of one experiment (the paper's Tables 1–3). Validated at construction.

    :data:`FIELDS` says what each field means (``poison-jax presets NAME`` prints them with a
    preset's values). Fields holding log λ say so in their names (``log_lam_small``, ...). A field
    that the chosen ``source``, ``model``, ``hypergrad`` or ``victim`` does not read must stay at
    its default (:func:`unused_fields`).
    """

    name: str = "custom"
    source: str = "digits"
    classes: tuple[int, int] | None = None
    data_path: str | None = None
    test_path: str | None = None
    data_dir: str | None = None
    n_train: int = 200
    n_val: int = 70
    n_test: int | None = None
    num_seeds: int = 10
    seed: int = 0
    model: str = "lr"
    hidden: tuple[int, ...] = (128, 32)
    inner_steps: int = 150
    inner_lr: float = 0.1
    hypergrad: str = "rmd"
    cg_iters: int = 100
    cg_tol: float = 1e-6
    damping: float = 0.0
    solver: str = "newton-cg"
    solver_tol: float = 1e-5
    solver_iters: int = 100
    checkpoint: bool = False
    xp_step: str = "normalised"
    lam_step: str = "sgd"
    poison_mode: str = "replace"
    victim: str = "sgd"
    alpha: float = 0.99
    beta: float = 0.8
    iters_fixed: int = 100
    iters_clean: int = 50
    iters_multi: int = 100
    x_box: tuple[float, float] = (0.0, 1.0)
    log_lam_box: tuple[float, float] = (-8.0, math.log(200.0))
    poison_batch: int = 17
    num_batches: int = 5
    log_lam_init: float = math.log(5.0)
    log_lam_small: float = -8.0
    log_lam_large: float = math.log(200.0)
    cv_log_lam_grid: tuple[float, float, int] = (-8.0, 1.0, 19)
    cv_folds: int = 5
    settings: tuple[str, ...] = SETTINGS
    eval_lr: float = 1e-2
    eval_epochs: int = 200
    eval_batch: int = 64

    def __post_init__(self):
        _validate(self)

    # -- derived values ------------------------------------------------------------------
    @property
    def fractions(self) -> tuple[float, ...]:
        """Poisoning fraction of each cell: ``b * poison_batch / n_train`` for b = 0..num_batches."""
        return tuple(b * self.poison_batch / self.n_train for b in range(self.num_batches + 1))

    @property
    def n_poison(self) -> int:
        return self.poison_batch * self.num_batches

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.seed, self.seed + self.num_seeds))

    def inner_solver(self) -> solvers.NewtonCG | solvers.LBFGS:
        """The converged inner solver the config names (``solver``, ``solver_tol``, ``solver_iters``)."""
        return SOLVERS[self.solver](tol=self.solver_tol, maxiter=self.solver_iters)

    def method(self) -> bilevel.Method:
        """The hypergradient strategy the config names."""
        builders = {
            "rmd": lambda: RMD(steps=self.inner_steps, lr=self.inner_lr, checkpoint=True if self.checkpoint else None),
            "ift": lambda: IFT(steps=self.inner_steps, lr=self.inner_lr, cg_iters=self.cg_iters, cg_tol=self.cg_tol,
                               damping=self.damping),
            "implicit": lambda: Implicit(solver=self.inner_solver(), cg_iters=self.cg_iters, cg_tol=self.cg_tol,
                                         damping=self.damping),
        }
        return builders[self.hypergrad]()

    def attack_settings(self, model: models.Model) -> attack.AttackSettings:
        """The :class:`~poison_jax.attack.AttackSettings` of this config for ``model``."""
        return attack.AttackSettings(model, self.method(), alpha=self.alpha, beta=self.beta,
                                     x_box=tuple(map(float, self.x_box)), lam_box=tuple(map(float, self.log_lam_box)),
                                     xp_step=outer.OUTER_STEPS[self.xp_step](),
                                     lam_step=outer.OUTER_STEPS[self.lam_step](),
                                     mode=attack.MODES[self.poison_mode]())

    def victim_model(self) -> evaluate.SGDVictim | evaluate.ConvergedVictim:
        """The victim the attack is judged on."""
        if self.victim == "converged":
            return evaluate.ConvergedVictim(self.inner_solver())
        return evaluate.SGDVictim(lr=float(self.eval_lr), epochs=self.eval_epochs,
                                  batch_size=min(self.eval_batch, self.n_train))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def hash(self) -> str:
        """Hash of every field that changes results (``name`` and ``settings`` excluded).

        Fields added after the first release count only when they differ from their default, so a
        results folder written before they existed still resumes under the same hash.
        """
        defaults = {f.name: _jsonable(f.default) for f in dataclasses.fields(self)}
        legacy = {new: old for old, new in RENAMED.items()}  # renamed fields hash under their first names
        fields = {legacy.get(k, k): v for k, v in self.to_dict().items() if k not in ("name", "settings")
                  and not (k in _LATER_FIELDS and v == defaults[k])}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


# Fields that hold log λ say so in their names; the first names are refused with the new one.
RENAMED = {"lam_small": "log_lam_small", "lam_large": "log_lam_large", "lam_box": "log_lam_box",
           "lam_init": "log_lam_init", "cv_grid": "cv_log_lam_grid"}

_dataclass_init = ExperimentConfig.__init__


@functools.wraps(_dataclass_init)
def _init_refusing_renamed(self, *args, **kwargs):
    _refuse_unknown_fields(kwargs)
    _dataclass_init(self, *args, **kwargs)


ExperimentConfig.__init__ = _init_refusing_renamed

_LATER_FIELDS = ("damping", "solver", "solver_tol", "solver_iters", "xp_step", "lam_step", "poison_mode", "victim")


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


# -- validation ------------------------------------------------------------------------------


def _fail(field: str, value, allowed: str):
    raise ConfigError(f"config field {field!r} = {value!r} is not allowed: {allowed}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and math.isfinite(value)


def _validate(c: ExperimentConfig) -> None:
    choices = {"source": data.SOURCES, "model": MODELS, "hypergrad": HYPERGRADS, "solver": tuple(SOLVERS),
               "xp_step": tuple(outer.OUTER_STEPS), "lam_step": tuple(outer.OUTER_STEPS),
               "poison_mode": tuple(attack.MODES), "victim": VICTIMS}
    for field, allowed in choices.items():
        if getattr(c, field) not in allowed:
            _fail(field, getattr(c, field), f"one of {', '.join(allowed)}")
    positive_ints = ("n_train", "n_val", "num_seeds", "inner_steps", "cg_iters", "iters_fixed", "iters_clean",
                     "iters_multi", "poison_batch", "eval_epochs", "eval_batch", "solver_iters")
    for field in positive_ints:
        value = getattr(c, field)
        if not _is_int(value) or value <= 0:
            _fail(field, value, "a positive integer")
    for field in ("num_batches", "seed"):
        value = getattr(c, field)
        if not _is_int(value) or value < 0:
            _fail(field, value, "an integer >= 0")
    if c.n_test is not None and (not _is_int(c.n_test) or c.n_test <= 0):
        _fail("n_test", c.n_test, "a positive integer, or None for the source's default")
    if not _is_int(c.cv_folds) or c.cv_folds < 2:
        _fail("cv_folds", c.cv_folds, "an integer >= 2")
    for field in ("inner_lr", "alpha", "beta", "eval_lr"):
        value = getattr(c, field)
        if not _is_real(value) or value <= 0:
            _fail(field, value, "a finite number > 0 (a step size)")
    for field in ("cg_tol", "damping"):
        if not _is_real(getattr(c, field)) or getattr(c, field) < 0:
            _fail(field, getattr(c, field), "a finite number >= 0")
    if not _is_real(c.solver_tol) or c.solver_tol <= 0:
        _fail("solver_tol", c.solver_tol, "a finite number > 0 (a tolerance on the inner gradient norm)")
    for field in ("log_lam_init", "log_lam_small", "log_lam_large"):
        if not _is_real(getattr(c, field)):
            _fail(field, getattr(c, field), "a finite number (log-λ)")
    for field in ("x_box", "log_lam_box"):
        box = getattr(c, field)
        if not (isinstance(box, tuple) and len(box) == 2 and all(_is_real(b) for b in box)):
            _fail(field, box, "a pair (low, high) of finite numbers")
        if box[0] >= box[1]:
            _fail(field, box, "low < high (the bounds are inverted or equal)")
    if not (isinstance(c.cv_log_lam_grid, tuple) and len(c.cv_log_lam_grid) == 3 and _is_real(c.cv_log_lam_grid[0])
            and _is_real(c.cv_log_lam_grid[1]) and c.cv_log_lam_grid[0] < c.cv_log_lam_grid[1] and _is_int(c.cv_log_lam_grid[2]) and c.cv_log_lam_grid[2] >= 2):
        _fail("cv_log_lam_grid", c.cv_log_lam_grid, "(low, high, count) with low < high and an integer count >= 2")
    if not (isinstance(c.hidden, tuple) and c.hidden and all(_is_int(h) and h > 0 for h in c.hidden)):
        _fail("hidden", c.hidden, "a non-empty tuple of positive integers")
    if not (isinstance(c.settings, tuple) and c.settings and set(c.settings) <= set(SETTINGS)
            and len(set(c.settings)) == len(c.settings)):
        _fail("settings", c.settings, f"a non-empty tuple of distinct names from {', '.join(SETTINGS)}")
    if c.classes is not None and not (isinstance(c.classes, tuple) and len(c.classes) == 2):
        _fail("classes", c.classes, "a pair of class labels, or None for the source's default")
    if c.checkpoint not in (True, False):
        _fail("checkpoint", c.checkpoint, "true or false")
    if c.n_poison > min(c.n_train, c.n_val):
        _fail("num_batches", c.num_batches,
              f"poison_batch * num_batches = {c.n_poison} must not exceed n_train ({c.n_train}) nor n_val ({c.n_val})")
    if c.n_poison > c.n_train:  # pragma: no cover - implied above, kept for the fraction <= 1 guarantee
        _fail("num_batches", c.num_batches, "a poisoning fraction <= 1")
    _refuse_ignored(c)


# -- no silently ignored settings -------------------------------------------------------------
# Four choices decide which other fields are read: the data source, the model, the hypergradient
# method and the victim. One rule: a field that none of the choices in force reads, set away from
# its default (the preset's value for a preset, else the dataclass default), is refused.

_SOURCE_OPTIONS = {"classes": "classes", "n_test": "n_test", "data_path": "path", "test_path": "test_path",
                   "data_dir": "data_dir"}  # config field -> option of data.load_dataset


def _fields_used_by() -> dict[str, dict[str, tuple[str, ...]]]:
    """``{choice field: {choice: the fields it reads}}`` for the fields only some choices read."""
    return {
        "source": {source: tuple(f for f, option in _SOURCE_OPTIONS.items() if option in data.source_options(source))
                   for source in data.SOURCES},
        "model": {"lr": (), "mlp": ("hidden",)},
        "hypergrad": {"rmd": ("inner_steps", "inner_lr", "checkpoint"),
                      "ift": ("inner_steps", "inner_lr", "cg_iters", "cg_tol", "damping"),
                      "implicit": ("solver", "solver_tol", "solver_iters", "cg_iters", "cg_tol", "damping")},
        "victim": {"sgd": ("eval_lr", "eval_epochs", "eval_batch"), "converged": ("solver", "solver_tol", "solver_iters")},
    }


def unused_fields(c: ExperimentConfig) -> dict[str, str]:
    """``{field: why}`` for every field that the config's source, model, method and victim do not read."""
    groups = _fields_used_by()
    unused = {}
    for field in {f for used in groups.values() for fields in used.values() for f in fields}:
        owners = [g for g, used in groups.items() if any(field in fields for fields in used.values())]
        if not any(field in groups[g][getattr(c, g)] for g in owners):
            unused[field] = " and ".join(
                f"{g} {getattr(c, g)!r} (which reads {', '.join(groups[g][getattr(c, g)]) or 'none of them'})"
                for g in owners)
    return unused


def _refuse_ignored(c: ExperimentConfig) -> None:
    baseline = {f.name: f.default for f in dataclasses.fields(c)}
    baseline.update(PRESETS.get(c.name, {}))
    for field, why in sorted(unused_fields(c).items()):
        value = getattr(c, field)
        if _jsonable(value) != _jsonable(baseline[field]):
            raise ConfigError(f"config field {field!r} = {value!r} would be ignored: it is not read by {why}; "
                              f"leave it at {baseline[field]!r} or change that choice")


# -- presets (the paper's Tables 1–3) ----------------------------------------------------

_MNIST_LR = dict(source="mnist", classes=(0, 8), n_train=512, n_val=171, model="lr", inner_steps=150,
                 inner_lr=0.1, iters_fixed=100, iters_clean=50, iters_multi=100, alpha=0.99, beta=0.8,
                 x_box=(0.0, 1.0), log_lam_box=(-8.0, math.log(200.0)), log_lam_large=math.log(200.0), eval_lr=1e-2,
                 eval_epochs=200)

PRESET_SUMMARIES = {
    "mnist-lr": "the paper's MNIST 0 v 8 logistic regression (TFDS MNIST, needs prepared data: data_dir)",
    "mnist5k-lr": "the paper's MNIST 0 v 8 logistic regression on the offline 5,000-image sample (the demo's)",
    "fmnist-lr": "the paper's Fashion-MNIST T-shirt v pullover logistic regression (TFDS, needs data_dir)",
    "imagenet-lr": "the paper's ImageNet dog v fish logistic regression on Inception features (npz: data_path)",
    "imagenet-mlp": "the paper's ImageNet dog v fish 2-hidden-layer network, one λ per layer (npz: data_path)",
    "synthetic": "the paper's Fig. 1 problem: two 2-D Gaussians, one poison point",
    "mnist5k-lr-strong": "mnist5k-lr attacked by the strong attack: converged Newton-CG, Armijo steps, converged victim",
    "digits-lr": "scikit-learn's digits 0 v 8 logistic regression: small, offline, seconds",
}

PRESETS: dict[str, dict[str, Any]] = {
    "mnist-lr": dict(_MNIST_LR),
    "mnist5k-lr": dict(_MNIST_LR, source="mnist5k", n_test=317),
    "fmnist-lr": dict(source="fashion_mnist", classes=(0, 2), n_train=512, n_val=171, model="lr", inner_steps=200,
                      inner_lr=0.08, iters_fixed=100, iters_clean=50, iters_multi=100, alpha=0.90, beta=0.30,
                      x_box=(0.0, 1.0), log_lam_box=(-8.0, math.log(400.0)), log_lam_large=math.log(400.0), eval_lr=1e-2,
                      eval_epochs=200),
    "imagenet-lr": dict(source="npz", n_train=512, n_val=171, model="lr", inner_steps=200, inner_lr=0.05,
                        iters_fixed=100, iters_clean=50, iters_multi=200, alpha=0.90, beta=0.40, x_box=(-0.5, 0.5),
                        log_lam_box=(-8.0, math.log(20000.0)), log_lam_large=math.log(3000.0), eval_lr=1e-3, eval_epochs=300),
    "imagenet-mlp": dict(source="npz", n_train=512, n_val=171, model="mlp", hidden=(128, 32), inner_steps=600,
                         inner_lr=0.01, iters_fixed=100, iters_clean=75, iters_multi=150, alpha=0.99, beta=0.03,
                         x_box=(-0.5, 0.5), log_lam_box=(-8.0, math.log(60.0)), log_lam_large=math.log(40.0), eval_lr=1e-4,
                         eval_epochs=4000, checkpoint=True, settings=("small", "large", "learned")),
    "synthetic": dict(source="synthetic", n_train=32, n_val=64, model="lr", inner_steps=500, inner_lr=0.2,
                      iters_fixed=50, iters_clean=50, iters_multi=50, alpha=0.4, beta=0.4, x_box=(-9.5, 9.5),
                      log_lam_box=(-8.0, 6.0), log_lam_large=math.log(20.0), poison_batch=1, num_batches=1, eval_lr=0.2,
                      eval_epochs=100, eval_batch=32, cv_log_lam_grid=(-8.0, 6.0, 15)),
    # The strong attack on the paper's MNIST setting: a converged, warm-started inner solve with the
    # implicit hypergradient, Armijo line searches on Xp and Λ, and a victim trained to convergence.
    "mnist5k-lr-strong": dict(_MNIST_LR, source="mnist5k", n_test=317, hypergrad="implicit", solver="newton-cg",
                              solver_tol=1e-4, solver_iters=100, cg_iters=200, cg_tol=1e-5, damping=1e-4,
                              xp_step="armijo", lam_step="armijo", beta=0.5, iters_fixed=10, iters_clean=10,
                              iters_multi=10, victim="converged"),
    "digits-lr": dict(source="digits", classes=(0, 8), n_train=200, n_val=70, model="lr", inner_steps=100,
                      inner_lr=0.5, iters_fixed=20, iters_clean=20, iters_multi=20, alpha=0.99, beta=0.8,
                      x_box=(0.0, 1.0), log_lam_box=(-8.0, math.log(200.0)), poison_batch=7, num_batches=5,
                      eval_lr=0.05, eval_epochs=100),
}


def preset(name: str, **overrides) -> ExperimentConfig:
    """The config of a named preset, with fields overridden by keyword.

    Raises:
      ConfigError: unknown preset or field, or a value that is not allowed.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    _refuse_unknown_fields(overrides)
    return ExperimentConfig(**{**PRESETS[name], "name": name, **overrides})


def describe_preset(name: str) -> str:
    """Every field of preset ``name``: value and meaning, and which fields its choices do not read."""
    config = preset(name)
    unused = unused_fields(config)
    width = max(map(len, FIELDS))
    lines = [f"{name}: {PRESET_SUMMARIES[name]}", f"config hash {config.hash()}", ""]
    for field in FIELDS:
        value = getattr(config, field)
        note = "  [not read here]" if field in unused else ""
        lines.append(f"  {field:<{width}}  {value!r:<28} {FIELDS[field]}{note}")
    lines.append("")
    lines.append("Override with --set FIELD=VALUE. A field marked [not read here] must keep its value: "
                 "the source, model, hypergrad and victim of this config do not read it.")
    return "\n".join(lines)


def _refuse_unknown_fields(given) -> None:
    renamed = [f"{old!r} is now {RENAMED[old]!r}" for old in given if old in RENAMED]
    if renamed:
        raise ConfigError(f"renamed config field(s): {'; '.join(renamed)} (the field holds log λ)")
    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    unknown = sorted(set(given) - fields)
    if unknown:
        raise ConfigError(f"unknown config field(s) {', '.join(map(repr, unknown))}: "
                          f"the fields are {', '.join(sorted(fields))}")


def _parse_value(text: str):
    """A command-line value: a Python literal, ``log(x)``/``exp(x)`` arithmetic, or else a string."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        value = eval(text, {"__builtins__": {}}, {"log": math.log, "exp": math.exp})  # noqa: S307 - no builtins
    except Exception:
        return text
    if isinstance(value, list):
        value = tuple(value)
    return value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["field=value", ...]`` from ``--set`` into a dict of typed values."""
    overrides = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set takes field=value, got {item!r}")
        field, text = item.split("=", 1)
        value = _parse_value(text)
        # A one-element string override of a tuple field, e.g. settings=learned.
        if field.strip() == "settings" and isinstance(value, str):
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        overrides[field.strip()] = value
    return overrides


# -- the sweep -------------------------------------------------------------------------------


def build_model(config: ExperimentConfig, d: int) -> models.Model:
    return models.logistic_regression(d) if config.model == "lr" else models.mlp(d, hidden=config.hidden)


def load_splits(config: ExperimentConfig) -> data.Splits:
    if config.source == "npz" and config.data_path is None:
        raise ConfigError("config field 'data_path' is None, but the npz source needs a features file: "
                          "--set data_path=FILE.npz (see the README's data section for its keys)")
    kwargs = dict(classes=config.classes, n_test=config.n_test, path=config.data_path, test_path=config.test_path,
                  data_dir=config.data_dir)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    dataset = data.load_dataset(config.source, **kwargs)
    return data.sample_splits(dataset, config.seeds, config.n_train, config.n_val)


def seed_keys(config: ExperimentConfig, purpose: int, seeds=None) -> jax.Array:
    """One key per split seed, derived from the config's seed and a purpose tag."""
    base = jax.random.fold_in(jax.random.PRNGKey(config.seed), purpose)
    seeds = config.seeds if seeds is None else seeds
    return jax.vmap(lambda s: jax.random.fold_in(base, s))(jnp.asarray(seeds))


_INIT, _CV, _EVAL = 1, 2, 3


class SeedSharding:
    """Spreads the seed axis over devices: a 1-D ``Mesh`` named ``"seed"`` and ``NamedSharding``s.

    The devices are all of ``jax.devices()``: the local ones, and in a multi-host run (after
    ``jax.distributed.initialize``) those of every process. The number of seeds need not divide the
    number of devices: the seed axis is padded by repeating the last seed (its copies compute the
    same thing) and :meth:`gather` drops the padding from every result. On one device this is a
    no-op.
    """

    def __init__(self, num_seeds: int, devices=None):
        devices = list(jax.devices() if devices is None else devices)
        self.num_seeds = num_seeds
        self.num_devices = len(devices)
        self.platform = devices[0].platform
        self.padded = -(-num_seeds // self.num_devices) * self.num_devices
        mesh = jax.sharding.Mesh(np.array(devices), ("seed",))
        self.by_seed = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seed"))
        self.replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def pad_seeds(self, seeds) -> tuple[int, ...]:
        seeds = tuple(seeds)
        return seeds + (seeds[-1],) * (self.padded - len(seeds))

    @staticmethod
    def _global(value: np.ndarray, sharding) -> jax.Array:
        # Every process holds the same host value; each places the shards of its own devices.
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    def put(self, tree):
        """Pad a tree of arrays with a leading seed axis of ``num_seeds`` (or already padded) and shard it."""
        def place(a):
            a = np.asarray(jax.device_get(a))
            if a.shape[0] < self.padded:
                a = np.concatenate([a, np.repeat(a[-1:], self.padded - a.shape[0], axis=0)])
            return self._global(a, self.by_seed)
        return jax.tree_util.tree_map(place, tree)

    def put_splits(self, splits: data.Splits) -> data.Splits:
        stacked = self.put(splits._replace(x_test=None, y_test=None))
        return stacked._replace(x_test=self._global(np.asarray(splits.x_test), self.replicated),
                                y_test=self._global(np.asarray(splits.y_test), self.replicated))

    def gather(self, tree):
        """Numpy copies of a tree of seed-sharded arrays on every process, without the padding."""
        from jax.experimental import multihost_utils

        def fetch(a):
            if isinstance(a, jax.Array) and not a.is_fully_addressable:
                a = multihost_utils.process_allgather(a, tiled=True)
            return np.asarray(a)[:self.num_seeds]
        return jax.tree_util.tree_map(fetch, tree)


class Sweep:
    """Everything the cells of one config share: data, model, attack settings, compiled steps."""

    def __init__(self, config: ExperimentConfig, devices=None):
        self.config = config
        self.sharding = SeedSharding(config.num_seeds, devices)
        self.seeds = self.sharding.pad_seeds(config.seeds)
        self.splits = self.sharding.put_splits(load_splits(config))
        self.model = build_model(config, self.splits.x_train.shape[-1])
        # Converged solvers loop a data-dependent number of times: on a CPU each device loops over its
        # own seeds rather than vmapping them in lock-step (see poison_jax.seeds).
        iterative = config.hypergrad == "implicit" or config.victim == "converged"
        on_cpu = self.sharding.platform == "cpu"
        self.seed_lanes = self.sharding.num_devices if iterative and on_cpu else None
        self.settings = dataclasses.replace(config.attack_settings(self.model), seed_lanes=self.seed_lanes)
        self.victim = config.victim_model()

    def fresh_state(self, log_lam) -> attack.AttackState:
        """The initial attack state of every seed with the given log-λ (no poison active)."""
        c = self.config
        return attack.init_attack(self.settings, seed_keys(c, _INIT, self.seeds), self.splits, c.n_poison, log_lam)

    def initial_state(self, setting: str, progress: Callable[[int], None]) -> attack.AttackState:
        """The state of cell 0 (no poison) of a Λ setting: λ chosen as the setting says."""
        c = self.config
        start = {"small": c.log_lam_small, "large": c.log_lam_large, "learned": c.log_lam_init, "clean": c.log_lam_init}[setting]
        state = self.fresh_state(start)
        if setting == "clean":
            grid = jnp.linspace(c.cv_log_lam_grid[0], c.cv_log_lam_grid[1], int(c.cv_log_lam_grid[2]))
            best, _ = hyperopt.cv_log_lambda(self.model, self.splits.x_train, self.splits.y_train,
                                             seed_keys(c, _CV, self.seeds),
                                             grid, folds=c.cv_folds, method=self.settings.method,
                                             seed_lanes=self.seed_lanes)
            state = state._replace(log_lam=jnp.broadcast_to(best[:, None], state.log_lam.shape))
        elif setting == "learned":
            state = self.run_iters(attack.set_poison_count(state, 0, 0), c.iters_clean, False, True, progress)
        return state

    def run_iters(self, state, num_iters: int, update_xp: bool, update_lam: bool, progress, chunk: int = 10):
        """``num_iters`` hyperiterations in jitted chunks (at most two compiled sizes), reporting progress."""
        done = 0
        while done < num_iters:
            n = min(chunk, num_iters - done)
            state, _ = attack.run_attack(self.settings, self.splits, state, num_iters=n, update_xp=update_xp,
                                         update_lam=update_lam)
            jax.block_until_ready(state.xp)
            done += n
            progress(n)
        return state

    def attack_cell(self, setting: str, cell: int, state: attack.AttackState, progress) -> attack.AttackState:
        """Cell ``cell`` >= 1: activate batch ``cell`` and optimise it (and Λ for ``learned``)."""
        c = self.config
        state = attack.set_poison_count(state, cell * c.poison_batch, c.poison_batch)
        learned = setting == "learned"
        return self.run_iters(state, c.iters_multi if learned else c.iters_fixed, True, learned, progress)

    def cell_iters(self, setting: str, cell: int) -> int:
        c = self.config
        if cell == 0:
            return c.iters_clean if setting == "learned" else 0
        return c.iters_multi if setting == "learned" else c.iters_fixed

    def evaluate(self, setting: str, cell: int, state: attack.AttackState) -> dict:
        """Victim metrics of a cell, per seed, with failures named instead of NaN."""
        c = self.config
        x, y, weights = attack.poisoned_training_set(self.splits, state, self.settings.mode)
        keys = jax.vmap(lambda k: jax.random.fold_in(k, cell))(seed_keys(c, _EVAL, self.seeds))
        m = evaluate.evaluate_victim(self.model, x, y, state.log_lam, keys, self.splits.x_test, self.splits.y_test,
                                     victim=self.victim, weights=weights, seed_lanes=self.seed_lanes)
        objective = attack.attack_objective(self.settings, self.splits, state)
        m, objective, nonfinite, unconverged = self.sharding.gather(
            (m, objective, state.nonfinite_steps, state.unconverged_solves))
        per_seed, failures = _per_seed_metrics(c, m, objective, nonfinite)
        per_seed["unconverged_solves"] = np.asarray(unconverged).tolist()
        per_seed["victim_converged"] = np.asarray(m.converged).tolist()
        return {"per_seed": per_seed, "mean": _mean_metrics(per_seed), "failures": failures}


_METRICS = ("error", "fpr", "fnr", "log_lam", "sq_norm", "sq_norm_per_weight", "val_loss")


def _per_seed_metrics(c: ExperimentConfig, m: evaluate.VictimMetrics, objective, nonfinite):
    per_seed = {k: [] for k in _METRICS}
    failures = []
    for i, seed in enumerate(c.seeds):
        reasons = []
        advice = f"lower inner_lr={c.inner_lr} or narrow log_lam_box={c.log_lam_box}"
        if nonfinite[i] > 0:
            reasons.append(f"{int(nonfinite[i])} hyperiteration(s) had a non-finite hypergradient (inner training "
                           f"diverged: {advice})")
        elif not np.isfinite(objective[i]):
            reasons.append(f"the validation loss after inner training is not finite (inner training diverged: {advice})")
        if not m.finite[i]:
            reasons.append(f"victim training diverged (lower eval_lr={c.eval_lr})")
        values = {"error": m.error[i], "fpr": m.fpr[i], "fnr": m.fnr[i], "log_lam": m.log_lam[i],
                  "sq_norm": m.sq_norm[i], "sq_norm_per_weight": m.sq_norm_per_weight[i], "val_loss": objective[i]}
        bad = [k for k, v in values.items() if not np.all(np.isfinite(v))]
        if bad and not reasons:
            reasons.append(f"non-finite metric(s): {', '.join(bad)}")
        for k, v in values.items():
            per_seed[k].append(None if reasons else np.asarray(v, np.float64).tolist())
        if reasons:
            failures.append({"seed": seed, "reason": "; ".join(reasons)})
    return per_seed, failures


def _mean_metrics(per_seed: dict) -> dict:
    mean = {}
    for k, values in per_seed.items():
        ok = [v for v in values if v is not None]
        mean[k] = np.mean(np.asarray(ok, np.float64), axis=0).tolist() if ok else None
        if k in ("error",) and ok:
            mean["error_std"] = float(np.std(np.asarray(ok, np.float64)))
    return mean


def run_sweep(config: ExperimentConfig, out_dir, *, resume: bool = False, progress: bool = True,
              log: Callable[[str], None] = print, devices=None) -> list[dict]:
    """Run (or resume) every cell of ``config`` not yet in ``out_dir``'s results; return all records.

    Writes ``out_dir/results.jsonl`` (one JSON line per finished cell), ``out_dir/config.json`` and
    the attack state after each cell under ``out_dir/state/``. A finished sweep does nothing and says
    so; a partly finished one needs ``resume=True``. The seed axis is sharded over ``devices``
    (default: all devices of all processes); in a multi-host run ``out_dir`` must be a folder every
    process sees, and only process 0 writes to it.
    """
    from tqdm.auto import tqdm

    from poison_jax.store import ResultsStore

    # In a multi-host run every process computes; process 0 alone writes (and holds the lock).
    writer = jax.process_index() == 0
    if not writer:
        log = lambda _: None  # noqa: E731
        progress = False
    # The data load first: a run that cannot load its data leaves nothing behind in out_dir.
    sweep = Sweep(config, devices)
    store = ResultsStore(Path(out_dir), config, writer=writer, log=log)
    cells = [(s, c) for s in config.settings for c in range(config.num_batches + 1)]
    todo = [cell for cell in cells if cell not in store.finished]
    if not todo:
        log(f"all {len(cells)} cells of {store.results_path} are already finished: nothing to do")
        return store.records()
    if len(todo) < len(cells) and not resume:
        store.release()
        raise FileExistsError(f"{store.results_path} already holds {len(cells) - len(todo)} of {len(cells)} finished "
                              f"cells of this config: pass --resume (resume=True) to continue, or choose another --out")
    if len(todo) < len(cells):
        log(f"resuming: {len(cells) - len(todo)} of {len(cells)} cells already finished, {len(todo)} to run")

    log(_device_line(config, sweep.sharding.num_devices, sweep.sharding.platform))
    total = sum(sweep.cell_iters(s, c) for s, c in todo)
    bar = tqdm(total=total, unit="hyperit", disable=not progress, dynamic_ncols=True)
    template = sweep.fresh_state(config.log_lam_init)
    try:
        for setting in config.settings:
            pending = [c for s, c in todo if s == setting]
            if not pending:
                continue
            state, start = store.latest_state(setting, before=pending[0], template=template)
            if state is not None:
                state = sweep.sharding.put(state)
            for cell in range(start, config.num_batches + 1):
                bar.set_description(f"{setting_label(config, setting)}, {cell * config.poison_batch} poison pts")
                t0 = time.perf_counter()
                advance = bar.update
                twin = _twin(store, setting) if cell > 0 and writer and jax.process_count() == 1 else None
                if twin is not None and (twin, cell) in store.finished and (setting, cell) not in store.finished:
                    # Same log λ for every seed as a finished fixed setting: the same computation.
                    store.copy_cell(twin, setting, cell, label=setting_label(config, setting))
                    bar.update(sweep.cell_iters(setting, cell))
                    state = None  # loaded from the copied state if a later cell must be computed
                    continue
                if cell == 0:
                    state = sweep.initial_state(setting, advance)
                else:
                    if state is None:
                        state = sweep.sharding.put(store.load_state(setting, cell - 1, template))
                    state = sweep.attack_cell(setting, cell, state, advance)
                if (setting, cell) in store.finished:  # recomputed only to rebuild a missing state
                    continue
                metrics = sweep.evaluate(setting, cell, state)
                record = _record(config, setting, cell, metrics, time.perf_counter() - t0)
                saved = sweep.sharding.gather(state)  # a collective: every process takes part
                if writer:
                    store.save_state(setting, cell, saved)
                    store.append(record)
                else:
                    store.finished[(setting, cell)] = record
                if metrics["failures"]:
                    bar.write(f"cell {setting}/{cell}: {len(metrics['failures'])} seed(s) failed: "
                              f"{metrics['failures'][0]['reason']}")
    finally:
        bar.close()
        store.release()
    return store.records()


_FIXED = ("small", "large", "clean")


def _twin(store, setting: str) -> str | None:
    """A fixed-λ setting whose finished cell 0 has, for every seed, the log λ of ``setting``'s cell 0:
    its attack cells compute exactly what ``setting``'s would (same seeds, keys and λ)."""
    mine = store.finished.get((setting, 0))
    if setting not in _FIXED or mine is None:
        return None
    for other in _FIXED:
        theirs = store.finished.get((other, 0))
        if other != setting and theirs is not None and theirs["per_seed"]["log_lam"] == mine["per_seed"]["log_lam"]:
            return other
    return None


def _device_line(config: ExperimentConfig, num_devices: int, platform: str) -> str:
    """Where the seeds run, what padding costs, and how to use every core (shown when a sweep starts)."""
    from poison_jax.devices import cpu_core_count

    n, d = config.num_seeds, num_devices
    padded = -(-n // d) * d
    line = f"{config.name}: {n} seed(s) on {d} {platform.upper()} device(s)"
    if padded > n:
        fits = sorted({k for k in ((n // d) * d, padded) if k > 0})
        line += (f", padded to {padded} (copies of the last seed fill the devices and are dropped); "
                 f"num_seeds={' or '.join(map(str, fits))} would use every device without waste")
    cores = cpu_core_count()
    if platform == "cpu" and d < cores and jax.process_count() == 1:
        line += (f". This host has {cores} usable cores but {d} CPU device(s): call poison_jax.use_cpu_cores() "
                 f"before any JAX work (the poison-jax command does) to run seeds in parallel")
    return line


def _record(config: ExperimentConfig, setting: str, cell: int, metrics: dict, seconds: float) -> dict:
    n_poison = cell * config.poison_batch
    return {
        "config_hash": config.hash(),
        "preset": config.name,
        "setting": setting,
        "label": setting_label(config, setting),
        "cell": cell,
        "n_poison": n_poison,
        "fraction": n_poison / config.n_train,
        "num_seeds": config.num_seeds,
        "seeds": list(config.seeds),
        "model": config.model,
        "hypergrad": config.hypergrad,
        "xp_step": config.xp_step,
        "lam_step": config.lam_step,
        "poison_mode": config.poison_mode,
        "victim": config.victim,
        "per_seed": metrics["per_seed"],
        "mean": metrics["mean"],
        "failures": metrics["failures"],
        "reused_from": None,
        "wall_time_s": round(seconds, 3),
    }


# -- the synthetic example (Fig. 1) ----------------------------------------------------------


def synthetic_maps(grid_size: int = 60, seed: int = 0, lam_grid_size: int = 15) -> dict:
    """The maps of the paper's Fig. 1 on two 2-D Gaussians (the ``synthetic`` preset).

    One poison point is cloned from a validation point of class 0 ("blue") with its label flipped
    and replaces one of the 32 training points. For every position of the poison point on a
    ``grid_size`` x ``grid_size`` grid over Φ(Dp) = [-9.5, 9.5]², logistic regression is trained
    (T = 500, η = 0.2) and its validation error measured, with log λ = -8 and λ = 20; the third
    map is the log λ in [-8, 6] with the lowest validation loss at each position. The attack's path
    (α = 0.4, T_Dp = 50 hyperiterations) is traced for both λ.

    Returns:
      A dict of lists (JSON-ready): ``grid_x``, ``grid_y``, ``val_error_noreg``, ``val_error_reg``,
      ``best_log_lam`` (grid_size x grid_size, indexed [x][y]), ``path_noreg``, ``path_reg``
      (T_Dp + 1 positions), ``x_val``, ``y_val``, ``log_lam_noreg``, ``log_lam_reg``.
    """
    if not _is_int(grid_size) or grid_size < 2:
        raise ConfigError(f"grid_size must be an integer >= 2, got {grid_size!r}")
    config = preset("synthetic", seed=seed, num_seeds=1)
    sweep = Sweep(config, devices=jax.devices()[:1])
    settings, splits = sweep.settings, sweep.splits
    keys = seed_keys(config, _INIT)
    state = attack.init_attack(settings, keys, splits, 1, config.log_lam_small)
    # Clone from class 0 of the validation set: flipped, the poison point is labelled 1.
    y_val = np.asarray(splits.y_val[0])
    blue = int(np.flatnonzero(y_val == 0)[0])
    state = attack.set_poison_count(state._replace(xp=splits.x_val[:, blue:blue + 1], yp=jnp.ones((1, 1))), 1, 1)

    lo, hi = config.x_box
    axis = jnp.linspace(lo, hi, grid_size)
    positions = jnp.stack(jnp.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    lam_grid = jnp.linspace(config.log_lam_box[0], config.log_lam_box[1], lam_grid_size)
    one = jax.tree_util.tree_map(lambda a: a[0], state)
    x_tr, y_tr, x_v, y_v = (a[0] for a in (splits.x_train, splits.y_train, splits.x_val, splits.y_val))

    @jax.jit
    def losses_at(position, log_lam):
        s = one._replace(xp=position[None, :])
        inner, outer = attack.make_losses(sweep.model, x_tr, y_tr, x_v, y_v, s)
        theta = {"xp": s.xp, "log_lam": jnp.full((1,), log_lam)}
        w = bilevel.unroll(inner, sweep.model.init(one.key), theta, steps=config.inner_steps, lr=config.inner_lr)
        error, _, _ = evaluate.classification_metrics(sweep.model.apply(w, x_v), y_v)
        return error, outer(w, theta)

    per_position = jax.jit(jax.vmap(losses_at, in_axes=(0, None)))
    err_noreg, _ = per_position(positions, config.log_lam_small)
    err_reg, _ = per_position(positions, config.log_lam_large)
    _, loss_grid = jax.jit(jax.vmap(per_position, in_axes=(None, 0)))(positions, lam_grid)
    best = lam_grid[jnp.argmin(loss_grid, axis=0)]

    def path(log_lam):
        s = state._replace(log_lam=jnp.full_like(state.log_lam, log_lam))
        points = [np.asarray(s.xp[0, 0])]
        for _ in range(config.iters_fixed):
            s, _ = attack.poison_step(settings, splits, s, update_xp=True, update_lam=False)
            points.append(np.asarray(s.xp[0, 0]))
        return np.stack(points)

    grid = lambda a: np.asarray(a).reshape(grid_size, grid_size).tolist()
    return {
        "grid_x": np.asarray(axis).tolist(), "grid_y": np.asarray(axis).tolist(),
        "val_error_noreg": grid(err_noreg), "val_error_reg": grid(err_reg), "best_log_lam": grid(best),
        "path_noreg": path(config.log_lam_small).tolist(), "path_reg": path(config.log_lam_large).tolist(),
        "x_val": np.asarray(x_v).tolist(), "y_val": y_val.tolist(),
        "log_lam_noreg": config.log_lam_small, "log_lam_reg": config.log_lam_large,
    }
