"""Compile once across runs: the same sweep twice, each in a fresh process, with one persistent
compilation cache (goal ``second_run_compile``: the second run's compile time at most 10 % of the
first's).

Runs ``poison-jax run --preset digits-lr --set sweep.num_seeds=2 --cache-dir DIR`` (an empty
``DIR`` of its own) twice and records each run's compile time (the sum of its records'
``compile_time_s``: tracing, lowering and compiling JAX programs) and wall time, and JAX's own
monitoring of the run: seconds tracing, lowering to MLIR, compiling or loading from the cache, and
the number of programs. ``--quick`` runs a few hyperiterations a cell (seconds).

    python -m benchmarks.compile_cache [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import harness

PRESET = "digits-lr"
SETS = ("sweep.num_seeds=2",)
QUICK_SETS = ("attack.iters_fixed=2", "attack.iters_clean=2", "attack.iters_multi=2", "victim.epochs=2")
# Runs the CLI in this process with JAX's compile events summed, and prints them as JSON last.
_WORKER = """
import collections, json, sys, jax
seconds, counts = collections.Counter(), collections.Counter()
def listen(event, duration, **_):
    seconds[event] += duration
    counts[event] += 1
jax.monitoring.register_event_duration_secs_listener(listen)
from poison_jax.face.cli import main
main(sys.argv[1:])
print(json.dumps({"seconds": seconds, "counts": counts}))
"""
EVENTS = {
    "tracing": "/jax/core/compile/jaxpr_trace_duration",
    "lowering": "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "compiling or loading": "/jax/core/compile/backend_compile_duration",
    "of which loading from the cache": "/jax/compilation_cache/cache_retrieval_time_sec",
}


def _run(cache: Path, out: Path, sets: tuple[str, ...]) -> dict:
    command = [sys.executable, "-c", _WORKER, "run", "--preset", PRESET, "--out", str(out), "--no-progress"]
    command += ["--cache-dir", str(cache), *(arg for field in sets for arg in ("--set", field))]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT"))}
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    events = json.loads(proc.stdout.strip().splitlines()[-1])
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {
        "compile_seconds": sum(r["compile_time_s"] for r in records),
        "wall_seconds": sum(r["wall_time_s"] for r in records),
        "programs": events["counts"].get(EVENTS["lowering"], 0),
        "events_seconds": {name: events["seconds"].get(key, 0.0) for name, key in EVENTS.items()},
        "per_seed": [r["per_seed"] for r in records],
    }


def run(args) -> dict:
    sets = SETS + (QUICK_SETS if args.quick else ())
    with tempfile.TemporaryDirectory() as tmp:
        first, second = (_run(Path(tmp) / "cache", Path(tmp) / name, sets) for name in ("first", "second"))
    same = first.pop("per_seed") == second.pop("per_seed")
    ratio = second["compile_seconds"] / first["compile_seconds"]
    return {
        "command": f"poison-jax run --preset {PRESET}" + "".join(f" --set {f}" for f in sets) + " --cache-dir DIR",
        "first": first,
        "second": second,
        "same_results": same,
        "second_over_first": ratio,
        "goals": {"second_run_compile": ratio},
    }


def markdown(result: dict) -> str:
    rows = [
        f"| {name} | {result['first']['events_seconds'][name]:.2f} | {result['second']['events_seconds'][name]:.2f} |"
        for name in EVENTS
    ]
    first, second = result["first"], result["second"]
    return "\n".join(
        [
            f"`{result['command']}`, twice, each in a fresh process, with one cache folder: the second run "
            f"compiles for **{second['compile_seconds']:.2f} s** against the first's {first['compile_seconds']:.2f} s "
            f"(**{result['second_over_first']:.1%}**); the same results: {result['same_results']}.",
            "",
            "| | first run | second run |",
            "|---|---:|---:|",
            f"| compile time of the records (s) | {first['compile_seconds']:.2f} | {second['compile_seconds']:.2f} |",
            f"| wall time of the records (s) | {first['wall_seconds']:.2f} | {second['wall_seconds']:.2f} |",
            f"| programs lowered | {first['programs']} | {second['programs']} |",
            *rows,
        ]
    )


def main(argv=None) -> dict:
    return harness.main("compile_cache", __doc__, run, markdown, argv)


if __name__ == "__main__":
    main()
