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
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.harness import module_command
from benchmarks.summary import BENCHMARKS, summarise, summary_markdown

# Rough seconds of each on 2 idle CPU cores, compilation included: (full run, --quick). With --jobs N
# the longest start first, so that the last to finish is a short one.
EXPECTED_SECONDS = {
    "accuracy": (360, 33),
    "attack_step": (120, 20),
    "batching": (120, 22),
    "scaling": (120, 12),
    "hypergrad": (30, 6),
    "peer": (18, 3),
    "engine_peers": (120, 30),
    "import_time": (18, 6),
    "sweeps": (240, 60),
    "compile_cache": (40, 15),
    "kernel_launches": (420, 20),
}


def _run_one(name: str, args) -> dict:
    cmd = module_command(name, "--out", str(args.out), quick=args.quick, device=args.device)
    start = time.perf_counter()
    with open(Path(args.out) / f"{name}.log", "w") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    print(f"{name}: {'ok' if code == 0 else f'FAILED (exit {code}), see {name}.log'} in {seconds:.0f} s", flush=True)
    return {"returncode": code, "seconds": seconds, "quick": args.quick}


def _parser() -> argparse.ArgumentParser:
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
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    names = [n for n in BENCHMARKS if args.only is None or n in args.only]
    if args.jobs > 1:
        names.sort(key=lambda n: -EXPECTED_SECONDS[n][1 if args.quick else 0])
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        status = dict(zip(names, pool.map(lambda n: _run_one(n, args), names), strict=True))
    summary = summarise(args.out, status, quick=args.quick)
    print()
    print(summary_markdown(summary))
    print(f"\nwrote {Path(args.out) / 'summary.json'}")
    return 1 if any(s["returncode"] for s in status.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
