"""The secml half of the secml-vs-poison_jax benchmark: run secml's attack on every split.

    python benchmarks/secml_half.py [--venv PATH] [--force]

Makes (or reuses) the secml virtualenv (``secml_env.py``), then runs ``secml_worker.py`` in it for
digits 0 v 8 (seeds 0-4, 0/6/13/19/26 poison points) and MNIST-5k 0 v 8 (seeds 0-2, 17/34 points),
one dataset after the other, and writes ``benchmarks/results/secml_digits.json`` and
``secml_mnist5k.json``. A results file with the same seeds and counts is reused unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

if __package__:
    from .secml_env import DEFAULT_PATH, ensure_secml_venv
else:
    from secml_env import DEFAULT_PATH, ensure_secml_venv

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RUNS = {
    "digits": {"seeds": [0, 1, 2, 3, 4], "counts": [0, 6, 13, 19, 26]},
    "mnist5k": {"seeds": [0, 1, 2], "counts": [17, 34]},
}


def _up_to_date(path: Path, seeds: list[int], counts: list[int]) -> bool:
    """Return whether ``path`` holds secml results for exactly these seeds and counts."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return report.get("tool") == "secml" and report.get("seeds") == seeds and report.get("counts") == counts


def run_secml_half(venv: Path = DEFAULT_PATH, force: bool = False) -> dict[str, Path]:
    """Run (or reuse) every secml run in ``RUNS``; return the results file of each dataset."""
    python = ensure_secml_venv(venv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    outputs = {}
    for dataset, run in RUNS.items():
        out = outputs[dataset] = RESULTS / f"secml_{dataset}.json"
        if not force and _up_to_date(out, run["seeds"], run["counts"]):
            print(f"{dataset}: reusing {out}")
            continue
        print(f"{dataset}: running secml, seeds {run['seeds']}, counts {run['counts']}", flush=True)
        subprocess.run(
            [
                str(python),
                str(HERE / "secml_worker.py"),
                "--dataset",
                dataset,
                "--seeds",
                *map(str, run["seeds"]),
                "--counts",
                *map(str, run["counts"]),
                "--out",
                str(out),
            ],
            check=True,
        )
    return outputs


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=DEFAULT_PATH, help="the secml virtualenv's folder")
    parser.add_argument("--force", action="store_true", help="rerun even when results files match")
    args = parser.parse_args()
    for path in run_secml_half(args.venv, args.force).values():
        print(path)
