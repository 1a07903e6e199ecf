"""The comparison: compile every candidate (a failure is a result), time them interleaved with a CG
yardstick, score each against the float64 reference, and form the ratios of the fastest rows."""

from __future__ import annotations

import functools
import time

import jax
import numpy as np

from benchmarks import harness
from benchmarks.engine_peers import candidates as cands
from benchmarks.engine_peers.problem import PROBLEM_KEYS, Problem

TARGET_COSINE = 0.999
GOAL = harness.Goal(
    "engine_peers_cold",
    "engine_peers",
    0.5,
    "poison_jax / fastest JAX peer to cosine 0.999 (cold start)",
)
SETTING_KEYS = (
    "ift_steps",
    "rmd_steps",
    "ift_cg_iters",
    "ift_cg_tol",
    "newton",
    "lbfgs",
    "implicit_cg_iters",
    "peer_solvers",
    "peer_tols",
    "peer_cg",
    "peer_cg_iters",
    "peer_max_steps",
)
PEERS = (("optimistix", cands.optimistix_peers), ("jaxopt", cands.jaxopt_peers))


def candidates(spec: dict, p: Problem) -> tuple[list, dict]:
    """Ours and every installed peer's; ``skipped``: the peers not installed, and why."""
    out: list = list(cands.ours(spec, p))
    skipped = {}
    for pkg, make in PEERS:
        try:
            __import__(pkg)
        except ImportError:
            skipped[pkg] = f"{pkg} not installed: pip install 'poison-jax[bench]'"
            continue
        out += make(spec, p)
    keys = [(c.family, c.settings) for c in out]
    if len(set(keys)) != len(keys):
        raise RuntimeError(f"two candidates share a family and settings: {keys}")
    return out, skipped


def compile_all(candidates: list, p: Problem) -> tuple[list, list]:
    """Run each once (the timing's warm-up then runs compiled code); a candidate that fails (e.g.
    lineax's CG raising at max_steps) is reported, not timed."""
    ok, failed = [], []
    for c in candidates:
        try:
            jax.block_until_ready(c.call(p))
            ok.append(c)
        except Exception as err:  # noqa: BLE001 - a peer's failure is a result, not a crash
            lines = str(err).strip().splitlines()
            message = next((m for m in lines if "Error" in m), lines[0] if lines else "")[:300]
            failed.append({"family": c.family, "settings": c.settings, "error": type(err).__name__, "message": message})
    return ok, failed


def score(c, p: Problem, t: harness.Timing, cg_step_ms: float, exact: dict) -> dict:
    """One row: times, accuracy against ``exact``, and what the method did."""
    value, grad = c.call(p)
    flat, exact_flat = harness.flat(grad), harness.flat(exact)
    cos = harness.cosine(flat, exact_flat)
    return {
        "library": c.library,
        "family": c.family,
        "warm": c.warm,
        "tuned_adjoint": c.tuned_adjoint,
        "settings": c.settings,
        "median_ms": 1e3 * t.median,
        "cg_step_equivalents": 1e3 * t.median / cg_step_ms,
        "min_ms": 1e3 * t.minimum,
        "cosine": cos,
        "rel_error": harness.rel_error(flat, exact_flat),
        "log_lam_rel_error": harness.rel_error(np.asarray(grad["log_lam"]), np.asarray(exact["log_lam"])),
        "reaches_target": bool(np.isfinite(cos) and cos >= TARGET_COSINE),
        "outer_value": float(value),
        **c.diag(p),
    }


def _fastest(best: dict, *, ours: bool, warm: bool | None, default_adjoint_only: bool = False):
    hits = [
        r
        for r in best.values()
        if r
        and (r["library"] == "poison_jax") == ours
        and (warm is None or r["warm"] == warm)
        and not (default_adjoint_only and r["tuned_adjoint"])
    ]
    return min(hits, key=lambda r: r["median_ms"]) if hits else None


def _ratio(a, b) -> dict:
    return {
        "poison_jax": a and f"{a['family']} ({a['settings']})",
        "poison_jax_ms": a and a["median_ms"],
        "peer": b and f"{b['family']} ({b['settings']})",
        "peer_ms": b and b["median_ms"],
        "ratio": (a["median_ms"] / b["median_ms"]) if a and b else None,
        "ratio_of_minimum_times": (a["min_ms"] / b["min_ms"]) if a and b else None,
    }


def ratios(rows: list) -> tuple[dict, dict]:
    """Each family's fastest row reaching the target, and the ratios of the fastest of ours and the peers'."""
    best = {}
    for family in dict.fromkeys(r["family"] for r in rows):
        hits = [r for r in rows if r["family"] == family and r["reaches_target"]]
        best[family] = min(hits, key=lambda r: r["median_ms"]) if hits else None
    cold = _fastest(best, ours=True, warm=False)
    warm = _fastest(best, ours=True, warm=True)
    return best, {
        "cold_vs_cold": _ratio(cold, _fastest(best, ours=False, warm=False)),
        "cold_vs_cold_default_adjoint": _ratio(cold, _fastest(best, ours=False, warm=False, default_adjoint_only=True)),
        "warm_vs_warm": _ratio(warm, _fastest(best, ours=False, warm=True)),
        "warm_vs_cold_peer": _ratio(warm, _fastest(best, ours=False, warm=False)),
        "any_vs_any": _ratio(_fastest(best, ours=True, warm=None), _fastest(best, ours=False, warm=None)),
    }


def timed_rows(spec: dict, p: Problem, ok: list, reference, wait_s: float) -> tuple[list, dict, float]:
    """Wait for the reference (and an idle machine, up to ``wait_s``), time everything interleaved,
    score each row: ``(rows, timing record, one CG step in ms)``."""
    exact, _ = reference
    loads_waited = harness.wait_for_idle(spec["max_load"], wait_s) if wait_s > 0 else []
    load_before = harness.load_average()
    start = time.perf_counter()
    calls: dict = {i: functools.partial(c.call, p) for i, c in enumerate(ok)}
    calls["yardstick"] = cands.cg_yardstick(p)
    times = harness.time_calls(calls, repeats=spec["repeats"], warmup=1)
    cg_step_ms = 1e3 * times.pop("yardstick").median / cands.CG_YARDSTICK_STEPS
    timing = {
        "repeats": spec["repeats"],
        "warmup": 1,
        "max_load": spec["max_load"],
        "interleaved": True,
        "timing_s": time.perf_counter() - start,
        "load_average_before": load_before,
        "load_average_after": harness.load_average(),
        "load_waited": loads_waited,
        "x64": bool(jax.config.jax_enable_x64),
    }
    rows = [score(c, p, times[i], cg_step_ms, exact) for i, c in enumerate(ok)]
    return rows, timing, cg_step_ms


def summary(spec: dict, quick: bool, rows: list, cg_step_ms: float) -> dict:
    best, ratio = ratios(rows)
    headline = ratio["cold_vs_cold"]["ratio"]
    fastest = {f: r and {k: r[k] for k in ("settings", "median_ms", "min_ms", "cosine")} for f, r in best.items()}
    return {
        "target_cosine": TARGET_COSINE,
        "problem": {k: spec[k] for k in (*PROBLEM_KEYS, "perturb")},
        "settings": {k: spec[k] for k in SETTING_KEYS},
        "dtype": "float32",
        "rows": rows,
        "fastest_reaching_target": fastest,
        "ratios": ratio,
        "cg_step_ms": cg_step_ms,
        "headline_ratio": headline,
        "headline": "fastest poison_jax path reaching cosine 0.999 / fastest peer (any library, solver, adjoint, "
        "tolerance) reaching it, both from w0 = 0",
        "goals": {GOAL.id: headline},
        "goal_met": GOAL.met(headline),
    }
