"""Dense Newton against Newton-CG: where a materialised, factored Hessian pays.

(a) The strong digits attack of the secml head-to-head (digits 0 v 8, 128 / 64 / 160, seeds 0-4,
add mode, log λ = log 0.01 fixed, 50 hyperiterations, Armijo steps on the poison points, box
[0, 1]; poison counts 6 / 13 / 19 / 26), all seeds in one vmapped call, with its method
``Implicit(NewtonCG(tol=1e-5), cg_iters=200, cg_tol=1e-5, damping=1e-4)`` and with
``ImplicitDense(tol=1e-5, damping=1e-4)`` (dense Newton; the adjoint by the solver's Cholesky
factor at w*). Timed: the attack warm (median of interleaved rounds after the first call, which
compiles), summed over the counts. Goal ``dense_over_newton_cg``: dense / Newton-CG <= 0.5. The victims
(liblinear ``LogisticRegression(C=100)`` refit on each poisoned set) must err alike: the table
gives their test errors per count (mean ± std over the seeds).

(b) The crossover: one hypergradient (inner solve + implicit adjoint) of L2 logistic regression
on random data (:func:`benchmarks.problems.logistic_problem`: n = 512 rows of which 17 poison,
128 validation rows, log λ = log 0.05, float32), parameter counts p = d + 1 for d in 64, 256,
784, 2048, 4096; both methods as in (a), from w0 = 0 (cold) and from the Warm of the previous
hyperiteration (poison rows moved by 0.01 N(0, 1); what a hyperiteration of an attack costs).
The crossover is the largest p at which dense is not slower, warm.

    python -m benchmarks.dense_solver [--quick] [--out benchmarks/results] [--device cpu|gpu]

``--quick``: 2 seeds, 5 hyperiterations, 6 poison points; d = 64 (about 20 s, compiling). Writes
``dense_solver.json`` and ``dense_solver.md``. Timings on a shared machine: the load is recorded.
LAPACK runs one OpenBLAS thread a call (``OPENBLAS_NUM_THREADS=1`` unless set): with its own
threads beside XLA's on 2 busy cores a Cholesky was 10-250x slower (p = 257: 124 ms against 0.47 ms).
"""

from __future__ import annotations

import math
import os

# LAPACK (jaxlib calls scipy's OpenBLAS) one thread a call, set before OpenBLAS loads: its threads
# spin beside XLA's pool, and on 2 busy cores a p = 257 Cholesky took 124 ms against 0.47 ms.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from benchmarks import engine_calls as ec  # noqa: E402
from benchmarks import harness  # noqa: E402
from benchmarks.h2h_jax import STRONG  # noqa: E402
from benchmarks.h2h_splits import load_split  # noqa: E402
from benchmarks.problems import logistic_problem  # noqa: E402
from poison_jax import engine  # noqa: E402
from poison_jax.poisoning import attack, data, models  # noqa: E402

ATTACK = dict(seeds=(0, 1, 2, 3, 4), counts=(6, 13, 19, 26), iters=50, repeats=5)
QUICK_ATTACK = dict(seeds=(0, 1), counts=(6,), iters=5, repeats=2)
CROSSOVER = dict(ds=(64, 256, 784, 2048, 4096), n_train=512, n_poison=17, n_val=128, repeats=3)
QUICK_CROSSOVER = dict(CROSSOVER, ds=(64,), repeats=2)
C = 100.0  # secml's; this project's log λ = log(1 / C)
DAMPING = 1e-4


def methods() -> dict:
    """The two methods compared: the strong attack's (Newton-CG, CG adjoint) and the dense one."""
    return {
        "newton-cg": ec.implicit_method(ec.newton_cg(1e-5, maxiter=100), 200, 1e-5, damping=DAMPING),
        "dense": ec.implicit_dense_method(1e-5, maxiter=100, damping=DAMPING),
    }


# ------------------------------------------------------------------------------- (a) the attack


def _digits(seeds):
    parts = [load_split("digits", s) for s in seeds]
    stack = lambda i, j: jnp.asarray(np.stack([p[i][j] for p in parts]), jnp.float32)  # noqa: E731
    return data.Splits(stack(0, 0), stack(0, 1), stack(1, 0), stack(1, 1), None, None), [p[2] for p in parts]


def victim_error(x, y, x_test, y_test) -> float:
    """Test error of liblinear ``LogisticRegression(C=100)`` fitted on ``(x, y)``."""
    return float(np.mean(LogisticRegression(C=C, solver="liblinear").fit(x, y).predict(x_test) != y_test))


def _settings(method, n_features: int) -> attack.AttackSettings:
    """The secml head-to-head's strong attack (``benchmarks.h2h_jax.STRONG``) with ``method``."""
    return attack.AttackSettings(models.logistic_regression(n_features), **{**STRONG, "method": method})


def attack_rows(spec: dict) -> list[dict]:
    """Per poison count and method: the attack's first-call seconds (compiling) and warm seconds (all
    seeds; median of interleaved rounds), and the victims' test errors per seed."""
    splits, tests = _digits(spec["seeds"])
    keys = jax.random.split(jax.random.PRNGKey(0), len(spec["seeds"]))
    rows = []
    for count in spec["counts"]:
        runs, row = {}, {"count": count}
        for name, method in methods().items():
            settings = _settings(method, splits.x_train.shape[-1])
            state = attack.init_attack(settings, keys, splits, count, math.log(1.0 / C))
            state = attack.set_poison_count(state, count, count)
            run = lambda st=settings, s=state: attack.run_attack(  # noqa: E731
                st, splits, s, num_iters=spec["iters"], update_xp=True, update_lam=False
            )
            runs[name] = lambda run=run: run()[0]  # noqa: E731
            first = harness.first_call_seconds(runs[name])  # compiles
            final, info = run()
            x, y, w = (np.asarray(a) for a in attack.poisoned_training_set(splits, final, settings.mode))
            row[name] = {
                "first_call_s": first,
                "errors": [victim_error(x[s][w[s] > 0], y[s][w[s] > 0], *tests[s]) for s in range(len(tests))],
                "unconverged": np.asarray(final.unconverged_solves).tolist(),
                # per hyperiteration, mean over seeds and hyperiterations: what each method's solves did
                "mean_steps": {k: float(np.mean(v)) for k, v in info.stats.items() if k.endswith("_steps")},
            }
        for name, t in harness.time_calls(runs, repeats=spec["repeats"], warmup=0).items():
            row[name] |= {"warm_s": t.median, "warm_min_s": t.minimum}
        rows.append(row)
    return rows


def factor_in_cg_steps(spec: dict) -> dict:
    """At the attack's size (p = 65; 128 clean rows and the largest count of poison rows, log λ =
    log 0.01): one dense factor (the Hessian by ``jax.hessian`` and its Cholesky, what
    :class:`~poison_jax.engine.DenseNewton` adds to a hypergradient) against one Hessian-vector CG
    step (of 50 run), in ms, and the factor's price in CG steps."""
    inner, _, w0, theta, arrays = logistic_problem(64, 128, max(spec["counts"]), 64)
    theta = {**theta, "log_lam": jnp.full_like(theta["log_lam"], math.log(1.0 / C))}
    flat_w, unravel = ravel_pytree(w0)
    flat_inner = lambda w: inner(unravel(w), theta, arrays)  # noqa: E731
    factor = jax.jit(lambda w: engine.DenseNewton(damping=DAMPING).factor(flat_inner, w))
    cg = jax.jit(lambda w: ec.cg_steps(lambda u, th: flat_inner(u), w, theta, jnp.ones_like(w), 50))
    times = harness.time_calls({"factor": lambda: factor(flat_w), "cg50": lambda: cg(flat_w)}, repeats=20)
    factor_ms, cg_step_ms = 1e3 * times["factor"].median, 1e3 * times["cg50"].median / 50
    ratio = factor_ms / cg_step_ms
    return {"p": flat_w.size, "factor_ms": factor_ms, "cg_step_ms": cg_step_ms, "factor_in_cg_steps": ratio}


# ---------------------------------------------------------------------------- (b) the crossover


def crossover_row(d: int, spec: dict) -> dict:
    """One hypergradient of each method at ``p = d + 1``, cold and warm: median ms, and the cosine
    between the two methods' hypergradients (both converged: they should agree)."""
    inner, outer_loss, w0, theta, arrays = logistic_problem(d, spec["n_train"], spec["n_poison"], spec["n_val"])
    noise = 0.01 * jax.random.normal(jax.random.PRNGKey(1), theta["xp"].shape)
    theta_prev = {**theta, "xp": jnp.clip(theta["xp"] + noise, 0.0, 1.0)}
    calls, grads, stats = {}, {}, {}
    cold = ec.cold_warm(w0)  # w0 and a zero adjoint: one program for the cold and the warm calls
    for name, method in methods().items():
        hyper = lambda warm, m=method: ec.hypergrad(m, inner, outer_loss, w0, theta, arrays, warm=warm)  # noqa: E731
        start = jax.block_until_ready(ec.hypergrad(method, inner, outer_loss, w0, theta_prev, arrays, warm=cold).warm)
        calls[(name, "cold")] = lambda h=hyper: h(cold)[:2]
        calls[(name, "warm")] = lambda h=hyper, s=start: h(s)[:2]
        result = hyper(start)
        grads[name] = harness.flat(result.grad)
        stats[name] = {k: v.item() for k, v in result.stats.items()} | {"status": int(result.status)}
    times = harness.time_calls(calls, repeats=spec["repeats"])
    ms = {f"{name}_{start}_ms": 1e3 * t.median for (name, start), t in times.items()}
    return {
        "d": d,
        "p": d + 1,
        **ms,
        "dense_over_newton_cg_cold": ms["dense_cold_ms"] / ms["newton-cg_cold_ms"],
        "dense_over_newton_cg_warm": ms["dense_warm_ms"] / ms["newton-cg_warm_ms"],
        "cosine": harness.cosine(grads["dense"], grads["newton-cg"]),
        "stats_warm": stats,
    }


def crossover(rows: list[dict], key: str) -> int | None:
    """The largest p up to which dense is never slower (``key``: the ratio's column); None: not even
    at the smallest p measured."""
    p = None
    for row in rows:
        if row[key] > 1.0:
            break
        p = row["p"]
    return p


def run(args) -> dict:
    spec_a, spec_b = (QUICK_ATTACK, QUICK_CROSSOVER) if args.quick else (ATTACK, CROSSOVER)
    rows = [crossover_row(d, spec_b) for d in spec_b["ds"]]
    load_before = harness.load_average()
    attacks = attack_rows(spec_a)
    total = {name: sum(r[name]["warm_s"] for r in attacks) for name in methods()}
    return {
        "attack": {**spec_a, "rows": attacks, "warm_seconds": total},
        "crossover": {**{k: v for k, v in spec_b.items() if k != "ds"}, "rows": rows},
        "crossover_p": {s: crossover(rows, f"dense_over_newton_cg_{s}") for s in ("cold", "warm")},
        "factor_in_cg_steps": factor_in_cg_steps(spec_a),
        "load_average_before_attacks": load_before,
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "goals": {"dense_over_newton_cg": total["dense"] / total["newton-cg"]},
    }


def markdown(result: dict) -> str:
    a = result["attack"]
    lines = [
        f"Strong digits attack ({len(a['seeds'])} seeds, {a['iters']} hyperiterations, add mode), warm seconds "
        "(all seeds) and victim test error (%, mean ± std over seeds):",
        "",
        "| poison points | Newton-CG (s) | dense (s) | Newton-CG error | dense error |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in a["rows"]:
        ncg, dense = row["newton-cg"], row["dense"]
        err = lambda r: f"{100 * np.mean(r['errors']):.1f} ± {100 * np.std(r['errors']):.1f}"  # noqa: E731
        lines.append(f"| {row['count']} | {ncg['warm_s']:.3f} | {dense['warm_s']:.3f} | {err(ncg)} | {err(dense)} |")
    ratio = result["goals"]["dense_over_newton_cg"]
    lines += ["", f"dense / Newton-CG, warm, all counts: **{ratio:.3f}** (goal <= 0.5)", ""]
    steps = lambda name, key: np.mean([r[name]["mean_steps"].get(key, 0.0) for r in a["rows"]])  # noqa: E731
    f = result["factor_in_cg_steps"]
    lines += [
        "Where the time goes, per hyperiteration (mean over seeds, hyperiterations and counts): the warm-started "
        f"inner solve takes {steps('newton-cg', 'inner_steps'):.2f} Newton steps with Newton-CG and "
        f"{steps('dense', 'inner_steps'):.2f} dense; Newton-CG's adjoint takes "
        f"{steps('newton-cg', 'adjoint_steps'):.1f} CG steps. At p = {f['p']} one dense factor (Hessian and "
        f"Cholesky) costs {f['factor_ms']:.3f} ms, one CG step "
        f"{f['cg_step_ms']:.4f} ms: the factor is worth {f['factor_in_cg_steps']:.0f} CG steps.",
        "",
    ]
    lines += [
        "One hypergradient of logistic regression (n = 512, float32), median ms:",
        "",
        "| p | Newton-CG cold | dense cold | Newton-CG warm | dense warm | dense / NCG warm | cosine |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["crossover"]["rows"]:
        lines.append(
            f"| {r['p']} | {harness.fmt_ms(r['newton-cg_cold_ms'])} | {harness.fmt_ms(r['dense_cold_ms'])} | "
            f"{harness.fmt_ms(r['newton-cg_warm_ms'])} | {harness.fmt_ms(r['dense_warm_ms'])} | "
            f"{r['dense_over_newton_cg_warm']:.2f} | {r['cosine']:.5f} |"
        )
    smallest = result["crossover"]["rows"][0]["p"]
    up_to = {k: f"up to p = {v}" if v else f"at no p from {smallest}" for k, v in result["crossover_p"].items()}
    lines += ["", f"Dense is not slower, warm: {up_to['warm']}; cold: {up_to['cold']}."]
    return "\n".join(lines)


def main(argv=None) -> dict:
    return harness.main("dense_solver", __doc__, run, markdown, argv)


if __name__ == "__main__":
    main()
