"""Time of ``import poison_jax`` in a fresh interpreter (goal: under 2 s), and what it loads.

Each sample is a new ``python -c "import poison_jax"`` process; the import is timed inside it
(``time.perf_counter`` around the import), so interpreter start-up is not counted. The first
sample warms the file-system cache and is dropped.

    python -m benchmarks.import_time [--quick] [--out benchmarks/results]

Writes ``import_time.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from benchmarks.common import add_common_args, environment, write_results

_PROBE = (
    "import sys, time; t = time.perf_counter(); import poison_jax; t = time.perf_counter() - t; "
    "import json; print(json.dumps({'seconds': t, 'heavy': sorted(m for m in sys.modules "
    "if m.split('.')[0] in ('matplotlib', 'tensorflow_datasets', 'tensorflow') or m == 'poison_jax.face.plots')}))"
)


def run(quick: bool = False) -> dict:
    samples = []
    for _ in range(4 if quick else 11):
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
        samples.append(json.loads(done.stdout))
    seconds = [s["seconds"] for s in samples[1:]]
    median = statistics.median(seconds)
    return {
        "benchmark": "import_time",
        "quick": quick,
        "median_s": median,
        "min_s": min(seconds),
        "max_s": max(seconds),
        "heavy_modules_loaded": samples[-1]["heavy"],
        "goals": {"import poison_jax seconds <= 2": median},
        **environment(),
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, "import_time")
    args = parser.parse_args(argv)
    result = run(quick=args.quick)
    write_results(args.out, "import_time", result, markdown(result))
    return result


if __name__ == "__main__":
    main()
