"""The tiny digits sweep the tests share: seconds a sweep, and the same compiled shapes across test
files (the session's compilation cache in conftest.py keeps them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from poison_jax.experiments import presets
from poison_jax.experiments.config import ExperimentConfig

#: Two seeds, two batches, two hyperiterations a cell, 20 inner steps, a 3-point CV grid.
TINY: dict[str, Any] = {
    "sweep.num_seeds": 2,
    "attack.iters_fixed": 2,
    "attack.iters_clean": 2,
    "attack.iters_multi": 2,
    "attack.num_batches": 2,
    "victim.epochs": 3,
    "method.steps": 20,
    "sweep.cv_log_lam_grid": (-8.0, 1.0, 3),
    "sweep.cv_folds": 2,
}


def tiny(overrides: Mapping[str, Any] | None = None, name: str = "digits-lr") -> ExperimentConfig:
    """Preset ``name`` (digits-lr) at the tiny settings, with ``overrides`` (dotted paths)."""
    return presets.preset(name, {**TINY, **(overrides or {})})


def tiny_sets(overrides: Mapping[str, Any] | None = None) -> list[str]:
    """The tiny settings (and ``overrides``) as ``--set PATH=VALUE`` arguments."""
    return [arg for k, v in {**TINY, **(overrides or {})}.items() for arg in ("--set", f"{k}={v!r}".replace(" ", ""))]
