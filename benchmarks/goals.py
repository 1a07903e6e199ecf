"""The suite's goals, by id: what each measures, its target, the benchmark whose JSON holds the figure
(under ``goals``, keyed by the id) and, for a goal missed, what that benchmark's profile says about why."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.harness import Goal


def get(result: dict | None, *path):
    """``result[path[0]][path[1]]...``, or ``None`` where a key is missing."""
    for key in path:
        if not isinstance(result, dict) or key not in result:
            return None
        result = result[key]
    return result


GOALS = (
    Goal("rmd_over_forward", "hypergrad", 2.5, "RMD hypergradient / forward unroll (LR, MNIST shape, T = 150)"),
    Goal(
        "ift_over_rmd_to_0.999",
        "accuracy",
        0.5,
        "IFT (training w* included) / RMD cost to reach cosine >= 0.999 against the exact hypergradient "
        "(LR, MNIST shape, same η)",
    ),
    Goal(
        "seeds_over_loop",
        "batching",
        0.5,
        "10 seeds in one call as the sweep runs them on a CPU (one lane per core, each looping over its "
        "seeds) / Python loop (LR, 2 CPU cores)",
    ),
    Goal(
        "jax_over_torch",
        "peer",
        0.2,
        "poison_jax / PyTorch peer (create_graph=True unrolled loop), LR RMD hypergradient, T = 150",
    ),
    Goal(
        "checkpoint_memory",
        "attack_step",
        0.25,
        "checkpointed / plain RMD peak memory above the process baseline (MLP 2048x128x32x1, T = 600)",
    ),
    Goal(
        "import_seconds",
        "import_time",
        2.0,
        "import poison_jax in a fresh interpreter (seconds; no matplotlib or TensorFlow Datasets loaded)",
    ),
    Goal(
        "paper_sweep_minutes",
        "sweeps",
        2.0,
        "the paper-faithful mnist5k sweep, poison-jax run --preset mnist5k-lr, 4 Λ settings x 6 fractions "
        "x 10 seeds x 100 hyperiterations, T = 150, the whole command (minutes, 2 CPU cores)",
    ),
    Goal(
        "strong_sweep_minutes",
        "sweeps",
        1.0,
        "the strong mnist5k sweep, poison-jax run --preset mnist5k-lr-strong, 4 Λ settings x 6 fractions "
        "x 10 seeds, the whole command (minutes, 2 CPU cores)",
    ),
    Goal(
        "second_run_compile",
        "compile_cache",
        0.10,
        "a second identical digits-lr run (2 seeds) in a fresh process: its compile time / the first's, "
        "one persistent compilation cache",
    ),
    Goal(
        "h2h_compiles_all_counts",
        "secml_h2h",
        1.0,
        "compiles of the strong digits attack's program for all its poison counts (0-26; a fresh process)",
    ),
    Goal(
        "h2h_cold_over_secml",
        "secml_h2h",
        0.2,
        "poison_jax's digits run in a fresh process, all counts, empty compilation cache / secml's summed time",
    ),
    Goal(
        "h2h_warm_over_secml",
        "secml_h2h",
        0.05,
        "poison_jax's digits run in a fresh process, all counts, warm compilation cache / secml's summed time",
    ),
    Goal(
        "dense_over_newton_cg",
        "dense_solver",
        0.5,
        "the strong digits attack (5 seeds, 50 hyperiterations, 6-26 points, warm) with ImplicitDense (dense "
        "Newton, the adjoint by its Cholesky factor) / with Newton-CG and a CG adjoint",
    ),
)
BY_ID = {g.id: g for g in GOALS}


def _accuracy(r: dict) -> str | None:
    g = get(r, "lr", "goal")
    if not g or g.get("ift_over_rmd") is None:
        return get(g, "note")
    rmd_t, ift_t = g["rmd"]["steps"], g["ift"]["steps"]
    return (
        f"RMD first reaches cosine {g['target_cosine']} at T = {rmd_t} ({g['rmd_ms']:.1f} ms, "
        f"{g['rmd_ms'] / rmd_t:.3f} ms a step, forward and reverse); IFT needs w* trained T_train = {ift_t} "
        f"steps ({g['ift_ms']:.1f} ms incl. CG, {g['ift_ms'] / ift_t:.3f} ms a step): the saving is the reverse "
        f"pass and the {100 * (1 - ift_t / rmd_t):.0f} % fewer steps."
    )


def _peer(r: dict) -> str | None:
    t = get(r, "torch")
    if not t:
        return None
    if "skipped" in t:
        return t["skipped"]
    return (
        f"per inner step: poison_jax {r['poison_jax_per_step_ms']:.3f} ms (RMD, fwd + reverse), torch "
        f"{t['per_step_ms']:.3f} ms; poison_jax's forward unroll alone {r['poison_jax_forward_ms']:.2f} ms."
    )


def _hypergrad(r: dict) -> str | None:
    rows = {row["method"]: row for row in get(r, "rows") or []}
    if "RMD" not in rows:
        return None
    return (
        f"forward unroll {rows['forward unroll']['median_ms']:.2f} ms, RMD {rows['RMD']['median_ms']:.2f} ms: the "
        "reverse pass redoes a Hessian-vector product and the poison-feature gradient each step."
    )


def _memory(r: dict) -> str | None:
    m = get(r, "mlp_checkpointing")
    if not m:
        return None
    return (
        f"XLA temp buffers {m['plain']['xla_temp_mb']:.0f} -> {m['checkpointed']['xla_temp_mb']:.0f} MB, "
        f"peak RSS above baseline {m['plain']['peak_rss_above_baseline_mb']:.0f} -> "
        f"{m['checkpointed']['peak_rss_above_baseline_mb']:.0f} MB, "
        f"time x{m['time_ratio']:.2f}."
    )


def _h2h(r: dict) -> str | None:
    runs = get(r, "fresh_process", "digits")
    if not runs:
        return None
    return "; ".join(
        f"{name.replace('_', ' ')}: {run['process_seconds']:.2f} s to the last result, "
        f"{run['process_seconds'] - run['attack_seconds']:.2f} s of them before the first JAX call (interpreter, "
        f"imports); the attack's program traced {c['attack_trace_seconds']:.2f} s, lowered "
        f"{c['attack_lower_seconds']:.2f} s, compiled {c['attack_compile_seconds']:.2f} s, loaded "
        f"{c['attack_load_seconds']:.2f} s; {c['programs_compiled']} programs compiled in all"
        for name, run in runs.items()
        for c in [run["compiles"]]
    )


def _sweep(name: str) -> Callable[[dict], str]:
    def note(r: dict) -> str:
        cells = get(r, name, "cell_seconds") or {}
        compiling = get(r, name, "compile_seconds") or 0.0
        per_setting = ", ".join(f"{k} {sum(v):.0f}" for k, v in cells.items())
        return f"seconds per setting: {per_setting}; compiling {compiling:.0f} s"

    return note


def _dense(r: dict) -> str | None:
    seconds, f = get(r, "attack", "warm_seconds"), get(r, "factor_in_cg_steps")
    rows = get(r, "attack", "rows") or []
    if not seconds or not f or not rows:
        return None
    steps = lambda name, key: sum(row[name]["mean_steps"].get(key, 0.0) for row in rows) / len(rows)  # noqa: E731
    return (
        f"attack warm: dense {seconds['dense']:.2f} s, Newton-CG {seconds['newton-cg']:.2f} s; the warm-started inner "
        f"solve takes {steps('newton-cg', 'inner_steps'):.2f} Newton steps a hyperiteration and Newton-CG's adjoint "
        f"{steps('newton-cg', 'adjoint_steps'):.0f} CG steps, while one dense factor (Hessian and Cholesky, p = "
        f"{f['p']}) costs as much as {f['factor_in_cg_steps']:.0f} CG steps: the factor replaces about what it costs."
    )


def _compile_cache(r: dict) -> str | None:
    second = get(r, "second", "events_seconds")
    if not second:
        return None
    return (
        f"the second run traces for {second['tracing']:.2f} s and lowers to MLIR for {second['lowering']:.2f} s "
        f"({get(r, 'second', 'programs')} programs), which JAX's cache does not skip; it loads them in "
        f"{second['of which loading from the cache']:.2f} s"
    )


NOTES: dict[str, Callable[[dict], str | None]] = {
    "rmd_over_forward": _hypergrad,
    "ift_over_rmd_to_0.999": _accuracy,
    "seeds_over_loop": lambda r: get(r, "diagnosis"),
    "jax_over_torch": _peer,
    "checkpoint_memory": _memory,
    "import_seconds": lambda r: f"modules loaded: {', '.join(r.get('heavy_modules_loaded') or []) or 'no heavy ones'}",
    "paper_sweep_minutes": _sweep("paper"),
    "strong_sweep_minutes": _sweep("strong"),
    "h2h_compiles_all_counts": _h2h,
    "h2h_cold_over_secml": _h2h,
    "h2h_warm_over_secml": _h2h,
    "dense_over_newton_cg": _dense,
    "second_run_compile": _compile_cache,
}
