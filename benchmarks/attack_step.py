"""One hyperiteration of Algorithm 1: vmap over seeds vs a Python loop; the paper's MLP with and
without checkpointing (time and peak memory).

* LR, MNIST shape (d = 784, 512 train of which 85 poison, 171 validation, T = 150): one
  multiobjective hyperiteration (two hypergradients) for 10 seeds in one vmapped call, against a
  Python loop calling the same jitted step on each seed.
* The paper's DNN (2048 x 128 x 32 x 1, 266,433 parameters, T = 600, one seed): one RMD
  hypergradient (a fixed-λ hyperiteration), plain and checkpointed (segments of isqrt(T)). Memory is
  measured in a fresh subprocess per case: XLA's buffer assignment of the compiled step
  (``memory_analysis``) and the rise of the process's peak resident memory during the first
  execution of the ahead-of-time compiled step (VmHWM reset after compilation).

    python -m benchmarks.attack_step [--quick] [--out benchmarks/results] [--device cpu|gpu]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import add_common_args, default_device, environment, median_times, select_device, write_results
from poison_jax.engine import RMD
from poison_jax.poisoning import attack, data, models

LR_SIZES = dict(d=784, n_train=512, n_val=171, n_poison=85, steps=150, lr=0.1, seeds=10)
MLP_SIZES = dict(d=2048, n_train=512, n_val=171, n_poison=17, steps=600, lr=0.01, seeds=1, hidden=(128, 32))
QUICK_LR = dict(d=64, n_train=128, n_val=50, n_poison=17, steps=30, lr=0.1, seeds=4)
QUICK_MLP = dict(d=64, n_train=128, n_val=50, n_poison=17, steps=40, lr=0.01, seeds=1, hidden=(16, 8))


def random_splits(d, n_train, n_val, seeds, **_):
    """Random data of the given shape, labels from a random hyperplane, stacked over seeds."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=d)

    def draw(*shape):
        x = rng.uniform(size=(*shape, d)).astype(np.float32)
        return jnp.asarray(x), jnp.asarray(((x - 0.5) @ w > 0).astype(np.float32))

    x_train, y_train = draw(seeds, n_train)
    x_val, y_val = draw(seeds, n_val)
    x_test, y_test = draw(10)
    return data.Splits(x_train, y_train, x_val, y_val, x_test, y_test)


def setup(sizes, model, checkpoint=None):
    splits = random_splits(**sizes)
    settings = attack.AttackSettings(
        model,
        RMD(steps=sizes["steps"], lr=sizes["lr"], checkpoint=checkpoint),
        alpha=0.99,
        beta=0.8,
        x_box=(0.0, 1.0),
        lam_box=(-8.0, math.log(200.0)),
    )
    keys = jax.random.split(jax.random.PRNGKey(0), sizes["seeds"])
    state = attack.init_attack(settings, keys, splits, sizes["n_poison"], math.log(5.0))
    state = attack.set_poison_count(state, sizes["n_poison"], min(17, sizes["n_poison"]))
    return settings, splits, state


def seed_slice(tree, i):
    if isinstance(tree, data.Splits):
        return tree._replace(**{f: getattr(tree, f)[i : i + 1] for f in ("x_train", "y_train", "x_val", "y_val")})
    return jax.tree_util.tree_map(lambda a: a[i : i + 1], tree)


def vmap_vs_loop(quick: bool) -> dict:
    sizes = QUICK_LR if quick else LR_SIZES
    settings, splits, state = setup(sizes, models.logistic_regression(sizes["d"]))
    singles = [(seed_slice(splits, i), seed_slice(state, i)) for i in range(sizes["seeds"])]

    def vmapped():
        return attack.poison_step(settings, splits, state)

    def loop():
        return [attack.poison_step(settings, sp, st) for sp, st in singles]

    times = median_times({"vmap": vmapped, "loop": loop}, repeats=5 if quick else 20)
    return {
        "sizes": sizes,
        "vmap_ms": 1e3 * times["vmap"],
        "loop_ms": 1e3 * times["loop"],
        "vmap_over_loop": times["vmap"] / times["loop"],
    }


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields["VmHWM"].split()[0]) / 1024


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields["VmRSS"].split()[0]) / 1024


def mlp_case(quick: bool, checkpoint: bool) -> dict:
    """Run in a fresh process: time and memory of one MLP hypergradient step."""
    sizes = QUICK_MLP if quick else MLP_SIZES
    model = models.mlp(sizes["d"], hidden=sizes["hidden"])
    settings, splits, state = setup(sizes, model, checkpoint=True if checkpoint else None)
    # Compile ahead of time, so that the first execution is the one whose memory is measured.
    compiled = attack.poison_step.lower(settings, splits, state, update_xp=True, update_lam=False).compile()
    analysis = compiled.memory_analysis()
    device = default_device()
    stats = device.memory_stats() if device.platform != "cpu" else None  # an accelerator's own allocator
    device_baseline = stats.get("bytes_in_use") if stats else None
    baseline = _rss_mb()
    with open("/proc/self/clear_refs", "w") as refs:  # reset VmHWM to the current RSS
        refs.write("5")
    jax.block_until_ready(compiled(splits, state))
    peak = _peak_rss_mb() - baseline
    device_peak = None
    if device_baseline is not None and "peak_bytes_in_use" in device.memory_stats():
        # Fresh process: the peak so far is the execution's (setup held less than the step needs).
        device_peak = (device.memory_stats()["peak_bytes_in_use"] - device_baseline) / 2**20
    times = []
    for _ in range(2 if quick else 3):
        start = time.perf_counter()
        jax.block_until_ready(compiled(splits, state))
        times.append(time.perf_counter() - start)
    return {
        "checkpoint": checkpoint,
        "seconds": float(np.median(times)),
        "xla_temp_mb": analysis.temp_size_in_bytes / 2**20,
        "peak_rss_above_baseline_mb": peak,
        "device_peak_above_baseline_mb": device_peak,  # accelerators only (host RSS says little there)
        "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()},
    }


def mlp_checkpointing(quick: bool, device: str | None = None) -> dict:
    cases = {}
    for checkpoint in (False, True):
        cmd = [sys.executable, "-m", "benchmarks.attack_step", "--mlp-case", str(int(checkpoint))]
        if quick:
            cmd.append("--quick")
        if device is not None:
            cmd += ["--device", device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        cases["checkpointed" if checkpoint else "plain"] = json.loads(out.stdout.strip().splitlines()[-1])
    plain, ckpt = cases["plain"], cases["checkpointed"]
    return {
        **cases,
        "time_ratio": ckpt["seconds"] / plain["seconds"],
        "xla_temp_ratio": ckpt["xla_temp_mb"] / plain["xla_temp_mb"],
        "peak_rss_ratio": ckpt["peak_rss_above_baseline_mb"] / max(plain["peak_rss_above_baseline_mb"], 1e-9),
        "device_peak_ratio": (
            ckpt["device_peak_above_baseline_mb"] / max(plain["device_peak_above_baseline_mb"], 1e-9)
            if plain["device_peak_above_baseline_mb"] is not None
            else None
        ),
    }


def run(quick: bool = False, device: str | None = None) -> dict:
    return {
        "benchmark": "attack_step",
        "lr_vmap_vs_loop": vmap_vs_loop(quick),
        "mlp_checkpointing": mlp_checkpointing(quick, device),
        **environment(),
    }


def markdown(result: dict) -> str:
    v, m = result["lr_vmap_vs_loop"], result["mlp_checkpointing"]
    lines = [
        f"One multiobjective hyperiteration, LR, {v['sizes']['seeds']} seeds "
        f"(d={v['sizes']['d']}, T={v['sizes']['steps']}):",
        "",
        "| | median (ms) |",
        "|---|---:|",
        f"| vmap over seeds | {v['vmap_ms']:.1f} |",
        f"| Python loop over seeds | {v['loop_ms']:.1f} |",
        f"| ratio vmap / loop | {v['vmap_over_loop']:.2f} |",
        "",
        f"One RMD hyperiteration of the MLP (T={m['plain']['sizes']['steps']}):",
        "",
        "| | time (s) | XLA temp buffers (MB) | peak RSS above baseline (MB) |",
        "|---|---:|---:|---:|",
    ]
    for name in ("plain", "checkpointed"):
        c = m[name]
        lines.append(
            f"| {name} | {c['seconds']:.2f} | {c['xla_temp_mb']:.1f} | {c['peak_rss_above_baseline_mb']:.1f} |"
        )
    lines.append(f"| ratio | {m['time_ratio']:.2f} | {m['xla_temp_ratio']:.3f} | {m['peak_rss_ratio']:.3f} |")
    if m.get("device_peak_ratio") is not None:  # on an accelerator, its own memory is the one that counts
        lines += [
            "",
            f"Device memory peak above baseline: plain {m['plain']['device_peak_above_baseline_mb']:.1f} MB, "
            f"checkpointed {m['checkpointed']['device_peak_above_baseline_mb']:.1f} MB, ratio "
            f"{m['device_peak_ratio']:.3f}.",
        ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, "attack_step")
    parser.add_argument("--mlp-case", choices=("0", "1"), help=argparse.SUPPRESS)  # internal: one subprocess case
    args = parser.parse_args(argv)
    select_device(args.device)
    if args.mlp_case is not None:
        print(json.dumps(mlp_case(args.quick, args.mlp_case == "1")))
        return None
    result = run(quick=args.quick, device=args.device)
    write_results(args.out, "attack_step", result, markdown(result))
    return result


if __name__ == "__main__":
    main()
