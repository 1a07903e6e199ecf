"""One hyperiteration of Algorithm 1: vmap over seeds vs a Python loop; the paper's MLP with and
without checkpointing (time and peak memory; goal ``checkpoint_memory``).

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

import json

import jax
import numpy as np

from benchmarks import harness
from benchmarks.problems import attack_setup, seed_slice
from poison_jax.poisoning import attack, models

LR_SIZES = dict(d=784, n_train=512, n_val=171, n_poison=85, steps=150, lr=0.1, seeds=10)
MLP_SIZES = dict(d=2048, n_train=512, n_val=171, n_poison=17, steps=600, lr=0.01, seeds=1, hidden=(128, 32))
QUICK_LR = dict(d=64, n_train=128, n_val=50, n_poison=17, steps=30, lr=0.1, seeds=4)
QUICK_MLP = dict(d=64, n_train=128, n_val=50, n_poison=17, steps=40, lr=0.01, seeds=1, hidden=(16, 8))


def vmap_vs_loop(quick: bool) -> dict:
    sizes = QUICK_LR if quick else LR_SIZES
    settings, splits, state = attack_setup(sizes, models.logistic_regression(sizes["d"]))
    singles = [(seed_slice(splits, i), seed_slice(state, i)) for i in range(sizes["seeds"])]
    calls = {
        "vmap": lambda: attack.poison_step(settings, splits, state),
        "loop": lambda: [attack.poison_step(settings, sp, st) for sp, st in singles],
    }
    times = harness.median_times(calls, repeats=5 if quick else 20)
    return {
        "sizes": sizes,
        "vmap_ms": 1e3 * times["vmap"],
        "loop_ms": 1e3 * times["loop"],
        "vmap_over_loop": times["vmap"] / times["loop"],
    }


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields[field].split()[0]) / 1024


def _device_bytes(device, key: str) -> int | None:
    """An accelerator's own allocator figure (``None`` on the CPU)."""
    return (device.memory_stats() or {}).get(key) if device.platform != "cpu" else None


def mlp_case(quick: bool, checkpoint: bool) -> dict:
    """Run in a fresh process: time and memory of one MLP hypergradient step."""
    sizes = QUICK_MLP if quick else MLP_SIZES
    model = models.mlp(sizes["d"], hidden=sizes["hidden"])
    settings, splits, state = attack_setup(sizes, model, checkpoint=True if checkpoint else None)
    # Compile ahead of time, so that the first execution is the one whose memory is measured.
    compiled = attack.poison_step.lower(settings, splits, state, update_xp=True, update_lam=False).compile()
    device = harness.default_device()
    device_baseline = _device_bytes(device, "bytes_in_use")
    baseline = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as refs:  # reset VmHWM to the current RSS
        refs.write("5")
    jax.block_until_ready(compiled(splits, state))
    peak = _status_mb("VmHWM") - baseline
    device_peak = _device_bytes(device, "peak_bytes_in_use")
    times = [harness.first_call_seconds(lambda: compiled(splits, state)) for _ in range(2 if quick else 3)]
    return {
        "checkpoint": checkpoint,
        "seconds": float(np.median(times)),
        "xla_temp_mb": compiled.memory_analysis().temp_size_in_bytes / 2**20,
        "peak_rss_above_baseline_mb": peak,
        # accelerators only (host RSS says little there); a fresh process: the peak so far is the step's
        "device_peak_above_baseline_mb": (
            (device_peak - device_baseline) / 2**20 if None not in (device_peak, device_baseline) else None
        ),
        "sizes": sizes,
    }


def mlp_checkpointing(quick: bool, device: str | None = None) -> dict:
    cases = {
        name: harness.run_json_case("attack_step", "--mlp-case", flag, quick=quick, device=device)
        for name, flag in (("plain", "0"), ("checkpointed", "1"))
    }
    plain, ckpt = cases["plain"], cases["checkpointed"]
    device_peaks = plain["device_peak_above_baseline_mb"], ckpt["device_peak_above_baseline_mb"]
    return {
        **cases,
        "time_ratio": ckpt["seconds"] / plain["seconds"],
        "xla_temp_ratio": ckpt["xla_temp_mb"] / plain["xla_temp_mb"],
        "peak_rss_ratio": ckpt["peak_rss_above_baseline_mb"] / max(plain["peak_rss_above_baseline_mb"], 1e-9),
        "device_peak_ratio": None if None in device_peaks else device_peaks[1] / max(device_peaks[0], 1e-9),
    }


def run(args) -> dict:
    mlp = mlp_checkpointing(args.quick, args.device)
    memory = mlp["device_peak_ratio"] or mlp["peak_rss_ratio"]  # on an accelerator: its own memory
    return {
        "lr_vmap_vs_loop": vmap_vs_loop(args.quick),
        "mlp_checkpointing": mlp,
        "goals": {"checkpoint_memory": memory},
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


def main(argv=None) -> dict | None:
    args = harness.parser("attack_step", __doc__)
    args.add_argument("--mlp-case", choices=("0", "1"), help="internal: one MLP case, as JSON on stdout")
    args = args.parse_args(argv)
    harness.select_device(args.device)
    if args.mlp_case is not None:
        print(json.dumps(harness.jsonable(mlp_case(args.quick, args.mlp_case == "1"))))
        return None
    return harness.finish(args, "attack_step", run(args), markdown)


if __name__ == "__main__":
    main()
