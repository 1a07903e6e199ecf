"""0.1.0's flat view of a config (floor 2): the hash results are filed under, and old ``config.json`` files.

0.1.0 held a config in 45 flat fields (:data:`FLAT` maps each to its path in the nested config)
and hashed all of them but ``name`` and ``settings``, under their first names (``lam_box``, not
``log_lam_box``), the fields added after the first release only when away from their default.
A field that no choice in force read kept its preset's value (else its default): so does the
flat view here, which is why ``--set method=implicit`` on ``digits-lr`` hashes as 0.1.0's
``--set hypergrad=implicit`` did. A field that 0.1.0 did not have counts when away from its
default, under its path. Results folders written by 0.1.0 therefore resume.

Example::

    >>> from poison_jax.experiments import legacy, presets
    >>> legacy.flat_view(presets.preset("digits-lr"))["inner_steps"]
    100
    >>> legacy.flatten({"hypergrad": "ift", "cg_tol": 1e-6, "name": "x"})
    {'method': 'ift', 'method.cg_tol': 1e-06, 'name': 'x'}
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from poison_jax.experiments.checked import Section
from poison_jax.experiments.config import ExperimentConfig
from poison_jax.experiments.sections import Converged, Implicit

__all__ = ["DEFAULTS", "FLAT", "config_hash", "flat_view", "flatten"]

#: 0.1.0's fields and the path each has now (a choice's kind at its section's path); the solver's
#: fields are the method's when it is implicit, else the victim's.
FLAT: dict[str, str] = {
    **{f: f"data.{f}" for f in ("classes", "test_path", "data_dir", "scale", "n_test", "x_box", "outside_box")},
    "source": "data",
    "data_path": "data.path",
    **{f: f"sweep.{f}" for f in ("n_train", "n_val", "num_seeds", "seed", "settings", "cv_folds")},
    **{f: f"sweep.{f}" for f in ("log_lam_small", "log_lam_large", "cv_log_lam_grid")},
    "model": "model",
    "hidden": "model.hidden",
    "penalty": "penalty",
    "l1_smoothing": "penalty.smoothing",
    "loss": "loss",
    "hinge_smoothing": "loss.smoothing",
    "hypergrad": "method",
    "inner_steps": "method.steps",
    "inner_lr": "method.lr",
    **{f: f"method.{f}" for f in ("cg_iters", "cg_tol", "damping", "checkpoint")},
    "solver": "method.solver",
    "solver_tol": "method.solver.tol",
    "solver_iters": "method.solver.iters",
    "xp_step": "attack.xp_step",
    "xp_min_scale": "attack.xp_step.min_scale",
    **{f: f"attack.{f}" for f in ("lam_step", "poison_mode", "alpha", "beta", "poison_batch", "num_batches")},
    **{f: f"attack.{f}" for f in ("iters_fixed", "iters_clean", "iters_multi", "log_lam_box", "log_lam_init")},
    "victim": "victim",
    "eval_lr": "victim.lr",
    "eval_epochs": "victim.epochs",
    "eval_batch": "victim.batch",
}
_SOLVER = ("solver", "solver_tol", "solver_iters")
_DATA = ("classes", "n_test", "data_path", "test_path", "data_dir", "scale", "x_box", "outside_box")
_FIRST_NAMES = {
    "log_lam_small": "lam_small",
    "log_lam_large": "lam_large",
    "log_lam_box": "lam_box",
    "log_lam_init": "lam_init",
    "cv_log_lam_grid": "cv_grid",
}
_LATER: tuple[str, ...] = (
    "scale",
    "outside_box",
    "penalty",
    "l1_smoothing",
    "loss",
    "hinge_smoothing",
    "damping",
    *_SOLVER,
)
_LATER += ("xp_step", "xp_min_scale", "lam_step", "poison_mode", "victim")

#: 0.1.0's defaults of its flat fields (JSON values).
DEFAULTS: dict[str, Any] = {
    **dict(source="digits", classes=None, data_path=None, test_path=None, data_dir=None, scale=None),
    **dict(n_train=200, n_val=70, n_test=None, num_seeds=10, seed=0, model="lr", hidden=[128, 32]),
    **dict(penalty="l2", l1_smoothing=1e-3, loss="logistic", hinge_smoothing=0.5, inner_steps=150, inner_lr=0.1),
    **dict(hypergrad="rmd", cg_iters=100, cg_tol=1e-6, damping=0.0, solver="newton-cg", solver_tol=1e-5),
    **dict(solver_iters=100, checkpoint=False, xp_step="normalised", xp_min_scale=1.0, lam_step="sgd"),
    **dict(poison_mode="replace", victim="sgd", alpha=0.99, beta=0.8, iters_fixed=100, iters_clean=50),
    **dict(iters_multi=100, x_box=None, outside_box="refuse", log_lam_box=[-8.0, math.log(200.0)]),
    **dict(poison_batch=17, num_batches=5, log_lam_init=math.log(5.0), log_lam_small=-8.0),
    **dict(log_lam_large=math.log(200.0), cv_log_lam_grid=[-8.0, 1.0, 19], cv_folds=5),
    **dict(settings=["small", "large", "clean", "learned"], eval_lr=1e-2, eval_epochs=200, eval_batch=64),
}


def flatten(tree: Mapping[str, Any], at: str = "") -> dict[str, Any]:
    """A ``config.json`` config (nested, or 0.1.0's flat fields) as ``{dotted path: value}``, a
    choice as its kind at its section's path (``{"method": "rmd", "method.steps": 100, ...}``)."""
    if not at and "hypergrad" in tree:  # written by 0.1.0
        solver_of = "method" if tree.get("hypergrad") == "implicit" else "victim"
        paths = {**FLAT, **{f: FLAT[f].replace("method", solver_of, 1) for f in _SOLVER}, "name": "name"}
        return {paths[k]: v for k, v in tree.items() if k in paths}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{at}.{key}" if at else key
        if key == "kind":
            flat[at] = value
        elif isinstance(value, Mapping):
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat


def _get(config: Any, path: str) -> Any:
    """The value at ``path`` (a section as its kind), or KeyError when the choices in force hold none."""
    value: Any = config
    for part in path.split("."):
        if not hasattr(value, part):
            raise KeyError(path)
        value = getattr(value, part)
    if isinstance(value, Section):
        return value.kind
    return list(value) if isinstance(value, tuple) else value


def _solver_at(config: ExperimentConfig) -> str | None:
    if isinstance(config.method, Implicit):
        return "method"
    return "victim" if isinstance(config.victim, Converged) else None


def _flat(config: ExperimentConfig, baseline: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """0.1.0's fields of ``config`` (``baseline``'s value where no choice in force holds one) and
    the paths they read."""
    solver_at = _solver_at(config)
    flat, read = {}, set()
    for field, path in FLAT.items():
        if field in _SOLVER and solver_at is not None:
            path = path.replace("method", solver_at, 1)
        try:
            flat[field] = _get(config, path)
            read.add(path)
        except KeyError:
            flat[field] = baseline[field]
    return flat, read


@functools.cache
def _preset_view(name: str) -> dict[str, Any]:
    from poison_jax.experiments import presets

    return _flat(presets.preset(name), DEFAULTS)[0]


def _baseline(config: ExperimentConfig) -> dict[str, Any]:
    from poison_jax.experiments import presets

    baseline = dict(_preset_view(config.name)) if config.name in presets.PRESETS else dict(DEFAULTS)
    if config.data.kind != baseline["source"]:  # on other data the preset's data settings do not apply
        baseline.update({field: DEFAULTS[field] for field in _DATA})
    return baseline


def flat_view(config: ExperimentConfig) -> dict[str, Any]:
    """0.1.0's 45 fields of ``config``, as JSON values; a field no choice in force holds has its
    preset's value (else 0.1.0's default), as 0.1.0 required."""
    return _flat(config, _baseline(config))[0]


def _new_fields(config: ExperimentConfig, read: set[str]) -> dict[str, Any]:
    """The fields 0.1.0 did not have, away from their defaults, by path."""
    paths = flatten(config.to_dict())
    new = {}
    if isinstance(config.victim, Converged) and isinstance(config.method, Implicit):
        if config.victim.solver != config.method.solver:  # 0.1.0 had one solver for both
            new["victim.solver"] = config.victim.solver.to_dict()
        read = read | {p for p in paths if p.startswith("victim.solver")}
    for path, value in paths.items():
        if path in read or path in ("name", "sweep.settings"):
            continue
        parent, _, field = path.rpartition(".")
        default = _get(type(_section(config, parent))(), field)
        if value != default:
            new[path] = value
    return new


def _section(config: ExperimentConfig, path: str) -> Section:
    section: Any = config
    for part in path.split(".") if path else ():
        section = getattr(section, part)
    return section


def config_hash(config: ExperimentConfig) -> str:
    """The hash of every field that changes results: 0.1.0's (``name`` and ``settings`` excluded,
    later fields only away from their defaults, first names), then the new fields away from theirs."""
    flat, read = _flat(config, _baseline(config))
    fields = {
        _FIRST_NAMES.get(k, k): v for k, v in flat.items() if k != "settings" and not (k in _LATER and v == DEFAULTS[k])
    }
    fields.update(_new_fields(config, read))
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
