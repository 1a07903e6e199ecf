"""Time of ``import poison_jax`` in a fresh interpreter (goal ``import_seconds``: under 2 s), and what it loads.

Each sample is a new ``python -c "import poison_jax"`` process; the import is timed inside it
(``time.perf_counter`` around the import), so interpreter start-up is not counted. The first
sample warms the file-system cache and is dropped.

    python -m benchmarks.import_time [--quick] [--out benchmarks/results]

Writes ``import_time.json`` and ``import_time.md``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

from benchmarks import harness

_PROBE = (
    "import sys, time; t = time.perf_counter(); import poison_jax; t = time.perf_counter() - t; "
    "import json; print(json.dumps({'seconds': t, 'heavy': sorted(m for m in sys.modules "
    "if m.split('.')[0] in ('matplotlib', 'tensorflow_datasets', 'tensorflow') or m == 'poison_jax.face.plots')}))"
)


def run(args) -> dict:
    samples = []
    for _ in range(4 if args.quick else 11):
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
        samples.append(json.loads(done.stdout))
    seconds = [s["seconds"] for s in samples[1:]]
    median = statistics.median(seconds)
    return {
        "median_s": median,
        "min_s": min(seconds),
        "max_s": max(seconds),
        "heavy_modules_loaded": samples[-1]["heavy"],
        "goals": {"import_seconds": median},
    }


def markdown(result: dict) -> str:
    return "\n".join(
        [
            "| import poison_jax | median (s) | min | max | heavy modules loaded |",
            "|---|---:|---:|---:|---|",
            f"| fresh interpreter | {result['median_s']:.2f} | {result['min_s']:.2f} | {result['max_s']:.2f} "
            f"| {', '.join(result['heavy_modules_loaded']) or 'none'} |",
        ]
    )


def main(argv=None) -> dict:
    return harness.main("import_time", __doc__, run, markdown, argv)


if __name__ == "__main__":
    main()
