"""What a sweep writes and says (private; used by :mod:`poison_jax.experiments.sweep`): per-seed
metrics with failures named, their means, a cell's record, the device line, and the fixed-λ twin
whose cells a setting may copy."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from poison_jax.experiments import sections
from poison_jax.experiments.config import ExperimentConfig, setting_label
from poison_jax.experiments.devices import cpu_core_count
from poison_jax.poisoning import models, victims

_METRICS = ("error", "fpr", "fnr", "log_lam", "sq_norm", "sq_norm_per_weight", "val_loss")


def per_seed_metrics(c: ExperimentConfig, model: models.Model, m: victims.VictimMetrics, objective, nonfinite):
    # More than two classes: no false-positive or -negative rate, but the error per class and the
    # confusion matrix (rows: true class, columns: predicted).
    multiclass = model.num_classes > 2
    names = [k for k in _METRICS if not (multiclass and k in ("fpr", "fnr"))]
    per_seed: dict[str, list] = {k: [] for k in (*names, *(("per_class_error", "confusion") if multiclass else ()))}
    failures = []
    for i, seed in enumerate(c.seeds):
        reasons = []
        lr = f"lower method.lr={c.method.lr} or " if isinstance(c.method, (sections.RMD, sections.IFT)) else ""
        advice = f"{lr}narrow attack.log_lam_box={c.attack.log_lam_box}"
        if nonfinite[i] > 0:
            reasons.append(
                f"{int(nonfinite[i])} hyperiteration(s) had a non-finite hypergradient (inner training "
                f"diverged: {advice})"
            )
        elif not np.isfinite(objective[i]):
            reasons.append(
                f"the validation loss after inner training is not finite (inner training diverged: {advice})"
            )
        if not m.finite[i]:
            reasons.append(f"victim training diverged (lower victim.lr={getattr(c.victim, 'lr', None)})")
        values = {
            "error": m.error[i],
            "fpr": m.fpr[i],
            "fnr": m.fnr[i],
            "log_lam": m.log_lam[i],
            "sq_norm": m.sq_norm[i],
            "sq_norm_per_weight": m.sq_norm_per_weight[i],
            "val_loss": objective[i],
            "per_class_error": m.per_class_error[i],
            "confusion": m.confusion[i],
        }
        if model.loss.task == "regression" or multiclass:  # no false-positive or -negative rate
            values.pop("fpr"), values.pop("fnr")
        values = {k: v for k, v in values.items() if k in per_seed}
        bad = [k for k, v in values.items() if not np.all(np.isfinite(v))]
        if bad and not reasons:
            reasons.append(f"non-finite metric(s): {', '.join(bad)}")
        for k in per_seed:
            v = values.get(k)
            per_seed[k].append(None if reasons or v is None else np.asarray(v, np.float64).tolist())
        if reasons:
            failures.append({"seed": seed, "reason": "; ".join(reasons)})
    return per_seed, failures


def mean_metrics(per_seed: dict) -> dict:
    mean = {}
    for k, values in per_seed.items():
        ok = [v for v in values if v is not None]
        mean[k] = np.mean(np.asarray(ok, np.float64), axis=0).tolist() if ok else None
        if k in ("error",) and ok:
            mean["error_std"] = float(np.std(np.asarray(ok, np.float64)))
    return mean


_FIXED = ("small", "large", "clean")


def twin(store, setting: str) -> str | None:
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


def device_line(config: ExperimentConfig, name: str, num_devices: int, platform: str) -> str:
    """Where the seeds run, what padding costs, and how to use every core (shown when a sweep starts)."""
    n, d = config.sweep.num_seeds, num_devices
    padded = -(-n // d) * d
    settings = f" ({config.name} settings)" if name != config.name else ""
    line = f"{name}{settings}: {n} seed(s) on {d} {platform.upper()} device(s)"
    if padded > n:
        fits = sorted({k for k in ((n // d) * d, padded) if k > 0})
        line += (
            f", padded to {padded} (copies of the last seed fill the devices and are dropped); "
            f"sweep.num_seeds={' or '.join(map(str, fits))} would use every device without waste"
        )
    cores = cpu_core_count()
    if platform == "cpu" and d < cores and jax.process_count() == 1:
        line += (
            f". This host has {cores} usable cores but {d} CPU device(s): call "
            "poison_jax.experiments.devices.use_cpu_cores() "
            f"before any JAX work (the poison-jax command does) to run seeds in parallel"
        )
    return line


def record(
    sweep: Any, config_hash: str, setting: str, cell: int, metrics: dict, seconds: float, compiling: float
) -> dict:
    config = sweep.config
    n_poison = cell * config.attack.poison_batch
    regression = sweep.model.loss.task == "regression"
    return {
        "config_hash": config_hash,
        "preset": config.name,
        "data": sweep.name,
        "setting": setting,
        "label": setting_label(config, setting),
        "cell": cell,
        "n_poison": n_poison,
        "fraction": n_poison / config.sweep.n_train,
        "num_seeds": config.sweep.num_seeds,
        "seeds": list(config.seeds),
        "model": config.model.kind if "model" not in sweep.identity else sweep.model.name,
        "hypergrad": config.method.kind,
        "xp_step": config.attack.xp_step.kind,
        "lam_step": config.attack.lam_step.kind,
        "poison_mode": config.attack.poison_mode,
        "victim": config.victim.kind,
        **({"metric": "test_mse"} if regression else {}),  # else the test error, as always
        "per_seed": metrics["per_seed"],
        "mean": metrics["mean"],
        "failures": metrics["failures"],
        "reused_from": None,
        "wall_time_s": round(seconds, 3),
        "compile_time_s": round(compiling, 3),  # of wall_time_s: tracing and compiling JAX programs
    }
