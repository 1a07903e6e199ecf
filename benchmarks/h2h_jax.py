"""The poison_jax half of the secml head-to-head: the strong attack on every poison count of a data set
from one compiled program, in this process or in a fresh one.

    python -m benchmarks.h2h_jax --data SPLITS.npz --counts 0 6 13 19 26 --out SETS.npz \
        [--cache-dir DIR] [--method newton-cg|dense]

The attack state is made once for the largest count (:func:`poison_jax.poisoning.attack.init_attack`)
and each count is switched on with masks (``set_poison_count``; in add mode an inactive poison point
weighs 0), so every count runs the same program: one compile for all. As a worker (the command above,
run by :func:`fresh_process`) it reads the splits the parent wrote, turns JAX's persistent
compilation cache on in ``--cache-dir``, attacks every count once, writes the poisoned training sets
and prints one JSON line: the wall-clock instants of its first JAX call and of its last result, and
the compilations it saw. It imports neither scikit-learn nor the data sets: loading the data and
refitting the victims are the parent's, outside the timed span, as they are outside secml's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from poison_jax import engine
from poison_jax.poisoning import attack, data, models, outer

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
METHODS = ("newton-cg", "dense")
ATTACK_PROGRAM = "_run_attack"  # the name JAX's compile events give attack.run_attack's program


def inner_method(name: str) -> engine.Method:
    """The strong attack's inner solve and hypergradient: ``newton-cg`` (Newton-CG, implicit by CG) or
    ``dense`` (dense Newton, the adjoint by its Cholesky factor: ``engine.ImplicitDense``)."""
    if name == "newton-cg":
        return STRONG["method"]
    if name != "dense":
        raise ValueError(f"method must be one of {METHODS}, got {name!r}")
    return engine.ImplicitDense(tol=1e-5, maxiter=100, damping=1e-4)


def settings_for(n_features: int, method: str = "newton-cg") -> attack.AttackSettings:
    """The strong attack on logistic regression over ``n_features`` features with ``method``."""
    return attack.AttackSettings(models.logistic_regression(n_features), **{**STRONG, "method": inner_method(method)})


# ------------------------------------------------------------------------------------- compilations

_EVENTS: list[tuple[str, str, float]] = []  # (program, what, seconds) in order; what: see _on_duration
_PENDING: list[str] = []  # the persistent cache's verdict on the compile under way
_STAGES = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",  # paid on a cache hit too, as is lowering
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "backend",  # sent for a cache hit too: the verdict tells
}


def _on_event(event: str, **kwargs) -> None:
    if event.endswith("/cache_hits"):
        _PENDING[:] = ["load"]
    elif event.endswith("/cache_misses"):
        _PENDING[:] = ["compile"]


def _on_duration(event: str, seconds: float, **kwargs) -> None:
    stage = _STAGES.get(event)
    if stage == "backend":
        stage = _PENDING.pop() if _PENDING else "compile"
    if stage:  # a trace names the function (f), the rest its program (jit(f)): one name for both
        _EVENTS.append((kwargs.get("fun_name", "?").removeprefix("jit(").removesuffix(")"), stage, seconds))


def watch_compiles() -> int:
    """Start recording XLA compilations (once per process); return a mark for :func:`compiles_since`."""
    if not getattr(watch_compiles, "on", False):
        jax.monitoring.register_event_listener(_on_event)
        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        watch_compiles.on = True  # type: ignore[attr-defined]
    return len(_EVENTS)


def compiles_since(mark: int) -> dict:
    """The compilations since ``mark``: programs compiled (``programs_compiled``) and loaded from the
    persistent cache (``programs_loaded``) and their seconds; for the attack's program, its compiles
    (``attack_compiles``: what "compiles once" counts), loads, and the seconds it took to trace,
    lower to MLIR (both paid on a cache hit too), compile and load."""
    events = _EVENTS[mark:]
    ours = [e for e in events if e[0] == ATTACK_PROGRAM]
    total = lambda rows, stage: sum(e[2] for e in rows if e[1] == stage)  # noqa: E731
    return {
        "attack_compiles": sum(e[1] == "compile" for e in ours),
        "attack_loads": sum(e[1] == "load" for e in ours),
        **{f"attack_{stage}_seconds": total(ours, stage) for stage in ("trace", "lower", "compile", "load")},
        "programs_compiled": sum(e[1] == "compile" for e in events),
        "programs_loaded": sum(e[1] == "load" for e in events),
        "compile_seconds": total(events, "compile"),
        "load_seconds": total(events, "load"),
    }


# ------------------------------------------------------------------------------------------ attack


def stack_parts(parts: list) -> dict:
    """The train and validation parts of :func:`benchmarks.h2h_splits.load_split` for each seed, stacked:
    ``{"x_train": (S, n_train, d), "y_train": (S, n_train), "x_val": ..., "y_val": ...}`` (numpy)."""
    stack = lambda i, j: np.stack([p[i][j] for p in parts])  # noqa: E731
    return {"x_train": stack(0, 0), "y_train": stack(0, 1), "x_val": stack(1, 0), "y_val": stack(1, 1)}


def stack_splits(arrays: dict) -> data.Splits:
    """``Splits`` of float32 features and labels from numpy ``(S, n, d)`` / ``(S, n)`` arrays (no test set)."""
    f32 = lambda key: jnp.asarray(arrays[key], jnp.float32)  # noqa: E731
    return data.Splits(f32("x_train"), f32("y_train"), f32("x_val"), f32("y_val"), None, None)


def attack_counts(settings, splits, counts, *, iters: int = ITERS, calls: int = 1, on_result=None) -> dict:
    """Attack every seed of ``splits`` at each of ``counts`` poison points, from one initial state of
    ``max(counts)`` points whose first ``count`` are switched on (so one compiled program serves all).

    ``calls`` runs of each attack (the first compiles at the first count; later ones are warm);
    ``on_result(count)`` is called when a count's poisoned sets are on the host.
    Returns ``{count: {"sets": (x, y, w) numpy (S, n_train + P, ...), "seconds": [per call],
    "unconverged_solves": per seed}}``; count 0 runs no attack (its sets hold no active poison).
    """
    keys = jax.random.split(jax.random.PRNGKey(0), splits.x_train.shape[0])
    state0 = attack.init_attack(settings, keys, splits, max(counts), LOG_LAM)
    out = {}
    for count in counts:
        state = final = attack.set_poison_count(state0, count, count)
        seconds = []
        for _ in range(calls if count else 0):
            start = time.perf_counter()
            final, _ = attack.run_attack(settings, splits, state, num_iters=iters, update_xp=True, update_lam=False)
            jax.block_until_ready(final.xp)
            seconds.append(time.perf_counter() - start)
        sets = tuple(np.asarray(a) for a in attack.poisoned_training_set(splits, final, settings.mode))
        out[count] = {"sets": sets, "seconds": seconds, "unconverged_solves": np.asarray(final.unconverged_solves)}
        if on_result is not None:
            on_result(count)
    return out


# ----------------------------------------------------------------------------- the fresh process


def worker(argv=None) -> int:
    """The worker's command line (module docstring): one JSON line on stdout, the sets in ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="npz of x_train, y_train, x_val, y_val (S, n, ...)")
    parser.add_argument("--counts", type=int, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True, help="npz the poisoned sets are written to")
    parser.add_argument("--cache-dir", type=Path, default=None, help="JAX's persistent compilation cache")
    parser.add_argument("--method", choices=METHODS, default="newton-cg")
    parser.add_argument("--iters", type=int, default=ITERS)
    args = parser.parse_args(argv)
    if args.cache_dir is not None:
        from poison_jax.experiments.cache import use_compilation_cache

        use_compilation_cache(args.cache_dir, log=lambda line: None)
    with np.load(args.data) as arrays:
        arrays = dict(arrays)
    mark = watch_compiles()
    done: dict[int, float] = {}
    first_jax = time.time()  # wall clock: the parent compares it with the instant it started us
    settings = settings_for(arrays["x_train"].shape[-1], args.method)
    splits = stack_splits(arrays)
    mark_done = lambda count: done.update({count: time.time()})  # noqa: E731
    results = attack_counts(settings, splits, args.counts, iters=args.iters, on_result=mark_done)
    last = time.time()
    np.savez(args.out, **{f"{k}{c}": a for c, r in results.items() for k, a in zip("xyw", r["sets"], strict=True)})
    report = {
        "first_jax_call": first_jax,
        "last_result": last,
        "count_done": {str(c): t - first_jax for c, t in done.items()},
        "unconverged_solves": {str(c): r["unconverged_solves"].tolist() for c, r in results.items()},
        "compiles": compiles_since(mark),
        "device": str(jax.devices()[0].platform),
    }
    print(json.dumps(report), flush=True)
    return 0


def fresh_process(
    parts: list, counts: list[int], cache_dir: Path, method: str = "newton-cg", iters: int = ITERS
) -> dict:
    """Run the worker in a fresh interpreter on ``parts`` (:func:`benchmarks.h2h_splits.load_split`
    of each seed) with its compilation cache in ``cache_dir``.

    Returns the worker's report plus ``process_seconds`` (our spawning it to its last result: the
    interpreter's start, imports, compiles or cache loads, the attacks), ``attack_seconds`` (its
    first JAX call to its last result), ``exit_seconds`` (spawn to exit) and ``sets`` (count ->
    poisoned ``(x, y, w)``).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("POISON_JAX_NO_CACHE", "JAX_COMPILATION_CACHE_DIR")}
    env.pop("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", None)  # cache every program, as use_compilation_cache does
    with tempfile.TemporaryDirectory(prefix="h2h-jax-") as tmp:
        data_path, sets_path = Path(tmp) / "splits.npz", Path(tmp) / "sets.npz"
        np.savez(data_path, **stack_parts(parts))
        cmd = [sys.executable, "-m", "benchmarks.h2h_jax", "--data", str(data_path), "--out", str(sets_path)]
        cmd += ["--counts", *map(str, counts), "--cache-dir", str(cache_dir), "--method", method, "--iters", str(iters)]
        root = Path(__file__).resolve().parents[1]
        spawn = time.time()
        done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
        exited = time.time()
        if done.returncode != 0:
            raise RuntimeError(f"the poison_jax worker failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        with np.load(sets_path) as saved:
            sets = {c: tuple(saved[f"{k}{c}"] for k in "xyw") for c in counts}
    return {
        **report,
        "process_seconds": report["last_result"] - spawn,
        "attack_seconds": report["last_result"] - report["first_jax_call"],
        "exit_seconds": exited - spawn,
        "sets": sets,
    }


if __name__ == "__main__":
    raise SystemExit(worker())
