"""Run the whole benchmark suite and summarise its goals.

    python -m benchmarks [--quick] [--out benchmarks/results] [--only NAME ...] [--device cpu|gpu] [--jobs N]

Each benchmark runs as ``python -m benchmarks.NAME`` in its own process (so that one's compiled
programs and memory do not weigh on the next one's timings) and writes ``NAME.json`` / ``NAME.md``
(its output goes to ``NAME.log``); then ``summary.json`` and ``summary.md`` collect the goals:
measured figure, target, met or not, and for a missed goal what the benchmark's profile says about
why. ``--quick`` runs small sizes in seconds (what the tests run): its figures are not the goals'
settings and are marked so. ``--jobs 2`` runs two benchmarks at a time (for ``--quick``; timings of
a full run should not share the machine).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCHMARKS = (
    "hypergrad",
    "attack_step",
    "accuracy",
    "scaling",
    "batching",
    "peer",
    "engine_peers",
    "import_time",
    "strong_sweep",
)
# Longest first, so that --jobs 2 finishes early (rough full-run minutes on 2 CPU cores).
_EXPECTED_MINUTES = {
    "accuracy": 6,
    "attack_step": 2,
    "batching": 2,
    "scaling": 2,
    "hypergrad": 0.5,
    "peer": 0.3,
    "engine_peers": 2,
    "import_time": 0.3,
    "strong_sweep": 2,
}
# The same for --quick (seconds on 2 idle CPU cores, compilation included): its order is not the full
# run's (the strong sweep compiles four converged attacks whatever its size; accuracy shrinks most).
_EXPECTED_QUICK_SECONDS = {
    "accuracy": 33,
    "attack_step": 20,
    "batching": 22,
    "scaling": 12,
    "hypergrad": 6,
    "peer": 3,
    "engine_peers": 30,
    "import_time": 6,
    "strong_sweep": 38,
}


def _get(result: dict | None, *path):
    for key in path:
        if not isinstance(result, dict) or key not in result:
            return None
        result = result[key]
    return result


def _accuracy_note(r: dict) -> str | None:
    g = _get(r, "lr", "goal")
    if not g or g.get("ift_over_rmd") is None:
        return _get(g, "note")
    rmd_t, ift_t = g["rmd"]["steps"], g["ift"]["steps"]
    return (
        f"RMD first reaches cosine {g['target_cosine']} at T = {rmd_t} ({g['rmd_ms']:.1f} ms, "
        f"{g['rmd_ms'] / rmd_t:.3f} ms a step, forward and reverse); IFT needs w* trained T_train = {ift_t} "
        f"steps ({g['ift_ms']:.1f} ms incl. CG, {g['ift_ms'] / ift_t:.3f} ms a step): the saving is the reverse "
        f"pass and the {100 * (1 - ift_t / rmd_t):.0f} % fewer steps."
    )


def _batching_note(r: dict) -> str | None:
    return _get(r, "diagnosis")


def _sweep_note(r: dict) -> str | None:
    return _get(r, "sweep_diagnosis")


def _peer_note(r: dict) -> str | None:
    t = _get(r, "torch")
    if not t:
        return None
    if "skipped" in t:
        return t["skipped"]
    return (
        f"per inner step: poison_jax {r['poison_jax_per_step_ms']:.3f} ms (RMD, fwd + reverse), torch "
        f"{t['per_step_ms']:.3f} ms; poison_jax's forward unroll alone {r['poison_jax_forward_ms']:.2f} ms."
    )


def _hypergrad_note(r: dict) -> str | None:
    rows = {row["method"]: row for row in _get(r, "rows") or []}
    if "RMD" not in rows:
        return None
    return (
        f"forward unroll {rows['forward unroll']['median_ms']:.2f} ms, RMD {rows['RMD']['median_ms']:.2f} ms: the "
        "reverse pass redoes a Hessian-vector product and the poison-feature gradient each step."
    )


def _memory_note(r: dict) -> str | None:
    m = _get(r, "mlp_checkpointing")
    if not m:
        return None
    return (
        f"XLA temp buffers {m['plain']['xla_temp_mb']:.0f} -> {m['checkpointed']['xla_temp_mb']:.0f} MB, "
        f"peak RSS above baseline {m['plain']['peak_rss_above_baseline_mb']:.0f} -> "
        f"{m['checkpointed']['peak_rss_above_baseline_mb']:.0f} MB, "
        f"time x{m['time_ratio']:.2f}."
    )


GOALS = (
    dict(
        id="rmd_over_forward",
        source="hypergrad",
        target=2.5,
        goal="RMD hypergradient / forward unroll (LR, MNIST shape, T = 150)",
        get=lambda r: _get(r, "goals", "RMD / forward unroll <= 2.5"),
        note=_hypergrad_note,
    ),
    dict(
        id="ift_over_rmd_to_0.999",
        source="accuracy",
        target=0.5,
        goal="IFT (training w* included) / RMD cost to reach cosine >= 0.999 against the exact hypergradient "
        "(LR, MNIST shape, same η)",
        get=lambda r: _get(r, "lr", "goal", "ift_over_rmd"),
        note=_accuracy_note,
    ),
    dict(
        id="vmap_over_loop",
        source="batching",
        target=0.5,
        goal="10 seeds in one vmapped call (seed axis sharded over the CPU cores) / Python loop (LR, 2 CPU cores)",
        get=lambda r: _get(r, "goals", "batched 10 seeds / Python loop <= 0.5 (LR, 2 CPU cores)"),
        note=_batching_note,
    ),
    dict(
        id="jax_over_torch",
        source="peer",
        target=0.2,
        goal="poison_jax / PyTorch peer (create_graph=True unrolled loop), LR RMD hypergradient, T = 150",
        get=lambda r: _get(r, "poison_jax_over_torch"),
        note=_peer_note,
    ),
    dict(
        id="checkpoint_memory",
        source="attack_step",
        target=0.25,
        goal="checkpointed / plain RMD peak memory above the process baseline (MLP 2048x128x32x1, T = 600)",
        get=lambda r: (
            _get(r, "mlp_checkpointing", "device_peak_ratio")  # on an accelerator: its memory
            or _get(r, "mlp_checkpointing", "peak_rss_ratio")
        ),
        note=_memory_note,
    ),
    dict(
        id="import_seconds",
        source="import_time",
        target=2.0,
        goal="import poison_jax in a fresh interpreter (seconds; no matplotlib or TensorFlow Datasets loaded)",
        get=lambda r: _get(r, "goals", "import poison_jax seconds <= 2"),
        note=lambda r: f"modules loaded: {', '.join(r.get('heavy_modules_loaded') or []) or 'no heavy ones'}",
    ),
    dict(
        id="strong_sweep_minutes",
        source="strong_sweep",
        target=2.0,
        goal="the strong mnist5k sweep, poison-jax run --preset mnist5k-lr-strong, 4 Λ settings x 6 fractions "
        "x 10 seeds, compilation included (minutes, 2 CPU cores)",
        get=lambda r: _get(r, "goals", "strong sweep minutes <= 2 (2 CPU cores)"),
        note=lambda r: (
            "seconds per setting: " + ", ".join(f"{k} {sum(v):.0f}" for k, v in (_get(r, "cell_seconds") or {}).items())
        ),
    ),
    dict(
        id="sweep_minutes",
        source="batching",
        target=5.0,
        goal="projected MNIST LR sweep, 4 Λ settings x 6 fractions x 10 seeds x 100 hyperiterations, T = 150 "
        "(minutes, 2 CPU cores)",
        get=lambda r: _get(r, "sweep_projection", "projected_minutes"),
        note=_sweep_note,
    ),
)


def _load(out: Path, name: str) -> dict | None:
    path = out / f"{name}.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def summarise(out_dir, status: dict | None = None, quick: bool | None = None) -> dict:
    """Collect the goals from the benchmarks' JSON files under ``out_dir`` into ``summary.json`` and
    ``summary.md``. ``status`` (name -> dict) is what the runner knows about each run."""
    out = Path(out_dir)
    status = dict(status or {})
    results = {name: _load(out, name) for name in BENCHMARKS}
    if quick is None:
        quick = any(r.get("quick") for r in status.values())
    rows = []
    for g in GOALS:
        r = results[g["source"]]
        measured = g["get"](r) if r else None
        met = None if measured is None else bool(measured <= g["target"])
        if r is None:
            note = f"not run (python -m benchmarks.{g['source']})"
            if status.get(g["source"], {}).get("returncode"):
                note = f"{g['source']} failed: see {g['source']}.log"
        else:
            note = g["note"](r) if (met is False or measured is None) else None
        rows.append(
            {
                "id": g["id"],
                "goal": g["goal"],
                "measured": measured,
                "target": g["target"],
                "met": met,
                "source": f"{g['source']}.json",
                "from_this_run": g["source"] in status,
                "why_missed": note if met is False else None,
                "note": note if met is not False else None,
            }
        )
    env = next((r for r in results.values() if r), {}) or {}
    extras = {}
    scaling = results["scaling"]
    if scaling:
        t = scaling["over_T"]
        extras["checkpointed temp-buffer slope over T (sqrt(T): 0.5)"] = t["slope_temp_checkpointed"]
        extras["plain temp-buffer slope over T (T: 1.0)"] = t["slope_temp_plain"]
    batching = results["batching"]
    if batching:
        extras["vmap on one device / Python loop"] = batching["one_device"]["vmap_over_loop"]
        extras[f"no jit / jit (RMD, T = {batching['jit_vs_no_jit']['steps']})"] = batching["jit_vs_no_jit"][
            "no_jit_over_jit"
        ]
    accuracy = results["accuracy"]
    if accuracy:
        rmd150 = next((row for row in accuracy["lr"]["rmd_over_T"] if row["T"] == 150), None)
        if rmd150:
            extras["RMD cosine to exact at the paper's T = 150 (LR)"] = rmd150["cosine"]
    summary = {
        "quick": quick,
        "note": "--quick: small sizes, not the goals' settings" if quick else None,
        "device": env.get("device"),
        "jax_version": env.get("jax_version"),
        "cpu_count": env.get("cpu_count"),
        "goals": rows,
        "extras": extras,
        "benchmarks": {name: {"ran": results[name] is not None, **status.get(name, {})} for name in BENCHMARKS},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(summary_markdown(summary) + "\n")
    return summary


def _fmt(x) -> str:
    if x is None:
        return "—"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def summary_markdown(summary: dict) -> str:
    head = f"Benchmark goals ({summary['device']}, JAX {summary['jax_version']}, {summary['cpu_count']} CPUs)"
    if summary["quick"]:
        head += " — **--quick run: small sizes, not the goals' settings**"
    lines = [head, "", "| goal | measured | target | met | source |", "|---|---:|---:|:---:|---|"]
    for row in summary["goals"]:
        met = {True: "yes", False: "**no**", None: "—"}[row["met"]]
        source = row["source"] + ("" if row["from_this_run"] or row["measured"] is None else " (earlier run)")
        lines.append(f"| {row['goal']} | {_fmt(row['measured'])} | <= {_fmt(row['target'])} | {met} | {source} |")
    missed = [row for row in summary["goals"] if row["met"] is False]
    if missed:
        lines += ["", "Why the missed goals are missed (from the benchmarks' profiles):", ""]
        lines += [f"- **{row['id']}**: {row['why_missed']}" for row in missed]
    open_ = [row for row in summary["goals"] if row["met"] is None]
    if open_:
        lines += ["", "Not measured:", ""] + [f"- **{row['id']}**: {row['note']}" for row in open_]
    if summary["extras"]:
        lines += ["", "| also measured | value |", "|---|---:|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in summary["extras"].items()]
    return "\n".join(lines)


def _run_one(name: str, args) -> dict:
    cmd = [sys.executable, "-m", f"benchmarks.{name}", "--out", str(args.out)]
    if args.quick:
        cmd.append("--quick")
    if args.device:
        cmd += ["--device", args.device]
    start = time.perf_counter()
    with open(Path(args.out) / f"{name}.log", "w") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    print(f"{name}: {'ok' if code == 0 else f'FAILED (exit {code}), see {name}.log'} in {seconds:.0f} s", flush=True)
    return {"returncode": code, "seconds": seconds, "quick": args.quick}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds each): what the tests run")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the results (default: %(default)s)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=BENCHMARKS,
        metavar="NAME",
        help=f"run only these ({', '.join(BENCHMARKS)}); the summary still lists every goal",
    )
    parser.add_argument("--device", choices=("cpu", "gpu"), default=None, help="platform (default: JAX's default)")
    parser.add_argument("--jobs", type=int, default=1, help="benchmarks run at a time (default 1)")
    args = parser.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    names = [n for n in BENCHMARKS if args.only is None or n in args.only]
    if args.jobs > 1:
        names.sort(key=lambda n: -(_EXPECTED_QUICK_SECONDS[n] / 60 if args.quick else _EXPECTED_MINUTES[n]))
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        status = dict(zip(names, pool.map(lambda n: _run_one(n, args), names), strict=False))
    summary = summarise(args.out, status, quick=args.quick)
    print()
    print(summary_markdown(summary))
    print(f"\nwrote {Path(args.out) / 'summary.json'}")
    return 1 if any(s["returncode"] for s in status.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
