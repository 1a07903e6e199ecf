"""Wall time of the mnist5k sweeps as a user runs them, compilation included (goals
``paper_sweep_minutes``: at most 2 minutes, and ``strong_sweep_minutes``: at most 1 minute, on 2 CPU
cores).

Runs ``poison-jax run --preset P --no-progress --no-cache`` in a fresh process for ``P`` =
``mnist5k-lr`` (the paper's attack: RMD through 150 steps, 4 Λ settings x 6 fractions x 10 seeds x
100 hyperiterations) and ``mnist5k-lr-strong`` (the strong attack), each timed whole, and records
their tables, the wall time of each cell and the machine. ``--quick`` runs the strong command alone
with 2 seeds, one poison batch and one hyperiteration a cell (seconds; not the goals' setting).

    python -m benchmarks.sweeps [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import harness

PRESETS = {"paper": "mnist5k-lr", "strong": "mnist5k-lr-strong"}
QUICK_SETS = (
    "sweep.num_seeds=2",
    "attack.num_batches=1",
    "attack.iters_fixed=1",
    "attack.iters_clean=1",
    "attack.iters_multi=1",
    "method.steps=10",
)


def _sets(preset: str, quick: bool) -> tuple[str, ...]:
    if not quick:
        return ()
    return tuple(s for s in QUICK_SETS if not (s.startswith("method.steps") and preset.endswith("strong")))


def sweep_command(preset: str, sets: tuple, device: str | None) -> tuple[float, list[dict], str]:
    """Run ``preset``'s sweep in a fresh process, compiling everything (no persistent cache): wall
    seconds, its records, the line that says where its seeds run."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "poison_jax.face.cli", "run", "--preset", preset, "--out", tmp]
        command += ["--no-progress", "--no-cache", *(arg for field in sets for arg in ("--set", field))]
        env = {**os.environ, **({"JAX_PLATFORMS": {"cpu": "cpu", "gpu": "cuda"}[device]} if device else {})}
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        if proc.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
        records = [json.loads(line) for line in (Path(tmp) / "results.jsonl").read_text().splitlines()]
    return seconds, records, next((line for line in proc.stdout.splitlines() if "device(s)" in line), "")


def _one(preset: str, quick: bool, device: str | None) -> dict:
    from poison_jax.face import plots

    sets = _sets(preset, quick)
    seconds, records, devices_line = sweep_command(preset, sets, device)
    cell_seconds: dict[str, list[float]] = {}
    for record in records:
        cell_seconds.setdefault(record["setting"], []).append(record["wall_time_s"])
    return {
        "command": f"poison-jax run --preset {preset}" + "".join(f" --set {f}" for f in sets) + " --no-cache",
        "devices_line": devices_line,
        "wall_seconds": seconds,
        "minutes": seconds / 60,
        "compile_seconds": sum(record["compile_time_s"] for record in records),
        "cell_seconds": cell_seconds,
        "table": plots.summary_table(records),
    }


def run(args) -> dict:
    # --quick (a smoke test, not the goals' setting) runs the strong command alone: the paper's
    # path is the one every tiny sweep of the test suite runs.
    names = ("strong",) if args.quick else tuple(PRESETS)
    result = {name: _one(PRESETS[name], args.quick, args.device) for name in names}
    result["goals"] = {f"{name}_sweep_minutes": result[name]["minutes"] if name in result else None for name in PRESETS}
    return result


def markdown(result: dict) -> str:
    parts = []
    for name in (name for name in PRESETS if name in result):
        r = result[name]
        cells = "\n".join(
            f"| {setting} | {' / '.join(f'{s:.1f}' for s in seconds)} | {sum(seconds):.1f} |"
            for setting, seconds in r["cell_seconds"].items()
        )
        parts.append(
            f"`{r['command']}` ({result['cpu_count']} cores, JAX {result['jax_version']}; the sweep's "
            f'devices line: "{r["devices_line"]}"): **{r["wall_seconds"]:.0f} s** ({r["minutes"]:.2f} min) for '
            f"the whole command, of which compiling {r['compile_seconds']:.1f} s.\n\n"
            f"{r['table']}\n\n| setting | seconds per cell (0..) | sum |\n|---|---|---:|\n{cells}"
        )
    return "\n\n".join(parts)


def main(argv=None) -> dict:
    return harness.main("sweeps", __doc__, run, markdown, argv)


if __name__ == "__main__":
    main()
