"""Wall time of the strong mnist5k sweep, as a user runs it (goal: at most 2 minutes on 2 CPU cores).

Runs ``poison-jax run --preset mnist5k-lr-strong --no-progress`` in a fresh process (4 Λ settings
x 6 fractions x 10 seeds, compilation included: the whole command is timed) and records its table,
the wall time of each cell and the machine. ``--quick`` runs 2 seeds, one poison batch and one
hyperiteration a cell (seconds; not the goal's setting).

    python -m benchmarks.strong_sweep [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import add_common_args, environment, jsonable, select_device, write_results

PRESET = "mnist5k-lr-strong"
QUICK_SETS = ("num_seeds=2", "num_batches=1", "iters_fixed=1", "iters_clean=1", "iters_multi=1")


def run(quick: bool = False, device: str | None = None) -> dict:
    from poison_jax.face import plots

    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-m",
            "poison_jax.face.cli",
            "run",
            "--preset",
            PRESET,
            "--out",
            tmp,
            "--no-progress",
        ]
        for field in QUICK_SETS if quick else ():
            command += ["--set", field]
        start = time.perf_counter()
        env = {**os.environ, **({"JAX_PLATFORMS": {"cpu": "cpu", "gpu": "cuda"}[device]} if device else {})}
        proc = subprocess.run(command, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        if proc.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
        records = [json.loads(line) for line in (Path(tmp) / "results.jsonl").read_text().splitlines()]
        first_line = proc.stdout.splitlines()[0] if proc.stdout else ""
    cell_seconds: dict[str, list[float]] = {}
    for record in records:
        cell_seconds.setdefault(record["setting"], []).append(record["wall_time_s"])
    minutes = seconds / 60
    return {
        "benchmark": "strong_sweep",
        "quick": quick,
        **environment(),
        "command": "poison-jax run --preset " + PRESET + "".join(f" --set {f}" for f in (QUICK_SETS if quick else ())),
        "devices_line": first_line,
        "wall_seconds": seconds,
        "minutes": minutes,
        "cell_seconds": cell_seconds,
        "table": plots.summary_table(records),
        "goals": {"strong sweep minutes <= 2 (2 CPU cores)": minutes},
    }


def markdown(result: dict) -> str:
    cells = "\n".join(
        f"| {setting} | {' / '.join(f'{s:.1f}' for s in seconds)} | {sum(seconds):.1f} |"
        for setting, seconds in result["cell_seconds"].items()
    )
    return (
        f"`{result['command']}` ({result['cpu_count']} cores, JAX {result['jax_version']}; the sweep's "
        f'first line: "{result["devices_line"]}"): **{result["wall_seconds"]:.0f} s** '
        f"({result['minutes']:.2f} min) for the whole command, compilation included.\n\n"
        f"{result['table']}\n\n| setting | seconds per cell (0..) | sum |\n|---|---|---:|\n{cells}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, "strong_sweep")
    args = parser.parse_args(argv)
    select_device(args.device)
    result = run(args.quick, args.device)
    write_results(args.out, "strong_sweep", jsonable(result), markdown(result))
    return result


if __name__ == "__main__":
    main()
