"""Time of the forward unroll, RMD and IFT on logistic regression of MNIST shape.

d = 784, 512 training rows of which 85 are poison (the hyperparameters, with log-λ), 171
validation rows, T = 150 steps of gradient descent, random data of that shape
(:func:`benchmarks.problems.logistic_problem`), float32. Goal ``rmd_over_forward``: RMD <= 2.5x
the forward unroll, measured in one run.

    python -m benchmarks.hypergrad [--quick] [--out benchmarks/results] [--device cpu|gpu]

Writes ``hypergrad.json`` and ``hypergrad.md``.
"""

from __future__ import annotations

from benchmarks import engine_calls as ec
from benchmarks import harness
from benchmarks.problems import logistic_problem

SIZES = dict(d=784, n_train=512, n_poison=85, n_val=171, steps=150, lr=0.1, repeats=50)
QUICK = dict(d=64, n_train=128, n_poison=20, n_val=50, steps=30, lr=0.1, repeats=5)


def calls(sizes: dict) -> dict:
    """The five timed calls on one problem."""
    inner, outer, w0, theta, data = logistic_problem(*(sizes[k] for k in ("d", "n_train", "n_poison", "n_val")))
    steps, lr = sizes["steps"], sizes["lr"]
    rmd = ec.rmd_method(steps, lr)
    w_star = ec.fit(rmd, inner, w0, theta, data)
    ift = ec.ift_method(steps, lr, cg_iters=50, cg_tol=1e-6)
    return {
        "forward unroll": lambda: ec.fit(rmd, inner, w0, theta, data),
        "RMD": lambda: ec.rmd(inner, outer, w0, theta, data, steps=steps, lr=lr),
        "RMD, checkpointed": lambda: ec.rmd(inner, outer, w0, theta, data, steps=steps, lr=lr, checkpoint=True),
        "IFT solve (given w*)": lambda: ec.ift_at(inner, outer, w_star, theta, data, cg_iters=50, cg_tol=1e-6)[:2],
        "IFT incl. training": lambda: ec.hypergrad(ift, inner, outer, w0, theta, data)[:2],
    }


def run(args) -> dict:
    sizes = QUICK if args.quick else SIZES
    times = harness.median_times(calls(sizes), repeats=sizes["repeats"])
    forward = times["forward unroll"]
    rows = [{"method": name, "median_ms": 1e3 * t, "ratio_to_forward": t / forward} for name, t in times.items()]
    problem = {k: v for k, v in sizes.items() if k != "repeats"}
    return {
        "problem": {**problem, "dtype": "float32", "model": "logistic regression"},
        "rows": rows,
        "goals": {"rmd_over_forward": times["RMD"] / forward},
    }


def markdown(result: dict) -> str:
    lines = ["| method | median (ms) | × forward unroll |", "|---|---:|---:|"]
    lines += [f"| {r['method']} | {r['median_ms']:.3f} | {r['ratio_to_forward']:.2f} |" for r in result["rows"]]
    return "\n".join(lines)


def main(argv=None) -> dict:
    return harness.main("hypergrad", __doc__, run, markdown, argv)


if __name__ == "__main__":
    main()
