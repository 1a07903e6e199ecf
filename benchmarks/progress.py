"""What reporting progress costs: ``attack.run_attack`` with a progress function against without.

``run_attack(..., progress=f)`` calls ``f`` after every hyperiteration from inside the compiled
``lax.scan`` (``jax.debug.callback``), every hyperiteration when they are slow and about 20 times a
second when they are fast; without ``progress`` nothing is reported. Both run the same
hyperiterations; the ratio of their median times (interleaved rounds) is the cost of the reports.
``every_iteration`` forces a report after each hyperiteration, to show what a report costs.

* ``paper LR``: the paper's MNIST-shape logistic regression (d = 784, 512 training rows of which 85
  poison, 171 validation, RMD through T = 150 steps), 10 seeds, 5 multiobjective hyperiterations;
* ``digits-lr``: the preset's shape (d = 64, 200 training rows, 35 poison, T = 100), 10 seeds,
  10 hyperiterations;
* ``tiny``: d = 64, 128 training rows, T = 20, 4 seeds, 20 hyperiterations of half a millisecond --
  not a goal: it shows the fixed cost of the reporting loop (the goal is about the presets' steps).

    python -m benchmarks.progress [--quick] [--out benchmarks/results] [--device cpu|gpu]
"""

from __future__ import annotations

import argparse

import jax

from benchmarks.attack_step import random_splits
from benchmarks.common import add_common_args, environment, median_times, select_device, write_results
from poison_jax.engine import RMD
from poison_jax.poisoning import attack, models

CASES = {
    "paper LR": dict(d=784, n_train=512, n_val=171, n_poison=85, steps=150, lr=0.1, seeds=10, iters=5),
    "digits-lr": dict(d=64, n_train=200, n_val=70, n_poison=35, steps=100, lr=0.5, seeds=10, iters=10),
    "tiny": dict(d=64, n_train=128, n_val=50, n_poison=17, steps=20, lr=0.5, seeds=4, iters=20),
}
QUICK = {
    "paper LR": dict(d=128, n_train=128, n_val=50, n_poison=17, steps=30, lr=0.1, seeds=4, iters=5),
    "digits-lr": dict(d=64, n_train=200, n_val=70, n_poison=35, steps=50, lr=0.5, seeds=4, iters=5),
    "tiny": dict(d=64, n_train=128, n_val=50, n_poison=17, steps=20, lr=0.5, seeds=4, iters=10),
}
GOAL_CASES = ("paper LR", "digits-lr")  # the presets' steps; "tiny" shows the fixed cost of a report
GOAL = 1.05  # "no measurable cost": within the noise of a shared machine


def case_calls(sizes: dict) -> tuple[dict, list]:
    splits = random_splits(**sizes)
    settings = attack.AttackSettings(
        models.logistic_regression(sizes["d"]),
        RMD(steps=sizes["steps"], lr=sizes["lr"]),
        alpha=0.99,
        beta=0.8,
        x_box=(0.0, 1.0),
        lam_box=(-8.0, 5.3),
    )
    keys = jax.random.split(jax.random.PRNGKey(0), sizes["seeds"])
    state = attack.init_attack(settings, keys, splits, sizes["n_poison"], 1.6)
    state = attack.set_poison_count(state, sizes["n_poison"], sizes["n_poison"])
    reports: list[int] = []
    iters = sizes["iters"]

    def every_iteration():
        seconds, attack._REPORT_SECONDS = attack._REPORT_SECONDS, 0.0
        try:
            return attack.run_attack(settings, splits, state, num_iters=iters, progress=reports.append)
        finally:
            attack._REPORT_SECONDS = seconds

    calls = {
        "silent": lambda: attack.run_attack(settings, splits, state, num_iters=iters),
        "reporting": lambda: attack.run_attack(settings, splits, state, num_iters=iters, progress=reports.append),
        "every_iteration": every_iteration,
    }
    return calls, reports


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, "progress")
    args = parser.parse_args(argv)
    select_device(args.device)
    cases = QUICK if args.quick else CASES
    repeats = 5 if args.quick else 15
    rows = []
    for name, sizes in cases.items():
        calls, reports = case_calls(sizes)
        times = median_times(calls, repeats=repeats)
        assert reports and reports[-sizes["iters"] :] == list(range(1, sizes["iters"] + 1)), reports[-5:]
        rows.append(
            {
                "case": name,
                "sizes": sizes,
                "silent_ms": 1e3 * times["silent"],
                "reporting_ms": 1e3 * times["reporting"],
                "every_iteration_ms": 1e3 * times["every_iteration"],
                "ratio": times["reporting"] / times["silent"],
                "every_iteration_ratio": times["every_iteration"] / times["silent"],
                "per_report_us": 1e6 * (times["every_iteration"] - times["silent"]) / sizes["iters"],
            }
        )
    worst = max(row["ratio"] for row in rows if row["case"] in GOAL_CASES)
    result = {
        "environment": environment(),
        "quick": args.quick,
        "repeats": repeats,
        "rows": rows,
        "goals": {
            f"reporting / silent <= {GOAL} ({', '.join(GOAL_CASES)})": {
                "value": worst,
                "target": GOAL,
                "met": worst <= GOAL,
            }
        },
    }
    lines = [
        "| case | hyperiterations | silent (ms) | reporting (ms) | ratio | each reported (ms) | ratio | µs a report |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['sizes']['iters']} | {row['silent_ms']:.2f} | {row['reporting_ms']:.2f} | "
            f"{row['ratio']:.3f} | {row['every_iteration_ms']:.2f} | {row['every_iteration_ratio']:.3f} | "
            f"{row['per_report_us']:.0f} |"
        )
    table = "\n".join(lines) + (
        f"\n\nWorst ratio of {', '.join(GOAL_CASES)}: {worst:.3f} (goal <= {GOAL}); median of {repeats} "
        "interleaved rounds. 'reporting' is what run_attack does (every hyperiteration when they are slow, about "
        "20 reports a second when fast); 'each reported' forces a report after every hyperiteration."
    )
    write_results(args.out, "progress", result, table)
    return result


if __name__ == "__main__":
    main()
