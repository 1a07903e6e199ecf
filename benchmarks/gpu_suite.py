"""One prepared run for a lent GPU: the figures that only a GPU can give, in order of priority.

    python -m benchmarks.gpu_suite --out DIR [--budget-s 420]

1. The strong sweep (``mnist5k-lr-strong``, 4 Λ settings x 6 fractions x 10 seeds) with the dense
   inner solver (``method.solver=dense-newton``: the GPU's choice by the kernel-launch count of
   ``benchmarks.kernel_launches``), timed whole, compilation included, with its table.
2. The paper-faithful ``mnist5k-lr`` sweep (10 seeds), the same way.
3. The strong sweep with the preset's Newton-CG (the CPU's choice), to set beside 1.
4. The poison_jax half of the secml head-to-head (``benchmarks.secml_h2h --jax-only --no-fresh``).
5. The paper's MLP setting (imagenet-mlp preset: 2048x128x32x1, per-layer λ, RMD T = 600,
   checkpointed), 10 seeds vmapped, on random features of the real shapes (the ImageNet features
   cannot be had offline): warm seconds per hyperiteration with Λ fixed and with Λ learned, one
   victim evaluation (4,000 epochs), and the projected sweep time from them.

Each stage is skipped when less than its estimate is left of ``--budget-s``; everything measured
is written to ``DIR/gpu_suite.json`` as soon as it is known.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness
from poison_jax.experiments import presets, sections, sweep
from poison_jax.poisoning import attack, data, victims


def _timed(fn, repeats: int = 2):
    """``(first_call_s, warm_median_s, None)`` of ``fn()`` (blocked until ready; the first call compiles)."""
    first = harness.first_call_seconds(fn)
    return first, harness.time_calls({"fn": fn}, repeats=repeats, warmup=0)["fn"].median, None


def mlp_paper_setting(num_seeds: int = 10) -> dict:
    config = presets.preset("imagenet-mlp", {"sweep.num_seeds": num_seeds, "data.path": "unused.npz"})
    a = config.attack
    rng = np.random.default_rng(0)
    shape = lambda n: (num_seeds, n, 2048)  # noqa: E731
    splits = data.Splits(
        jnp.asarray(rng.normal(size=shape(512)) * 0.3, jnp.float32),
        jnp.asarray(rng.integers(0, 2, (num_seeds, 512)), jnp.float32),
        jnp.asarray(rng.normal(size=shape(171)) * 0.3, jnp.float32),
        jnp.asarray(rng.integers(0, 2, (num_seeds, 171)), jnp.float32),
        jnp.asarray(rng.normal(size=(600, 2048)) * 0.3, jnp.float32),
        jnp.asarray(rng.integers(0, 2, 600), jnp.float32),
    )
    model = sweep.build_model(config, 2048)
    settings = config.attack_settings(model)
    keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
    state = attack.init_attack(settings, keys, splits, config.n_poison, a.log_lam_init)
    state = attack.set_poison_count(state, a.poison_batch, a.poison_batch)
    method = config.method
    assert isinstance(method, sections.RMD), method  # the paper's MLP setting: RMD through its steps
    result = {"num_seeds": num_seeds, "inner_steps": method.steps, "checkpoint": method.checkpoint}
    for name, xp, lam in (("fixed_lambda", True, False), ("learned_lambda", True, True)):
        first, warm, _ = _timed(
            lambda: attack.run_attack(settings, splits, state, num_iters=2, update_xp=xp, update_lam=lam)[0].xp
        )
        result[f"{name}_first_call_s"] = first
        result[f"{name}_per_hyperiteration_s"] = warm / 2
    x, y, _ = attack.poisoned_training_set(splits, state)
    victim = config.victim_model()
    first, warm, _ = _timed(
        lambda: (
            victims.evaluate_victim(model, x, y, state.log_lam, keys, splits.x_test, splits.y_test, victim=victim).error
        ),
        repeats=1,
    )
    result["evaluation_first_call_s"], result["evaluation_s"] = first, warm
    fixed, learned = result["fixed_lambda_per_hyperiteration_s"], result["learned_lambda_per_hyperiteration_s"]
    cells = a.num_batches + 1
    hyper = (
        2 * a.num_batches * a.iters_fixed * fixed + a.iters_clean * fixed + a.num_batches * a.iters_multi * learned
    )  # small + large fixed; learned: T_λ then T_mul
    result["projected_sweep_s"] = hyper + 3 * cells * warm
    return result


DENSE = {"method.solver": "dense-newton"}


def timed_sweep(out: Path, preset: str, overrides: dict | None = None) -> dict:
    config = presets.preset(preset, overrides or {})
    start = time.perf_counter()
    folder = out / (preset + "".join(f"_{v}" for v in (overrides or {}).values()))
    records = sweep.run_sweep(config, folder, progress=False, log=lambda _: None)
    seconds = time.perf_counter() - start
    table = {
        f"{r['setting']}/{r['cell']}": {
            "error": r["mean"]["error"],
            "error_std": r["mean"].get("error_std"),
            "log_lam": r["mean"]["log_lam"],
            "wall_time_s": r["wall_time_s"],
        }
        for r in records
    }
    return {
        "preset": preset,
        "overrides": overrides or {},
        "num_seeds": config.sweep.num_seeds,
        "seconds": seconds,
        "cells": table,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-s", type=float, default=420.0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report = {
        "device": str(jax.devices()[0].device_kind),
        "platform": jax.devices()[0].platform,
        "jax": jax.__version__,
    }
    path = args.out / "gpu_suite.json"

    def save():
        path.write_text(json.dumps(report, indent=1))

    stages = [
        ("strong_sweep_dense", 60, lambda: timed_sweep(args.out, "mnist5k-lr-strong", DENSE)),
        ("paper_sweep", 60, lambda: timed_sweep(args.out, "mnist5k-lr")),
        ("strong_sweep", 150, lambda: timed_sweep(args.out, "mnist5k-lr-strong")),
        (
            "secml_h2h_jax",
            40,
            lambda: __import__("benchmarks.secml_h2h", fromlist=["main"]).main(
                ["--jax-only", "--no-fresh", "--out", str(args.out)]
            ),
        ),
        ("mlp_paper_setting", 60, mlp_paper_setting),
    ]
    for name, estimate, stage in stages:
        left = args.budget_s - (time.perf_counter() - t0)
        if left < estimate:
            report[name] = f"skipped: {left:.0f} s of the budget left, about {estimate} s needed"
            save()
            continue
        start = time.perf_counter()
        try:
            report[name] = stage()
        except Exception as err:  # report and go on: the later stages are independent
            report[name] = f"failed: {type(err).__name__}: {err}"
        print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)
        save()
    print(json.dumps(report, indent=1)[-6000:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
