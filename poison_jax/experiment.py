"""Experiments (floor 2): configs and the paper's presets, and the sweep runner.

A sweep crosses Λ settings × poisoning fractions, with all seeds of a cell in one vmapped call:

* ``small``   λ = -8 (about no regularisation), fixed;
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

__all__ = ["SETTINGS", "PRESETS", "ExperimentConfig", "parse_overrides", "preset", "run_sweep"]

SETTINGS = ("small", "large", "clean", "learned")
SETTING_LABELS = {"small": "λ = -8", "large": "large λ", "clean": "λ_CLEAN", "learned": "λ learned"}
MODELS = ("lr", "mlp")
HYPERGRADS = ("rmd", "ift", "implicit")
SOLVERS = {"newton-cg": solvers.NewtonCG, "lbfgs": solvers.LBFGS}
VICTIMS = ("sgd", "converged")


class ConfigError(ValueError):
    """A config field has a value that is not allowed; the message names both."""


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Every setting of one experiment (the paper's Tables 1–3). Validated at construction.

    Data: ``source`` (one of :data:`poison_jax.data.SOURCES`), ``classes``, ``data_path`` /
    ``test_path`` (npz), ``data_dir`` (TFDS), ``n_train``, ``n_val``, ``n_test`` (None: the source's
    default), ``num_seeds`` random splits starting at split seed ``seed``.
    Model: ``model`` ("lr" or "mlp"), ``hidden`` sizes of the MLP.
    Inner problem: ``inner_steps`` T and ``inner_lr`` η of full-batch gradient descent;
    ``hypergrad`` "rmd" (the paper), "ift" (with ``cg_iters``, ``cg_tol``, ``damping``) or
    "implicit" (a converged ``solver``, "newton-cg" or "lbfgs", to ``solver_tol`` on the inner
    gradient norm in at most ``solver_iters`` iterations, warm-started across hyperiterations, then
    IFT with a warm-started CG); ``checkpoint`` (RMD only): remat the inner loop in segments.
    Attack: ``alpha`` / ``beta`` step sizes on Xp / Λ of the rules ``xp_step`` (default
    "normalised", the paper) and ``lam_step`` (default "sgd", the paper), each one of
    :data:`poison_jax.outer.OUTER_STEPS` ("normalised", "sgd", "adam", "optimistic", "armijo");
    ``poison_mode`` "replace" (the paper) or "add" (secml); ``iters_fixed`` T_Dp, ``iters_clean``
    T_λ, ``iters_multi`` T_mul hyperiterations per batch, boxes ``x_box`` Φ(Dp) and ``lam_box``
    Φ(Λ), ``poison_batch`` points per batch, ``num_batches`` batches, ``lam_init`` the warm start of
    λ. Baselines: ``lam_small``, ``lam_large``, the CV grid ``cv_grid`` (low, high, count) and
    ``cv_folds``; ``settings``, the Λ settings to run.
    Evaluation: ``victim`` "sgd" (the paper: ``eval_lr`` η_tr, ``eval_epochs``, ``eval_batch``) or
    "converged" (the inner ``solver`` run to convergence on the poisoned set).
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
    lam_box: tuple[float, float] = (-8.0, math.log(200.0))
    poison_batch: int = 17
    num_batches: int = 5
    lam_init: float = math.log(5.0)
    lam_small: float = -8.0
    lam_large: float = math.log(200.0)
    cv_grid: tuple[float, float, int] = (-8.0, 1.0, 19)
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
                                     x_box=tuple(map(float, self.x_box)), lam_box=tuple(map(float, self.lam_box)),
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
        fields = {k: v for k, v in self.to_dict().items() if k not in ("name", "settings")
                  and not (k in _LATER_FIELDS and v == defaults[k])}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


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
    for field in ("lam_init", "lam_small", "lam_large"):
        if not _is_real(getattr(c, field)):
            _fail(field, getattr(c, field), "a finite number (log-λ)")
    for field in ("x_box", "lam_box"):
        box = getattr(c, field)
        if not (isinstance(box, tuple) and len(box) == 2 and all(_is_real(b) for b in box)):
            _fail(field, box, "a pair (low, high) of finite numbers")
        if box[0] >= box[1]:
            _fail(field, box, "low < high (the bounds are inverted or equal)")
    if not (isinstance(c.cv_grid, tuple) and len(c.cv_grid) == 3 and _is_real(c.cv_grid[0])
            and _is_real(c.cv_grid[1]) and c.cv_grid[0] < c.cv_grid[1] and _is_int(c.cv_grid[2]) and c.cv_grid[2] >= 2):
        _fail("cv_grid", c.cv_grid, "(low, high, count) with low < high and an integer count >= 2")
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


# -- presets (PAPER.md, Tables 1–3) ----------------------------------------------------------

_MNIST_LR = dict(source="mnist", classes=(0, 8), n_train=512, n_val=171, model="lr", inner_steps=150,
                 inner_lr=0.1, iters_fixed=100, iters_clean=50, iters_multi=100, alpha=0.99, beta=0.8,
                 x_box=(0.0, 1.0), lam_box=(-8.0, math.log(200.0)), lam_large=math.log(200.0), eval_lr=1e-2,
                 eval_epochs=200)

PRESETS: dict[str, dict[str, Any]] = {
    "mnist-lr": dict(_MNIST_LR),
    "mnist5k-lr": dict(_MNIST_LR, source="mnist5k", n_test=317),
    "fmnist-lr": dict(source="fashion_mnist", classes=(0, 2), n_train=512, n_val=171, model="lr", inner_steps=200,
                      inner_lr=0.08, iters_fixed=100, iters_clean=50, iters_multi=100, alpha=0.90, beta=0.30,
                      x_box=(0.0, 1.0), lam_box=(-8.0, math.log(400.0)), lam_large=math.log(400.0), eval_lr=1e-2,
                      eval_epochs=200),
    "imagenet-lr": dict(source="npz", n_train=512, n_val=171, model="lr", inner_steps=200, inner_lr=0.05,
                        iters_fixed=100, iters_clean=50, iters_multi=200, alpha=0.90, beta=0.40, x_box=(-0.5, 0.5),
                        lam_box=(-8.0, math.log(20000.0)), lam_large=math.log(3000.0), eval_lr=1e-3, eval_epochs=300),
    "imagenet-mlp": dict(source="npz", n_train=512, n_val=171, model="mlp", hidden=(128, 32), inner_steps=600,
                         inner_lr=0.01, iters_fixed=100, iters_clean=75, iters_multi=150, alpha=0.99, beta=0.03,
                         x_box=(-0.5, 0.5), lam_box=(-8.0, math.log(60.0)), lam_large=math.log(40.0), eval_lr=1e-4,
                         eval_epochs=4000, checkpoint=True, settings=("small", "large", "learned")),
    "synthetic": dict(source="synthetic", n_train=32, n_val=64, model="lr", inner_steps=500, inner_lr=0.2,
                      iters_fixed=50, iters_clean=50, iters_multi=50, alpha=0.4, beta=0.4, x_box=(-9.5, 9.5),
                      lam_box=(-8.0, 6.0), lam_large=math.log(20.0), poison_batch=1, num_batches=1, eval_lr=0.2,
                      eval_epochs=100, eval_batch=32, cv_grid=(-8.0, 6.0, 15)),
    # The strong attack on the paper's MNIST setting: a converged, warm-started inner solve with the
    # implicit hypergradient, Armijo line searches on Xp and Λ, and a victim trained to convergence.
    "mnist5k-lr-strong": dict(_MNIST_LR, source="mnist5k", n_test=317, hypergrad="implicit", solver="newton-cg",
                              solver_tol=1e-4, solver_iters=100, cg_iters=200, cg_tol=1e-5, damping=1e-4,
                              xp_step="armijo", lam_step="armijo", beta=0.5, iters_fixed=10, iters_clean=10,
                              iters_multi=10, victim="converged"),
    "digits-lr": dict(source="digits", classes=(0, 8), n_train=200, n_val=70, model="lr", inner_steps=100,
                      inner_lr=0.5, iters_fixed=20, iters_clean=20, iters_multi=20, alpha=0.99, beta=0.8,
                      x_box=(0.0, 1.0), lam_box=(-8.0, math.log(200.0)), poison_batch=7, num_batches=5,
                      eval_lr=0.05, eval_epochs=100),
}


def preset(name: str, **overrides) -> ExperimentConfig:
    """The config of a named preset, with fields overridden by keyword.

    Raises:
      ConfigError: unknown preset or field, or a value that is not allowed.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown config field(s) {', '.join(map(repr, unknown))}: "
                          f"the fields are {', '.join(sorted(fields))}")
    return ExperimentConfig(**{**PRESETS[name], "name": name, **overrides})


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
        start = {"small": c.lam_small, "large": c.lam_large, "learned": c.lam_init, "clean": c.lam_init}[setting]
        state = self.fresh_state(start)
        if setting == "clean":
            grid = jnp.linspace(c.cv_grid[0], c.cv_grid[1], int(c.cv_grid[2]))
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
        advice = f"lower inner_lr={c.inner_lr} or narrow lam_box={c.lam_box}"
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
    store = ResultsStore(Path(out_dir), config, writer=writer)
    if not writer:
        log = lambda _: None  # noqa: E731
        progress = False
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

    sweep = Sweep(config, devices)
    total = sum(sweep.cell_iters(s, c) for s, c in todo)
    bar = tqdm(total=total, unit="hyperit", disable=not progress, dynamic_ncols=True)
    try:
        for setting in config.settings:
            pending = [c for s, c in todo if s == setting]
            if not pending:
                continue
            state, start = store.latest_state(setting, before=pending[0], template=sweep.fresh_state(config.lam_init))
            if state is not None:
                state = sweep.sharding.put(state)
            for cell in range(start, config.num_batches + 1):
                bar.set_description(f"{SETTING_LABELS[setting]}, {cell * config.poison_batch} poison pts")
                t0 = time.perf_counter()
                advance = bar.update
                if cell == 0:
                    state = sweep.initial_state(setting, advance)
                else:
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


def _record(config: ExperimentConfig, setting: str, cell: int, metrics: dict, seconds: float) -> dict:
    n_poison = cell * config.poison_batch
    return {
        "config_hash": config.hash(),
        "preset": config.name,
        "setting": setting,
        "label": SETTING_LABELS[setting],
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
        "wall_time_s": round(seconds, 3),
    }


# -- the synthetic example (Fig. 1) ----------------------------------------------------------


def synthetic_maps(grid_size: int = 60, seed: int = 0, lam_grid_size: int = 15) -> dict:
    """The maps of the paper's Fig. 1 on two 2-D Gaussians (the ``synthetic`` preset).

    One poison point is cloned from a validation point of class 0 ("blue") with its label flipped
    and replaces one of the 32 training points. For every position of the poison point on a
    ``grid_size`` x ``grid_size`` grid over Φ(Dp) = [-9.5, 9.5]², logistic regression is trained
    (T = 500, η = 0.2) and its validation error measured, with λ = -8 and λ = log 20; the third
    map is the λ in [-8, 6] with the lowest validation loss at each position. The attack's path
    (α = 0.4, T_Dp = 50 hyperiterations) is traced for both λ.

    Returns:
      A dict of lists (JSON-ready): ``grid_x``, ``grid_y``, ``val_error_noreg``, ``val_error_reg``,
      ``best_log_lam`` (grid_size x grid_size, indexed [x][y]), ``path_noreg``, ``path_reg``
      (T_Dp + 1 positions), ``x_val``, ``y_val``, ``lam_noreg``, ``lam_reg``.
    """
    if not _is_int(grid_size) or grid_size < 2:
        raise ConfigError(f"grid_size must be an integer >= 2, got {grid_size!r}")
    config = preset("synthetic", seed=seed, num_seeds=1)
    sweep = Sweep(config, devices=jax.devices()[:1])
    settings, splits = sweep.settings, sweep.splits
    keys = seed_keys(config, _INIT)
    state = attack.init_attack(settings, keys, splits, 1, config.lam_small)
    # Clone from class 0 of the validation set: flipped, the poison point is labelled 1.
    y_val = np.asarray(splits.y_val[0])
    blue = int(np.flatnonzero(y_val == 0)[0])
    state = attack.set_poison_count(state._replace(xp=splits.x_val[:, blue:blue + 1], yp=jnp.ones((1, 1))), 1, 1)

    lo, hi = config.x_box
    axis = jnp.linspace(lo, hi, grid_size)
    positions = jnp.stack(jnp.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    lam_grid = jnp.linspace(config.lam_box[0], config.lam_box[1], lam_grid_size)
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
    err_noreg, _ = per_position(positions, config.lam_small)
    err_reg, _ = per_position(positions, config.lam_large)
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
        "path_noreg": path(config.lam_small).tolist(), "path_reg": path(config.lam_large).tolist(),
        "x_val": np.asarray(x_v).tolist(), "y_val": y_val.tolist(),
        "lam_noreg": config.lam_small, "lam_reg": config.lam_large,
    }
