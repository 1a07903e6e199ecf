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

from benchmarks import harness
from benchmarks.problems import attack_setup
from poison_jax.poisoning import _progress, attack, models

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
# "no measurable cost": within the noise of a shared machine
GOAL = harness.Goal("progress_overhead", "progress", 1.05, f"reporting / silent ({', '.join(GOAL_CASES)})")


def case_calls(sizes: dict) -> tuple[dict, list]:
    model = models.logistic_regression(sizes["d"])
    settings, splits, state = attack_setup(sizes, model, log_lam=1.6, batch=sizes["n_poison"])
    reports: list[int] = []
    iters = sizes["iters"]

    def every_iteration():
        seconds, _progress.REPORT_SECONDS = _progress.REPORT_SECONDS, 0.0
        try:
            return attack.run_attack(settings, splits, state, num_iters=iters, progress=reports.append)
        finally:
            _progress.REPORT_SECONDS = seconds

    calls = {
        "silent": lambda: attack.run_attack(settings, splits, state, num_iters=iters),
        "reporting": lambda: attack.run_attack(settings, splits, state, num_iters=iters, progress=reports.append),
        "every_iteration": every_iteration,
    }
    return calls, reports


def case_row(name: str, sizes: dict, repeats: int) -> dict:
    calls, reports = case_calls(sizes)
    times = harness.median_times(calls, repeats=repeats)
    if not reports or reports[-sizes["iters"] :] != list(range(1, sizes["iters"] + 1)):
        raise RuntimeError(f"{name}: the reports were {reports[-5:]}, not 1..{sizes['iters']}")
    return {
        "case": name,
        "sizes": sizes,
        "silent_ms": 1e3 * times["silent"],
        "reporting_ms": 1e3 * times["reporting"],
        "every_iteration_ms": 1e3 * times["every_iteration"],
        "ratio": times["reporting"] / times["silent"],
        "every_iteration_ratio": times["every_iteration"] / times["silent"],
        "per_report_us": 1e6 * (times["every_iteration"] - times["silent"]) / sizes["iters"],
    }


def run(args) -> dict:
    repeats = 5 if args.quick else 15
    rows = [case_row(name, sizes, repeats) for name, sizes in (QUICK if args.quick else CASES).items()]
    worst = max(row["ratio"] for row in rows if row["case"] in GOAL_CASES)
    return {"repeats": repeats, "rows": rows, "goals": {GOAL.id: worst}, "goal_met": GOAL.met(worst)}


def markdown(result: dict) -> str:
    lines = [
        "| case | hyperiterations | silent (ms) | reporting (ms) | ratio | each reported (ms) | ratio | µs a report |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['case']} | {row['sizes']['iters']} | {row['silent_ms']:.2f} | {row['reporting_ms']:.2f} | "
            f"{row['ratio']:.3f} | {row['every_iteration_ms']:.2f} | {row['every_iteration_ratio']:.3f} | "
            f"{row['per_report_us']:.0f} |"
        )
    return "\n".join(lines) + (
        f"\n\nWorst ratio of {', '.join(GOAL_CASES)}: {result['goals'][GOAL.id]:.3f} (goal <= {GOAL.target}); "
        f"median of {result['repeats']} interleaved rounds. 'reporting' is what run_attack does (every "
        "hyperiteration when they are slow, about 20 reports a second when fast); 'each reported' forces a "
        "report after every hyperiteration."
    )


def main(argv=None) -> dict:
    return harness.main("progress", __doc__, run, markdown, argv)


if __name__ == "__main__":
    main()
