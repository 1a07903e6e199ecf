"""Presets: the paper's settings (Tables 1–3) and the project's own, as data.

Each :class:`Preset` is a name, a one-line summary and its settings: dotted config paths over
the default :class:`~poison_jax.experiments.config.ExperimentConfig` (see
:func:`~poison_jax.experiments.config.override`), composed from the shared pieces below.
:func:`preset` builds a preset's config, with more paths overridden.

Example::

    >>> from poison_jax.experiments import presets
    >>> presets.preset("digits-lr", {"sweep.num_seeds": 2}).sweep.num_seeds
    2
    >>> presets.PRESETS["digits-lr"].summary
    "scikit-learn's digits 0 v 8 logistic regression: small, offline, seconds"
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from poison_jax.experiments.checked import ConfigError
from poison_jax.experiments.config import ExperimentConfig, describe, override

__all__ = ["PRESETS", "STRONG_ATTACK", "Preset", "describe_config", "describe_preset", "preset"]


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named config: its one-line summary and its settings (dotted path -> value)."""

    name: str
    summary: str
    settings: Mapping[str, Any]


# -- shared pieces ---------------------------------------------------------------------------------

# The paper's split sizes (Table 1): 512 training, 171 validation points, batches of 17 poison points.
_PAPER_SPLITS = {
    "sweep.n_train": 512,
    "sweep.n_val": 171,
    "attack.poison_batch": 17,
    "attack.iters_fixed": 100,
    "attack.iters_clean": 50,
}
_UNIT_BOX = {"data.x_box": (0.0, 1.0), "attack.log_lam_box": (-8.0, math.log(200.0))}
_MNIST = {**_PAPER_SPLITS, **_UNIT_BOX, "data": "mnist", "data.classes": (0, 8)}
_MNIST5K = {**_MNIST, "data": "mnist5k", "data.n_test": 317}
# The paper's MNIST attack (Table 1): RMD through 150 steps, the paper's steps and victim.
_PAPER_MNIST = {
    "method.steps": 150,
    "method.lr": 0.1,
    "attack.iters_multi": 100,
    "attack.alpha": 0.99,
    "attack.beta": 0.8,
    "sweep.log_lam_large": math.log(200.0),
    "victim.lr": 1e-2,
    "victim.epochs": 200,
}
#: The strong attack's settings, for any preset: a converged, warm-started inner solve with the
#: implicit hypergradient, Armijo line searches on Xp and Λ, and a victim trained to convergence.
STRONG_ATTACK = {
    "method": "implicit",
    "method.solver.tol": 1e-4,
    "method.cg_iters": 200,
    "method.cg_tol": 1e-5,
    "method.damping": 1e-4,
    "attack.xp_step": "armijo",
    "attack.xp_step.min_scale": 0.25,
    "attack.lam_step": "armijo",
    "attack.alpha": 0.99,
    "attack.beta": 0.5,
    "victim": "converged",
    "victim.solver.tol": 1e-4,
}
# ... with the iterations and the large λ of the mnist5k presets.
_STRONG = {
    **STRONG_ATTACK,
    "attack.iters_fixed": 6,
    "attack.iters_clean": 10,
    "attack.iters_multi": 10,
    "sweep.log_lam_large": math.log(200.0),
}
_IMAGENET = {
    **_PAPER_SPLITS,
    "data": "npz",
    "data.scale": "standardise",
    "data.outside_box": "clip",
    "data.x_box": (-0.5, 0.5),
}
# Small offline sets: seconds a sweep.
_SMALL = {
    **_UNIT_BOX,
    "method.lr": 0.5,
    "attack.iters_fixed": 20,
    "attack.iters_clean": 20,
    "attack.iters_multi": 20,
    "attack.poison_batch": 7,
}
_DIGITS = {**_SMALL, "data.classes": (0, 8), "method.steps": 100, "victim.lr": 0.05, "victim.epochs": 100}
_STRONG_MNIST5K = {**_MNIST5K, **_STRONG}

_ALL = (
    Preset(
        "mnist-lr",
        "the paper's MNIST 0 v 8 logistic regression (TFDS MNIST, needs prepared data: data.data_dir)",
        {**_MNIST, **_PAPER_MNIST},
    ),
    Preset(
        "mnist5k-lr",
        "the paper's MNIST 0 v 8 logistic regression on the offline 5,000-image sample (the demo's)",
        {**_MNIST5K, **_PAPER_MNIST},
    ),
    Preset(
        "fmnist-lr",
        "the paper's Fashion-MNIST T-shirt v pullover logistic regression (TFDS, needs data.data_dir)",
        {
            **_PAPER_SPLITS,
            "data": "fashion_mnist",
            "data.classes": (0, 2),
            "data.x_box": (0.0, 1.0),
            "method.steps": 200,
            "method.lr": 0.08,
            "attack.alpha": 0.90,
            "attack.beta": 0.30,
            "attack.log_lam_box": (-8.0, math.log(400.0)),
            "sweep.log_lam_large": math.log(400.0),
        },
    ),
    Preset(
        "imagenet-lr",
        "the paper's ImageNet dog v fish logistic regression on Inception features (npz: data.path)",
        {
            **_IMAGENET,
            "method.steps": 200,
            "method.lr": 0.05,
            "attack.iters_multi": 200,
            "attack.alpha": 0.90,
            "attack.beta": 0.40,
            "attack.log_lam_box": (-8.0, math.log(20000.0)),
            "sweep.log_lam_large": math.log(3000.0),
            "victim.lr": 1e-3,
            "victim.epochs": 300,
        },
    ),
    Preset(
        "imagenet-mlp",
        "the paper's ImageNet dog v fish 2-hidden-layer network, one λ per layer (npz: data.path)",
        {
            **_IMAGENET,
            "model": "mlp",
            "method.steps": 600,
            "method.lr": 0.01,
            "method.checkpoint": True,
            "attack.iters_clean": 75,
            "attack.iters_multi": 150,
            "attack.beta": 0.03,
            "attack.log_lam_box": (-8.0, math.log(60.0)),
            "sweep.log_lam_large": math.log(40.0),
            "sweep.settings": ("small", "large", "learned"),
            "victim.lr": 1e-4,
            "victim.epochs": 4000,
        },
    ),
    # The paper's DNN experiment (imagenet-mlp) on the offline MNIST 0 v 8 sample: the same network
    # shape on 784 pixels, one λ per layer, no CV setting. Adapted to 2 CPU cores: 100 inner steps
    # of η = 0.1 instead of 600 of 0.01 (the pixels are in [0, 1], not standardised features),
    # 10-15 hyperiterations a batch instead of 100-150 with an Armijo line search on log λ (steps
    # of up to β = 0.5) instead of SGD with β = 0.03 (which leaves λ where it starts in so few
    # steps), and a victim trained by 100 epochs of SGD at 0.05 instead of 4,000 at 1e-4.
    Preset(
        "mnist5k-mlp",
        "the paper's 2-hidden-layer network (784x128x32x1, one λ per layer) on the offline MNIST 0 v 8 sample, "
        "settings adapted to a CPU",
        {
            **_MNIST5K,
            **_PAPER_MNIST,
            "model": "mlp",
            "method.steps": 100,
            "attack.iters_fixed": 10,
            "attack.iters_clean": 10,
            "attack.iters_multi": 15,
            "attack.lam_step": "armijo",
            "attack.beta": 0.5,
            "attack.log_lam_box": (-8.0, math.log(60.0)),
            "sweep.log_lam_large": math.log(40.0),
            "sweep.num_seeds": 6,
            "sweep.settings": ("small", "large", "learned"),
            "victim.lr": 0.05,
            "victim.epochs": 100,
        },
    ),
    Preset(
        "synthetic",
        "the paper's Fig. 1 problem: two 2-D Gaussians, one poison point",
        {
            "data": "synthetic",
            "data.x_box": (-9.5, 9.5),
            "sweep.n_train": 32,
            "sweep.n_val": 64,
            "sweep.log_lam_large": math.log(20.0),
            "sweep.cv_log_lam_grid": (-8.0, 6.0, 15),
            "method.steps": 500,
            "method.lr": 0.2,
            "attack.iters_fixed": 50,
            "attack.iters_clean": 50,
            "attack.iters_multi": 50,
            "attack.alpha": 0.4,
            "attack.beta": 0.4,
            "attack.log_lam_box": (-8.0, 6.0),
            "attack.poison_batch": 1,
            "attack.num_batches": 1,
            "victim.lr": 0.2,
            "victim.epochs": 100,
            "victim.batch": 32,
        },
    ),
    Preset(
        "mnist5k-lr-strong",
        "mnist5k-lr under the strong attack: converged Newton-CG, Armijo steps, converged victim",
        _STRONG_MNIST5K,
    ),
    # The defences' data set (Koh, Steinhardt & Liang's MNIST-1-7) under the strong attack: add a
    # sanitiser with --set defence=..., an adaptive attacker with attack.adaptive or attack.concentrate.
    Preset(
        "mnist5k17-lr-strong",
        "the strong attack on MNIST 1 v 7 of the offline sample, the defences' data set (docs: Defences)",
        {**_STRONG_MNIST5K, "data.classes": (1, 7)},
    ),
    Preset("digits-lr", "scikit-learn's digits 0 v 8 logistic regression: small, offline, seconds", _DIGITS),
    # Multiclass: softmax logistic regression on all ten classes; each poison point takes a wrong
    # class drawn uniformly (attack.wrong_labels); judged by test error, per class and as a confusion matrix.
    Preset(
        "digits10-lr",
        "multiclass: softmax logistic regression on all ten digits (offline, about a minute)",
        {
            **_DIGITS,
            "data.classes": tuple(range(10)),
            "data.n_test": 397,
            "sweep.n_train": 400,
            "sweep.n_val": 200,
            "sweep.log_lam_large": math.log(20.0),
            "attack.poison_batch": 14,
        },
    ),
    # All ten classes of the offline MNIST sample under the strong attack (mnist5k-lr-strong's
    # settings): unrolled RMD through 150 steps of a 7,850-weight softmax model is ten times the
    # binary cost, so a converged Newton-CG solve with the implicit hypergradient does the work.
    Preset(
        "mnist5k10-lr",
        "multiclass: softmax logistic regression on all ten classes of the offline MNIST sample, under the "
        "strong attack",
        {
            **_STRONG_MNIST5K,
            "data.classes": tuple(range(10)),
            "data.n_test": 1000,
            "sweep.log_lam_large": math.log(20.0),
        },
    ),
    # Regression poisoning: ridge regression (the linear model with the squared loss and the L2
    # penalty) on the 442 diabetes patients; poison targets flipped as 1 - y; judged by test MSE.
    Preset(
        "diabetes-ridge",
        "ridge regression on scikit-learn's diabetes (regression poisoning, test MSE): offline, seconds",
        {
            **_SMALL,
            "data": "diabetes",
            "loss": "squared",
            "sweep.n_val": 100,
            "sweep.log_lam_large": math.log(50.0),
            "method.steps": 200,
            "attack.alpha": 0.5,
            "attack.beta": 0.5,
            "victim.lr": 0.1,
            "victim.epochs": 200,
            "victim.batch": 32,
        },
    ),
)

#: The presets by name.
PRESETS: dict[str, Preset] = {p.name: p for p in _ALL}


def preset(name: str, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """The config of preset ``name``, with the dotted paths of ``overrides`` set
    (:func:`~poison_jax.experiments.config.override`, e.g. ``{"sweep.num_seeds": 2}``).

    Raises:
      ConfigError: an unknown preset or path, or a value that is not allowed.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    config = override(ExperimentConfig(name=name), PRESETS[name].settings)
    return override(config, overrides) if overrides else config


def describe_preset(name: str) -> str:
    """Every field of preset ``name``: its path, value and meaning."""
    return describe_config(preset(name), f"{name}: {PRESETS[name].summary}")


def describe_config(config: ExperimentConfig, heading: str) -> str:
    """Every field of ``config`` under ``heading``: its path, value and meaning, one line each.

    >>> text = describe_config(preset("digits-lr", {"sweep.num_seeds": 3}), "mine")
    >>> text.splitlines()[0], any(line.split()[:2] == ["sweep.num_seeds", "3"] for line in text.splitlines())
    ('mine', True)
    """
    rows = describe(config)
    width = max(len(path) for path, _, _ in rows)
    lines = [heading, f"config hash {config.hash()}", ""]
    lines += [f"  {path:<{width}}  {value!r:<28} {meaning}" for path, value, meaning in rows]
    lines.append("")
    lines.append(
        "Override with --set PATH=VALUE (e.g. --set sweep.num_seeds=3); switch a choice with its kind "
        "(--set method=implicit), then set its fields (--set method.cg_iters=50)."
    )
    return "\n".join(lines)
