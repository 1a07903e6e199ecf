"""Presets: the paper's settings (Tables 1–3) and the project's own, as data.

Each preset is a name, a one-line summary (:data:`PRESET_SUMMARIES`) and its settings
(:data:`PRESETS`); :func:`preset` builds the :class:`~poison_jax.experiments.config.ExperimentConfig`.

Example::

    >>> from poison_jax.experiments import presets
    >>> presets.preset("digits-lr", num_seeds=2).num_seeds
    2
"""

from __future__ import annotations

import math
from typing import Any

from poison_jax.experiments.config import (
    _DEFAULTS,
    DATA_FIELDS,
    FIELDS,
    ConfigError,
    ExperimentConfig,
    _refuse_unknown_fields,
    unused_fields,
)

__all__ = ["PRESETS", "PRESET_SUMMARIES", "describe_preset", "preset"]


# -- presets (the paper's Tables 1–3) ----------------------------------------------------

_MNIST_LR = dict(
    source="mnist",
    classes=(0, 8),
    n_train=512,
    n_val=171,
    model="lr",
    inner_steps=150,
    inner_lr=0.1,
    iters_fixed=100,
    iters_clean=50,
    iters_multi=100,
    alpha=0.99,
    beta=0.8,
    x_box=(0.0, 1.0),
    log_lam_box=(-8.0, math.log(200.0)),
    log_lam_large=math.log(200.0),
    eval_lr=1e-2,
    eval_epochs=200,
)

# The strong attack on the paper's MNIST setting: a converged, warm-started inner solve with the
# implicit hypergradient, Armijo line searches on Xp and Λ, and a victim trained to convergence.
_STRONG = dict(
    _MNIST_LR,
    source="mnist5k",
    n_test=317,
    hypergrad="implicit",
    solver="newton-cg",
    solver_tol=1e-4,
    solver_iters=100,
    cg_iters=200,
    cg_tol=1e-5,
    damping=1e-4,
    xp_step="armijo",
    xp_min_scale=0.25,
    lam_step="armijo",
    beta=0.5,
    iters_fixed=6,
    iters_clean=10,
    iters_multi=10,
    victim="converged",
)

_DIGITS_LR = dict(
    source="digits",
    classes=(0, 8),
    n_train=200,
    n_val=70,
    model="lr",
    inner_steps=100,
    inner_lr=0.5,
    iters_fixed=20,
    iters_clean=20,
    iters_multi=20,
    alpha=0.99,
    beta=0.8,
    x_box=(0.0, 1.0),
    log_lam_box=(-8.0, math.log(200.0)),
    poison_batch=7,
    num_batches=5,
    eval_lr=0.05,
    eval_epochs=100,
)

PRESET_SUMMARIES = {
    "mnist-lr": "the paper's MNIST 0 v 8 logistic regression (TFDS MNIST, needs prepared data: data_dir)",
    "mnist5k-lr": "the paper's MNIST 0 v 8 logistic regression on the offline 5,000-image sample (the demo's)",
    "fmnist-lr": "the paper's Fashion-MNIST T-shirt v pullover logistic regression (TFDS, needs data_dir)",
    "imagenet-lr": "the paper's ImageNet dog v fish logistic regression on Inception features (npz: data_path)",
    "imagenet-mlp": "the paper's ImageNet dog v fish 2-hidden-layer network, one λ per layer (npz: data_path)",
    "mnist5k-mlp": "the paper's 2-hidden-layer network (784x128x32x1, one λ per layer) on the offline MNIST 0 v 8 "
    "sample, settings adapted to a CPU",
    "synthetic": "the paper's Fig. 1 problem: two 2-D Gaussians, one poison point",
    "mnist5k-lr-strong": "mnist5k-lr under the strong attack: converged Newton-CG, Armijo steps, converged victim",
    "digits-lr": "scikit-learn's digits 0 v 8 logistic regression: small, offline, seconds",
    "digits10-lr": "multiclass: softmax logistic regression on all ten digits (offline, about a minute)",
    "mnist5k10-lr": "multiclass: softmax logistic regression on all ten classes of the offline MNIST sample, "
    "under the strong attack",
    "diabetes-ridge": "ridge regression on scikit-learn's diabetes (regression poisoning, test MSE): offline, seconds",
}

PRESETS: dict[str, dict[str, Any]] = {
    "mnist-lr": dict(_MNIST_LR),
    "mnist5k-lr": dict(_MNIST_LR, source="mnist5k", n_test=317),
    "fmnist-lr": dict(
        source="fashion_mnist",
        classes=(0, 2),
        n_train=512,
        n_val=171,
        model="lr",
        inner_steps=200,
        inner_lr=0.08,
        iters_fixed=100,
        iters_clean=50,
        iters_multi=100,
        alpha=0.90,
        beta=0.30,
        x_box=(0.0, 1.0),
        log_lam_box=(-8.0, math.log(400.0)),
        log_lam_large=math.log(400.0),
        eval_lr=1e-2,
        eval_epochs=200,
    ),
    "imagenet-lr": dict(
        source="npz",
        scale="standardise",
        outside_box="clip",
        n_train=512,
        n_val=171,
        model="lr",
        inner_steps=200,
        inner_lr=0.05,
        iters_fixed=100,
        iters_clean=50,
        iters_multi=200,
        alpha=0.90,
        beta=0.40,
        x_box=(-0.5, 0.5),
        log_lam_box=(-8.0, math.log(20000.0)),
        log_lam_large=math.log(3000.0),
        eval_lr=1e-3,
        eval_epochs=300,
    ),
    "imagenet-mlp": dict(
        source="npz",
        scale="standardise",
        outside_box="clip",
        n_train=512,
        n_val=171,
        model="mlp",
        hidden=(128, 32),
        inner_steps=600,
        inner_lr=0.01,
        iters_fixed=100,
        iters_clean=75,
        iters_multi=150,
        alpha=0.99,
        beta=0.03,
        x_box=(-0.5, 0.5),
        log_lam_box=(-8.0, math.log(60.0)),
        log_lam_large=math.log(40.0),
        eval_lr=1e-4,
        eval_epochs=4000,
        checkpoint=True,
        settings=("small", "large", "learned"),
    ),
    # The paper's DNN experiment (imagenet-mlp) on the offline MNIST 0 v 8 sample: the same network
    # shape on 784 pixels, one λ per layer, no CV setting. Adapted to 2 CPU cores: 100 inner steps
    # of η = 0.1 instead of 600 of 0.01 (the pixels are in [0, 1], not standardised features),
    # 10-15 hyperiterations a batch instead of 100-150 with an Armijo line search on log λ (steps
    # of up to β = 0.5) instead of SGD with β = 0.03 (which leaves λ where it starts in so few
    # steps), and a victim trained by 100 epochs of SGD at 0.05 instead of 4,000 at 1e-4.
    "mnist5k-mlp": dict(
        _MNIST_LR,
        source="mnist5k",
        n_test=317,
        model="mlp",
        hidden=(128, 32),
        inner_steps=100,
        inner_lr=0.1,
        iters_fixed=10,
        iters_clean=10,
        iters_multi=15,
        alpha=0.99,
        lam_step="armijo",
        beta=0.5,
        x_box=(0.0, 1.0),
        log_lam_box=(-8.0, math.log(60.0)),
        log_lam_large=math.log(40.0),
        num_seeds=6,
        eval_lr=0.05,
        eval_epochs=100,
        settings=("small", "large", "learned"),
    ),
    "synthetic": dict(
        source="synthetic",
        n_train=32,
        n_val=64,
        model="lr",
        inner_steps=500,
        inner_lr=0.2,
        iters_fixed=50,
        iters_clean=50,
        iters_multi=50,
        alpha=0.4,
        beta=0.4,
        x_box=(-9.5, 9.5),
        log_lam_box=(-8.0, 6.0),
        log_lam_large=math.log(20.0),
        poison_batch=1,
        num_batches=1,
        eval_lr=0.2,
        eval_epochs=100,
        eval_batch=32,
        cv_log_lam_grid=(-8.0, 6.0, 15),
    ),
    "mnist5k-lr-strong": dict(_STRONG),
    # Regression poisoning: ridge regression (the linear model with the squared loss and the L2
    # penalty) on the 442 diabetes patients; poison targets flipped as 1 - y; judged by test MSE.
    "diabetes-ridge": dict(
        source="diabetes",
        n_train=200,
        n_val=100,
        model="lr",
        loss="squared",
        inner_steps=200,
        inner_lr=0.5,
        iters_fixed=20,
        iters_clean=20,
        iters_multi=20,
        alpha=0.5,
        beta=0.5,
        x_box=(0.0, 1.0),
        log_lam_box=(-8.0, math.log(200.0)),
        log_lam_large=math.log(50.0),
        poison_batch=7,
        num_batches=5,
        eval_lr=0.1,
        eval_epochs=200,
        eval_batch=32,
    ),
    # Multiclass: softmax logistic regression on all ten classes; each poison point takes a wrong
    # class drawn uniformly (attack.wrong_labels); judged by test error, per class and as a confusion matrix.
    "digits10-lr": dict(
        _DIGITS_LR,
        classes=tuple(range(10)),
        n_test=397,
        n_train=400,
        n_val=200,
        log_lam_large=math.log(20.0),
        poison_batch=14,
    ),
    # All ten classes of the offline MNIST sample under the strong attack (mnist5k-lr-strong's
    # settings): unrolled RMD through 150 steps of a 7,850-weight softmax model is ten times the
    # binary cost, so a converged Newton-CG solve with the implicit hypergradient does the work.
    "mnist5k10-lr": dict(
        _STRONG,
        classes=tuple(range(10)),
        n_test=1000,
        log_lam_large=math.log(20.0),
    ),
    "digits-lr": dict(_DIGITS_LR),
}


def preset(name: str, **overrides) -> ExperimentConfig:
    """The config of a named preset, with fields overridden by keyword.

    Raises:
      ConfigError: unknown preset or field, or a value that is not allowed.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    _refuse_unknown_fields(overrides)
    settings = dict(PRESETS[name])
    if overrides.get("source", settings.get("source", _DEFAULTS["source"])) != settings.get("source"):
        for field in DATA_FIELDS:  # another source: the preset's data settings do not apply to it
            settings.pop(field, None)
    return ExperimentConfig(**{**settings, "name": name, **overrides})


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
    lines.append(
        "Override with --set FIELD=VALUE. A field marked [not read here] must keep its value: "
        "the source, model, penalty, loss, hypergrad, xp_step and victim of this config do not read it."
    )
    return "\n".join(lines)
