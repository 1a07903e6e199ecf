"""The accuracy study: RMD over T, IFT over T_train and over CG iterations, each timed and compared
with the exact hypergradient; the goal's thresholds found by bisection on the steps."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import engine_calls as ec
from benchmarks import harness
from benchmarks.accuracy.problem import Problem, reference

TARGET_COSINE = 0.999


class Candidate(NamedTuple):
    """One timed hypergradient: ``kind`` ("rmd", "ift_train" or "ift_cg") at size ``n`` (steps or CG
    iterations)."""

    kind: str
    n: int


class Calls:
    """The float32 hypergradients of one problem, as zero-argument calls returning an
    :class:`benchmarks.engine_calls.Hypergrad`."""

    def __init__(self, problem: Problem, w_star):
        self.spec = problem.spec
        self.inner, self.outer, self.w0, self.theta = problem.losses(jnp.float32)
        self.w_star = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), w_star)

    def __call__(self, c: Candidate):
        spec, args = self.spec, (self.inner, self.outer)
        if c.kind == "rmd":
            return lambda: ec.hypergrad(ec.rmd_method(c.n, spec["lr"]), *args, self.w0, self.theta)
        if c.kind == "ift_train":
            method = ec.ift_method(c.n, spec["lr"], cg_iters=spec["cg_max"], cg_tol=spec["cg_tol"])
            return lambda: ec.hypergrad(method, *args, self.w0, self.theta)
        return lambda: ec.ift_at(*args, self.w_star, self.theta, cg_iters=c.n, cg_tol=0.0)


def measure(calls: Calls, exact, candidates, repeats: int) -> dict:
    """Accuracy of each candidate's hypergradient and its median time."""
    exact_flat = harness.flat(exact)
    exact_lam = np.asarray(exact["log_lam"], np.float64)
    fns = {c: calls(c) for c in candidates}
    times = harness.median_times(fns, repeats=repeats, warmup=1)
    rows = {}
    for c, fn in fns.items():
        out = fn()
        flat = harness.flat(out.grad)
        rows[c] = {
            "cosine": harness.cosine(flat, exact_flat),
            "rel_error": harness.rel_error(flat, exact_flat),
            "log_lam_rel_error": harness.rel_error(np.asarray(out.grad["log_lam"]), exact_lam),
            "finite": bool(np.all(np.isfinite(flat))),
            "median_ms": 1e3 * times[c],
        }
        if "adjoint_steps" in out.stats:  # IFT: how converged w* was and what CG did
            rows[c].update(
                inner_grad_norm=float(out.stats["inner_grad_norm"]),
                cg_iterations=int(out.stats["adjoint_steps"]),
                cg_residual=float(out.stats["adjoint_residual"]),
            )
    return rows


def smallest_reaching(cos_at, grid, target: float) -> dict:
    """Smallest integer n with cos_at(n) >= target: the first grid point reaching it, then bisection
    between it and the grid point before (to 2 %). ``None`` when no grid point reaches it."""
    values = {}
    first = None
    for i, n in enumerate(grid):
        values[n] = cos_at(n)
        if values[n] >= target:
            first = i
            break
    if first is None:
        return {"steps": None, "probes": {str(k): v for k, v in values.items()}}
    hi, lo = grid[first], grid[first - 1] if first > 0 else 0
    while hi - lo > max(1, int(0.02 * hi)):
        mid = (lo + hi) // 2
        values[mid] = cos_at(mid)
        hi, lo = (mid, lo) if values[mid] >= target else (hi, mid)
    return {"steps": hi, "cosine": values[hi], "probes": {str(k): v for k, v in sorted(values.items())}}


def _first_reaching(rows):
    return next((r for r in rows if r["cosine"] >= TARGET_COSINE), None)


def _bisected(calls: Calls, exact, spec: dict) -> dict:
    """Both thresholds refined by bisection on the steps, then timed again."""
    exact_flat, grid = harness.flat(exact), list(spec["steps"])
    hits = {}
    for kind in ("rmd", "ift_train"):
        cos_at = lambda n, kind=kind: harness.cosine(harness.flat(calls(Candidate(kind, n))().grad), exact_flat)
        hits[kind] = smallest_reaching(cos_at, grid, TARGET_COSINE)
    out = {"rmd": hits["rmd"], "ift": hits["ift_train"], "resolution": "bisection (2 %)"}
    if hits["rmd"]["steps"] and hits["ift_train"]["steps"]:
        fns = {kind: calls(Candidate(kind, hits[kind]["steps"])) for kind in hits}
        times = harness.median_times(fns, repeats=max(7, spec["repeats"]), warmup=1)
        out.update(
            rmd_ms=1e3 * times["rmd"], ift_ms=1e3 * times["ift_train"], ift_over_rmd=times["ift_train"] / times["rmd"]
        )
    return out


def goal(calls: Calls, exact, spec: dict, table: dict) -> dict:
    """The cheapest IFT (training included) reaching the target cosine over the cheapest RMD, same η."""
    r, i = _first_reaching(table["rmd_over_T"]), _first_reaching(table["ift_over_T_train"])
    grid = r and i and {"rmd_T": r["T"], "ift_T_train": i["T_train"], "ift_over_rmd": i["median_ms"] / r["median_ms"]}
    out = {"target_cosine": TARGET_COSINE, "same_inner_lr": spec["lr"], "grid_resolution": grid or None}
    if spec.get("bisect", True):
        out.update(_bisected(calls, exact, spec))
    else:
        g = out["grid_resolution"]
        out.update(
            rmd={"steps": g and g["rmd_T"]},
            ift={"steps": g and g["ift_T_train"]},
            resolution="grid",
            ift_over_rmd=g and g["ift_over_rmd"],
            rmd_ms=r and r["median_ms"],
            ift_ms=i and i["median_ms"],
        )
    if out.get("ift_over_rmd") is None:
        out.update(ift_over_rmd=None, note="a method did not reach the target within the grid")
    return out


def study(spec: dict, with_goal: bool) -> dict:
    problem = Problem(spec)
    ref = reference(problem)
    calls = Calls(problem, ref["w_star"])
    steps, cg_iters = spec["steps"], spec["cg_iters"]
    candidates = [Candidate(kind, t) for t in steps for kind in ("rmd", "ift_train")]
    candidates += [Candidate("ift_cg", k) for k in cg_iters]
    rows = measure(calls, ref["exact"], candidates, spec["repeats"])
    cg = {"cg_iters_max": spec["cg_max"], "cg_tol": spec["cg_tol"]}
    table = {
        "rmd_over_T": [{"T": t, **rows[Candidate("rmd", t)]} for t in steps],
        "ift_over_T_train": [{"T_train": t, **cg, **rows[Candidate("ift_train", t)]} for t in steps],
        "ift_over_cg_iters": [
            {"cg_iters": k, "cg_tol": 0.0, "given_converged_w_star": True, **rows[Candidate("ift_cg", k)]}
            for k in cg_iters
        ],
    }
    out = {
        "problem": {k: v for k, v in spec.items() if k not in ("steps", "cg_iters")},
        "model": problem.model.name,
        "bias_penalty": problem.bias_penalty,
        "reference": ref["info"],
        **table,
    }
    if with_goal:
        out["goal"] = goal(calls, ref["exact"], spec, table)
    return out
