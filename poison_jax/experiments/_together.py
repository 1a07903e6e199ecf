"""The config's checks that read several sections (private; run by
:class:`poison_jax.experiments.config.ExperimentConfig` at construction)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from poison_jax.engine import checks
from poison_jax.experiments import defence_sections as ds
from poison_jax.experiments import sections as s
from poison_jax.experiments.checked import ConfigError

if TYPE_CHECKING:
    from poison_jax.experiments.config import ExperimentConfig


def check_together(c: ExperimentConfig) -> None:
    """The checks that read several sections."""
    classes = getattr(c.data, "classes", None)
    if classes is not None and len(classes) > 2 and not isinstance(c.loss, s.Logistic):
        checks.fail(
            "loss", c.loss.kind, f"logistic (softmax cross-entropy) with {len(classes)} classes (binary-only here)",
            error=ConfigError,
        )  # fmt: skip
    if c.n_poison > min(c.sweep.n_train, c.sweep.n_val):
        checks.fail(
            "attack.num_batches",
            c.attack.num_batches,
            f"such that attack.poison_batch * attack.num_batches = {c.n_poison} does not exceed sweep.n_train "
            f"({c.sweep.n_train}) nor sweep.n_val ({c.sweep.n_val})",
            error=ConfigError,
        )
    _refuse_unstable_smoothing(c)
    ds.check_applies(c.defence, c.attack.adaptive, regression=isinstance(c.loss, s.Squared), num_classes=c.num_classes)


def _refuse_unstable_smoothing(c: ExperimentConfig) -> None:
    """A smoothed L1 has curvature up to exp(λ)/ε per weight (over n): gradient steps of size η
    diverge once η·exp(λ)/(ε·n) >= 2, at the top of the λ box (learned λ climbs there)."""
    if isinstance(c.penalty, s.L2):
        return
    steps = {}
    if isinstance(c.method, (s.RMD, s.IFT)):
        steps["method.lr"] = c.method.lr
    if isinstance(c.victim, s.SGD):
        steps["victim.lr"] = c.victim.lr
    if not steps:
        return
    path = max(steps, key=lambda p: steps[p])
    need = steps[path] * math.exp(c.attack.log_lam_box[1]) / (2 * c.sweep.n_train)
    if c.penalty.smoothing <= need:
        checks.fail(
            "penalty.smoothing",
            c.penalty.smoothing,
            f"> {path} * exp(attack.log_lam_box[1]) / (2 * sweep.n_train) = {need:.3g}, or the gradient steps "
            f"diverge at the top of the λ box (the smoothed |w| has curvature up to 1/smoothing); lower {path} or "
            "attack.log_lam_box, or use method=implicit with victim=converged",
            error=ConfigError,
        )
