"""Experiment configs and the paper's presets (floor 2): one frozen, validated dataclass.

:class:`ExperimentConfig` holds every setting of one experiment (the paper's Tables 1–3),
validated at construction with errors that name the field, its value and what is allowed;
:data:`FIELDS` says what each field means and :func:`parse_overrides` reads ``--set FIELD=VALUE``;
the presets are in :mod:`poison_jax.experiments.presets`.

Example::

    >>> from poison_jax.experiments import config, presets
    >>> c = presets.preset("digits-lr", num_seeds=2, num_batches=1)
    >>> c.fractions
    (0.0, 0.035)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from poison_jax import engine
from poison_jax.engine import IFT, RMD, Implicit
from poison_jax.poisoning import attack, data, losses, models, outer, penalties, victims

__all__ = [
    "FIELDS",
    "HYPERGRADS",
    "RENAMED",
    "SETTINGS",
    "ConfigError",
    "DATA_FIELDS",
    "ExperimentConfig",
    "parse_overrides",
    "setting_label",
    "unused_fields",
    "with_data",
]

SETTINGS = ("small", "large", "clean", "learned")


FIELDS: dict[str, str] = {
    "name": "the preset the config came from (labels only; not part of the config hash)",
    "source": "data source: " + ", ".join(data.SOURCES) + " (a file of your own: npz), or arrays (Python only: "
    "run_sweep(config, dataset=...))",
    "classes": "the classes, each labelled by its position: a pair (first -> label 0, second -> label 1) is "
    "binary, more are multiclass (softmax; e.g. (0,1,2,3,4,5,6,7,8,9)); None: the source's default pair",
    "data_path": "npz source: the features file",
    "test_path": "npz source: a separate test file",
    "data_dir": "TFDS sources (mnist, fashion_mnist): folder of the prepared data",
    "scale": "npz and arrays sources: None (features as given), standardise (by the pool's mean and std, the paper's "
    "ImageNet features) or minmax (the pool's range of each feature to [0, 1])",
    "n_train": "training points per split",
    "n_val": "validation points per split (the attacker's and Λ's objective)",
    "n_test": "test points (the victim's error); None: the source's default",
    "num_seeds": "random train/validation splits, one per seed, run together",
    "seed": "the first split seed (seeds seed .. seed + num_seeds - 1)",
    "model": "learner: lr (logistic regression) or mlp",
    "hidden": "mlp: hidden layer sizes",
    "penalty": "regularisation: l2 (the paper), l1 (smoothed) or elastic-net (smoothed l1 + l2, two log λ per "
    "layer), one log λ per layer each",
    "l1_smoothing": "l1/elastic-net: ε of the smoothed |w| = sqrt(w² + ε²) − ε (> 0)",
    "loss": "per-example loss: logistic (the paper: logistic regression / cross-entropy), smoothed-hinge "
    "(a linear SVM for model lr) or squared (a regression: ridge for model lr; judged by test MSE)",
    "hinge_smoothing": "smoothed-hinge: width h of the quadratic band below margin 1 (> 0)",
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
    "xp_min_scale": "armijo xp_step: floor of each line search's first trial length, as a multiple of "
    "alpha, in [0, 1] (1: every search starts at alpha or longer)",
    "lam_step": "rule moving log λ (descent): " + ", ".join(outer.OUTER_STEPS) + " (the paper: sgd)",
    "poison_mode": "replace (the paper: poison points take training rows' places) or add (secml: appended)",
    "victim": "victim judged on the poisoned set: sgd (the paper: eval_lr, eval_epochs, eval_batch) or "
    "converged (the inner solver to convergence)",
    "alpha": "α, step size of the Xp rule",
    "beta": "β, step size of the log λ rule",
    "iters_fixed": "T_Dp, hyperiterations per batch with Λ fixed (small, large, clean)",
    "iters_clean": "T_λ, hyperiterations learning log λ on clean data (learned, fraction 0)",
    "iters_multi": "T_mul, hyperiterations per batch of the multiobjective attack (learned)",
    "x_box": "Φ(Dp), the (low, high) box of the poison features; None: the data's range (min and max over the pool)",
    "outside_box": "data lying outside x_box: refuse (naming the features) or clip (the paper's ImageNet setting; "
    "poison points start at their clones clipped into the box)",
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


def setting_label(config: ExperimentConfig, setting: str) -> str:
    """The label of a Λ setting in tables and figures (``"log λ = -8"``, ``"large λ"``, ...)."""
    return {
        "small": f"log λ = {config.log_lam_small:g}",
        "large": "large λ",
        "clean": "λ_CLEAN",
        "learned": "λ learned",
    }[setting]


MODELS = ("lr", "mlp")
HYPERGRADS = ("rmd", "ift", "implicit")
SOURCES = (*data.SOURCES, "arrays")
OUTSIDE_BOX = ("refuse", "clip")
SOLVERS = {"newton-cg": engine.NewtonCG, "lbfgs": engine.LBFGS}
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
    classes: tuple[int, ...] | None = None
    data_path: str | None = None
    test_path: str | None = None
    data_dir: str | None = None
    scale: str | None = None
    n_train: int = 200
    n_val: int = 70
    n_test: int | None = None
    num_seeds: int = 10
    seed: int = 0
    model: str = "lr"
    hidden: tuple[int, ...] = (128, 32)
    penalty: str = "l2"
    l1_smoothing: float = 1e-3
    loss: str = "logistic"
    hinge_smoothing: float = 0.5
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
    xp_min_scale: float = 1.0
    lam_step: str = "sgd"
    poison_mode: str = "replace"
    victim: str = "sgd"
    alpha: float = 0.99
    beta: float = 0.8
    iters_fixed: int = 100
    iters_clean: int = 50
    iters_multi: int = 100
    x_box: tuple[float, float] | None = None
    outside_box: str = "refuse"
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
    def run_name(self) -> str:
        """What a run of this config is called (its default output folder): the name of a user's
        data file (``npz``: the file's stem), else the preset's name."""
        if self.source == "npz" and self.data_path is not None:
            return Path(self.data_path).stem
        return self.name

    @property
    def fractions(self) -> tuple[float, ...]:
        """Poisoning fraction of each cell: ``b * poison_batch / n_train`` for b = 0..num_batches."""
        return tuple(b * self.poison_batch / self.n_train for b in range(self.num_batches + 1))

    @property
    def num_classes(self) -> int:
        """``K``: the number of classes (2 for the source's default pair and for a regression)."""
        return len(self.classes) if self.classes is not None else 2

    @property
    def n_poison(self) -> int:
        return self.poison_batch * self.num_batches

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.seed, self.seed + self.num_seeds))

    def penalty_value(self) -> penalties.Penalty:
        """The penalty the config names (``penalty``, ``l1_smoothing``)."""
        if self.penalty == "l2":
            return penalties.L2()
        return penalties.PENALTIES[self.penalty](smoothing=float(self.l1_smoothing))  # type: ignore[call-arg]

    def loss_value(self) -> losses.Loss:
        """The per-example loss the config names (``loss``, ``hinge_smoothing``)."""
        if self.loss == "smoothed-hinge":
            return losses.SmoothedHinge(smoothing=float(self.hinge_smoothing))
        return losses.LOSSES[self.loss]()

    def inner_solver(self) -> engine.NewtonCG | engine.LBFGS:
        """The converged inner solver the config names (``solver``, ``solver_tol``, ``solver_iters``)."""
        return SOLVERS[self.solver](tol=self.solver_tol, maxiter=self.solver_iters)

    def method(self) -> engine.Method:
        """The hypergradient strategy the config names."""
        builders: dict[str, Callable[[], engine.Method]] = {
            "rmd": lambda: RMD(steps=self.inner_steps, lr=self.inner_lr, checkpoint=True if self.checkpoint else None),
            "ift": lambda: IFT(
                steps=self.inner_steps,
                lr=self.inner_lr,
                cg_iters=self.cg_iters,
                cg_tol=self.cg_tol,
                damping=self.damping,
            ),
            "implicit": lambda: Implicit(
                solver=self.inner_solver(), cg_iters=self.cg_iters, cg_tol=self.cg_tol, damping=self.damping
            ),
        }
        return builders[self.hypergrad]()

    def attack_settings(self, model: models.Model, x_box: tuple[float, float] | None = None) -> attack.AttackSettings:
        """The :class:`~poison_jax.poisoning.attack.AttackSettings` of this config for ``model``; ``x_box``: the
        poison box when the config's is None (the data's range, which the config cannot know)."""
        box = self.x_box if self.x_box is not None else x_box
        if box is None:
            raise ConfigError("config field 'x_box' is None (the data's range): pass the data's range as x_box")
        mode: attack.Replace | attack.Add = attack.MODES[self.poison_mode]()
        return attack.AttackSettings(
            model,
            self.method(),
            alpha=self.alpha,
            beta=self.beta,
            x_box=(float(box[0]), float(box[1])),
            lam_box=(float(self.log_lam_box[0]), float(self.log_lam_box[1])),
            xp_step=outer.Armijo(min_scale=float(self.xp_min_scale))
            if self.xp_step == "armijo"
            else outer.OUTER_STEPS[self.xp_step](),
            lam_step=outer.OUTER_STEPS[self.lam_step](),
            mode=mode,
        )

    def victim_model(self) -> victims.SGDVictim | victims.ConvergedVictim:
        """The victim the attack is judged on."""
        if self.victim == "converged":
            return victims.ConvergedVictim(self.inner_solver())
        return victims.SGDVictim(
            lr=float(self.eval_lr), epochs=self.eval_epochs, batch_size=min(self.eval_batch, self.n_train)
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def hash(self) -> str:
        """Hash of every field that changes results (``name`` and ``settings`` excluded).

        Fields added after the first release count only when they differ from their default, so a
        results folder written before they existed still resumes under the same hash.
        """
        defaults = {f.name: _jsonable(f.default) for f in dataclasses.fields(self)}
        legacy = {new: old for old, new in RENAMED.items()}  # renamed fields hash under their first names
        fields = {
            legacy.get(k, k): v
            for k, v in self.to_dict().items()
            if k not in ("name", "settings") and not (k in _LATER_FIELDS and v == defaults[k])
        }
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}
#: The fields that describe the data: they go back to their defaults when the source changes.
DATA_FIELDS = ("classes", "n_test", "data_path", "test_path", "data_dir", "scale", "x_box", "outside_box")

# Fields that hold log λ say so in their names; the first names are refused with the new one.
RENAMED = {
    "lam_small": "log_lam_small",
    "lam_large": "log_lam_large",
    "lam_box": "log_lam_box",
    "lam_init": "log_lam_init",
    "cv_grid": "cv_log_lam_grid",
}

_dataclass_init = ExperimentConfig.__init__


@functools.wraps(_dataclass_init)
def _init_refusing_renamed(self, *args, **kwargs):
    _refuse_unknown_fields(kwargs)
    _dataclass_init(self, *args, **kwargs)


ExperimentConfig.__init__ = _init_refusing_renamed  # type: ignore[method-assign]

_LATER_FIELDS = (
    "scale",
    "outside_box",
    "penalty",
    "l1_smoothing",
    "loss",
    "hinge_smoothing",
    "damping",
    "solver",
    "solver_tol",
    "solver_iters",
    "xp_step",
    "xp_min_scale",
    "lam_step",
    "poison_mode",
    "victim",
)


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


# -- validation ------------------------------------------------------------------------------


def _fail(field: str, value, allowed: str):
    raise ConfigError(f"config field {field!r} = {value!r} is not allowed: {allowed}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _validate(c: ExperimentConfig) -> None:
    choices = {
        "source": SOURCES,
        "outside_box": OUTSIDE_BOX,
        "model": MODELS,
        "penalty": tuple(penalties.PENALTIES),
        "loss": tuple(losses.LOSSES),
        "hypergrad": HYPERGRADS,
        "solver": tuple(SOLVERS),
        "xp_step": tuple(outer.OUTER_STEPS),
        "lam_step": tuple(outer.OUTER_STEPS),
        "poison_mode": tuple(attack.MODES),
        "victim": VICTIMS,
    }
    for field, allowed in choices.items():
        if getattr(c, field) not in allowed:
            _fail(field, getattr(c, field), f"one of {', '.join(allowed)}")
    positive_ints = (
        "n_train",
        "n_val",
        "num_seeds",
        "inner_steps",
        "cg_iters",
        "iters_fixed",
        "iters_clean",
        "iters_multi",
        "poison_batch",
        "eval_epochs",
        "eval_batch",
        "solver_iters",
    )
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
    if not _is_real(c.l1_smoothing) or c.l1_smoothing <= 0:
        _fail("l1_smoothing", c.l1_smoothing, "a finite number > 0 (ε of the smoothed |w|)")
    if not _is_real(c.hinge_smoothing) or c.hinge_smoothing <= 0:
        _fail("hinge_smoothing", c.hinge_smoothing, "a finite number > 0 (the width of the smoothed band)")
    if not _is_real(c.xp_min_scale) or not 0 <= c.xp_min_scale <= 1:
        _fail("xp_min_scale", c.xp_min_scale, "a number in [0, 1] (a multiple of alpha)")
    if not _is_real(c.solver_tol) or c.solver_tol <= 0:
        _fail("solver_tol", c.solver_tol, "a finite number > 0 (a tolerance on the inner gradient norm)")
    for field in ("log_lam_init", "log_lam_small", "log_lam_large"):
        if not _is_real(getattr(c, field)):
            _fail(field, getattr(c, field), "a finite number (log-λ)")
    for field in ("x_box", "log_lam_box"):
        box = getattr(c, field)
        if field == "x_box" and box is None:
            continue
        if not (isinstance(box, tuple) and len(box) == 2 and all(_is_real(b) for b in box)):
            _fail(
                field,
                box,
                "a pair (low, high) of finite numbers" + (", or None (the data's range)" if field == "x_box" else ""),
            )
        if box[0] >= box[1]:
            _fail(field, box, "low < high (the bounds are inverted or equal)")
    if not (
        isinstance(c.cv_log_lam_grid, tuple)
        and len(c.cv_log_lam_grid) == 3
        and _is_real(c.cv_log_lam_grid[0])
        and _is_real(c.cv_log_lam_grid[1])
        and c.cv_log_lam_grid[0] < c.cv_log_lam_grid[1]
        and _is_int(c.cv_log_lam_grid[2])
        and c.cv_log_lam_grid[2] >= 2
    ):
        _fail("cv_log_lam_grid", c.cv_log_lam_grid, "(low, high, count) with low < high and an integer count >= 2")
    if not (isinstance(c.hidden, tuple) and c.hidden and all(_is_int(h) and h > 0 for h in c.hidden)):
        _fail("hidden", c.hidden, "a non-empty tuple of positive integers")
    if not (
        isinstance(c.settings, tuple)
        and c.settings
        and set(c.settings) <= set(SETTINGS)
        and len(set(c.settings)) == len(c.settings)
    ):
        _fail("settings", c.settings, f"a non-empty tuple of distinct names from {', '.join(SETTINGS)}")
    if c.classes is not None:
        if not (isinstance(c.classes, tuple) and len(c.classes) >= 2 and all(_is_int(k) for k in c.classes)):
            _fail(
                "classes", c.classes, "a tuple of two or more class labels (integers), or None for the source's default"
            )
        repeated = sorted({k for k in c.classes if c.classes.count(k) > 1})
        if repeated:
            _fail(
                "classes", c.classes, f"distinct classes, but {', '.join(map(str, repeated))} appear(s) more than once"
            )
        if len(c.classes) > 2 and c.loss != "logistic":
            _fail(
                "loss",
                c.loss,
                f"logistic (the softmax cross-entropy) with {len(c.classes)} classes: {c.loss} is binary-only here",
            )
    if c.scale is not None and c.scale not in data.SCALES:
        _fail("scale", c.scale, f"None (features as given) or one of {', '.join(data.SCALES)}")
    if c.checkpoint not in (True, False):
        _fail("checkpoint", c.checkpoint, "true or false")
    if c.n_poison > min(c.n_train, c.n_val):
        _fail(
            "num_batches",
            c.num_batches,
            f"poison_batch * num_batches = {c.n_poison} must not exceed n_train ({c.n_train}) nor n_val ({c.n_val})",
        )
    if c.n_poison > c.n_train:  # pragma: no cover - implied above, kept for the fraction <= 1 guarantee
        _fail("num_batches", c.num_batches, "a poisoning fraction <= 1")
    _refuse_ignored(c)
    _refuse_unstable_smoothing(c)


def _refuse_unstable_smoothing(c: ExperimentConfig) -> None:
    """A smoothed L1 has curvature up to exp(λ)/ε per weight (over n): gradient steps of size η
    diverge once η·exp(λ)/(ε·n) >= 2, at the top of the λ box (learned λ climbs there)."""
    if c.penalty == "l2":
        return
    steps = {}
    if c.hypergrad in ("rmd", "ift"):
        steps["inner_lr"] = c.inner_lr
    if c.victim == "sgd":
        steps["eval_lr"] = c.eval_lr
    if not steps:
        return
    field = max(steps, key=lambda f: steps[f])
    need = steps[field] * math.exp(c.log_lam_box[1]) / (2 * c.n_train)
    if c.l1_smoothing <= need:
        _fail(
            "l1_smoothing",
            c.l1_smoothing,
            f"> {field} * exp(log_lam_box[1]) / (2 * n_train) = {need:.3g}, or the gradient steps diverge at the "
            f"top of the λ box (the smoothed |w| has curvature up to 1/l1_smoothing); lower {field} or "
            "log_lam_box, or use hypergrad=implicit with victim=converged",
        )


# -- no silently ignored settings -------------------------------------------------------------
# Seven choices decide which other fields are read: the data source, the model, the penalty, the
# loss, the hypergradient method, the Xp step rule and the victim. One rule: a field that none of the choices
# in force reads, set away from its default (the preset's value for a preset, else the dataclass
# default), is refused.

_SOURCE_OPTIONS = {
    "classes": "classes",
    "n_test": "n_test",
    "data_path": "path",
    "test_path": "test_path",
    "data_dir": "data_dir",
    "scale": "scale",
}  # config field -> option of data.load_dataset


def _fields_used_by() -> dict[str, dict[str, tuple[str, ...]]]:
    """``{choice field: {choice: the fields it reads}}`` for the fields only some choices read."""
    return {
        "source": {
            **{
                source: tuple(f for f, option in _SOURCE_OPTIONS.items() if option in data.source_options(source))
                for source in data.SOURCES
            },
            "arrays": ("scale",),
        },
        "model": {"lr": (), "mlp": ("hidden",)},
        "penalty": {"l2": (), "l1": ("l1_smoothing",), "elastic-net": ("l1_smoothing",)},
        "loss": {"logistic": (), "smoothed-hinge": ("hinge_smoothing",), "squared": ()},
        "hypergrad": {
            "rmd": ("inner_steps", "inner_lr", "checkpoint"),
            "ift": ("inner_steps", "inner_lr", "cg_iters", "cg_tol", "damping"),
            "implicit": ("solver", "solver_tol", "solver_iters", "cg_iters", "cg_tol", "damping"),
        },
        "xp_step": {rule: ("xp_min_scale",) if rule == "armijo" else () for rule in outer.OUTER_STEPS},
        "victim": {
            "sgd": ("eval_lr", "eval_epochs", "eval_batch"),
            "converged": ("solver", "solver_tol", "solver_iters"),
        },
    }


def unused_fields(c: ExperimentConfig) -> dict[str, str]:
    """``{field: why}`` for every field that the config's source, model, penalty, loss, method, Xp
    rule and victim do not read."""
    groups = _fields_used_by()
    unused = {}
    for field in {f for used in groups.values() for fields in used.values() for f in fields}:
        owners = [g for g, used in groups.items() if any(field in fields for fields in used.values())]
        if not any(field in groups[g][getattr(c, g)] for g in owners):
            unused[field] = " and ".join(
                f"{g} {getattr(c, g)!r} (which reads {', '.join(groups[g][getattr(c, g)]) or 'none of them'})"
                for g in owners
            )
    return unused


def _refuse_ignored(c: ExperimentConfig) -> None:
    baseline = {f.name: f.default for f in dataclasses.fields(c)}
    from poison_jax.experiments.presets import PRESETS  # presets are built from configs

    baseline.update(PRESETS.get(c.name, {}))
    if c.source != baseline["source"]:  # on other data the preset's data settings do not apply
        baseline.update({field: _DEFAULTS[field] for field in DATA_FIELDS})
    for field, why in sorted(unused_fields(c).items()):
        value = getattr(c, field)
        if _jsonable(value) != _jsonable(baseline[field]):
            hint = " (your own data file: --data FILE.npz, or --set source=npz)" if field == "data_path" else ""
            raise ConfigError(
                f"config field {field!r} = {value!r} would be ignored: it is not read by {why}; "
                f"leave it at {baseline[field]!r} or change that choice{hint}"
            )


def with_data(config: ExperimentConfig, source: str, **fields) -> ExperimentConfig:
    """``config`` on another data source: the data fields (:data:`DATA_FIELDS`: ``classes``,
    ``n_test``, ``data_path``, ``test_path``, ``data_dir``, ``scale``, ``x_box``, ``outside_box``) go
    back to their defaults -- ``x_box`` to None, the new data's range -- then take ``fields``.

    Example::

        >>> from poison_jax.experiments import config, presets
        >>> c = config.with_data(presets.preset("digits-lr"), "npz", data_path="my.npz")
        >>> c.classes, c.x_box, c.data_path, c.n_train, c.run_name
        (None, None, 'my.npz', 200, 'my')
    """
    _refuse_unknown_fields(fields)
    unknown = sorted(set(fields) - set(DATA_FIELDS))
    if unknown:
        raise ConfigError(
            f"with_data sets the data fields ({', '.join(DATA_FIELDS)}), not {', '.join(unknown)}: use "
            "dataclasses.replace or preset(...) for the others"
        )
    reset = {field: _DEFAULTS[field] for field in DATA_FIELDS}
    return dataclasses.replace(config, **{**reset, "x_box": None, "source": source, **fields})


def _refuse_unknown_fields(given) -> None:
    renamed = [f"{old!r} is now {RENAMED[old]!r}" for old in given if old in RENAMED]
    if renamed:
        raise ConfigError(f"renamed config field(s): {'; '.join(renamed)} (the field holds log λ)")
    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    unknown = sorted(set(given) - fields)
    if unknown:
        raise ConfigError(
            f"unknown config field(s) {', '.join(map(repr, unknown))}: the fields are {', '.join(sorted(fields))}"
        )


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
