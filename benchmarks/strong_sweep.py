"""Wall time of the strong mnist5k sweep, as a user runs it (goal ``strong_sweep_minutes``: at most 2 minutes
on 2 CPU cores).

Runs ``poison-jax run --preset mnist5k-lr-strong --no-progress`` in a fresh process (4 Λ settings
x 6 fractions x 10 seeds, compilation included: the whole command is timed) and records its table,
the wall time of each cell and the machine. ``--quick`` runs 2 seeds, one poison batch and one
hyperiteration a cell (seconds; not the goal's setting).

    python -m benchmarks.strong_sweep [--quick] [--out benchmarks/results]
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

PRESET = "mnist5k-lr-strong"
QUICK_SETS = (
    "sweep.num_seeds=2",
    "attack.num_batches=1",
    "attack.iters_fixed=1",
    "attack.iters_clean=1",
    "attack.iters_multi=1",
)


def _sweep(sets: tuple, device: str | None) -> tuple[float, list[dict], str]:
    """Run the preset's sweep in a fresh process, compiling everything (no persistent cache): wall
    seconds, its records, the line that says where its seeds run."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "poison_jax.face.cli", "run", "--preset", PRESET, "--out", tmp]
        command += ["--no-progress", "--no-cache", *(arg for field in sets for arg in ("--set", field))]
        env = {**os.environ, **({"JAX_PLATFORMS": {"cpu": "cpu", "gpu": "cuda"}[device]} if device else {})}
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        if proc.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
        records = [json.loads(line) for line in (Path(tmp) / "results.jsonl").read_text().splitlines()]
    return seconds, records, next((line for line in proc.stdout.splitlines() if "device(s)" in line), "")


def run(args) -> dict:
    from poison_jax.face import plots

    sets = QUICK_SETS if args.quick else ()
    seconds, records, first_line = _sweep(sets, args.device)
    cell_seconds: dict[str, list[float]] = {}
    for record in records:
        cell_seconds.setdefault(record["setting"], []).append(record["wall_time_s"])
    return {
        "command": "poison-jax run --preset " + PRESET + "".join(f" --set {f}" for f in sets) + " --no-cache",
        "devices_line": first_line,
        "wall_seconds": seconds,
        "minutes": seconds / 60,
        "cell_seconds": cell_seconds,
        "table": plots.summary_table(records),
        "goals": {"strong_sweep_minutes": seconds / 60},
    }


def markdown(result: dict) -> str:
    cells = "\n".join(
        f"| {setting} | {' / '.join(f'{s:.1f}' for s in seconds)} | {sum(seconds):.1f} |"
        for setting, seconds in result["cell_seconds"].items()
    )
    return (
        f"`{result['command']}` ({result['cpu_count']} cores, JAX {result['jax_version']}; the sweep's "
        f'devices line: "{result["devices_line"]}"): **{result["wall_seconds"]:.0f} s** '
        f"({result['minutes']:.2f} min) for the whole command, compilation included.\n\n"
        f"{result['table']}\n\n| setting | seconds per cell (0..) | sum |\n|---|---|---:|\n{cells}"
    )


def main(argv=None) -> dict:
    return harness.main("strong_sweep", __doc__, run, markdown, argv)


if __name__ == "__main__":
    main()
