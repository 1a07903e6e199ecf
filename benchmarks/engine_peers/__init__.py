"""The engine against JAX's own bilevel tools: accuracy and cost of one hypergradient.

Problem: L2 logistic regression on real MNIST 0 v 8 (the offline 5,000-image sample), 512 training
rows of which 85 are poison points (replace mode: cloned from validation with flipped labels, each
replacing a clean row), 171 validation rows, log λ = 1.6; the losses are
:func:`poison_jax.poisoning.attack.make_losses`'s and ``theta = {"xp": (85, 784), "log_lam": (1,)}``.

Reference: the exact hypergradient (dense Hessian solve, :func:`poison_jax.engine.exact_hypergrad`)
in float64 at a Newton optimum (``NewtonCG(tol=1e-12)``), computed in a separate process with
``jax_enable_x64`` (optimistix's LBFGS fails to trace in a process with x64 on and float32 inputs):
``python -m benchmarks.engine_peers --reference-only DIR`` reads ``DIR/problem.npz`` and writes
``DIR/reference.npz``.

Timed, float32, jitted, median warm wall time (interleaved rounds, one warm-up call each):

* poison_jax's paper paths: ``IFT`` (T steps of gradient descent, then CG) and ``RMD``, η = 0.1;
* poison_jax's converged path: ``Implicit`` with ``NewtonCG`` or ``LBFGS`` from w0 = 0 (cold), and
  from the ``Warm`` of the previous hyperiteration (``xp`` perturbed by 0.01 N(0, 1), clipped to
  [0, 1]): the "warm" rows, what one hyperiteration of the attack costs;
* optimistix ``LBFGS`` / ``BFGS`` + ``ImplicitAdjoint`` (``jax.value_and_grad`` through
  ``optx.minimise``), jaxopt ``LBFGS`` with ``implicit_diff``, each with its default adjoint solve
  (optimistix: a dense solve of the materialised Hessian; jaxopt: CG on the normal equations) and
  with a CG adjoint we configured (lineax ``CG`` with the PSD tag; jaxopt ``solve_cg``), the
  strongest peers we found; their "warm" rows start the inner solve at their own solution of the
  previous hyperiteration (the adjoint solve stays cold: neither library takes an adjoint warm start).

Each row: cosine of the whole flattened hypergradient to the reference, its relative error, the
relative error of the log-λ component, and whether cosine >= 0.999. The summary gives each family's
fastest setting reaching 0.999 and the headline: fastest poison_jax path / fastest peer (any library,
solver, adjoint and tolerance), cold start against cold start (goal <= 0.5); also against the peers'
default adjoints only, and warm start against warm start.

    python -m benchmarks.engine_peers [--quick] [--out benchmarks/results] [--device cpu|gpu] [--wait-idle S]

Writes ``engine_peers.json``, ``engine_peers.md`` and ``engine_peers.png``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from benchmarks.common import (
    add_common_args,
    cosine,
    environment,
    interleaved_samples,
    jsonable,
    rel_error,
    select_device,
    write_results,
)

TARGET_COSINE = 0.999
GOAL = 0.5

FULL = dict(
    name="LR, MNIST 0 v 8",
    dataset="mnist5k",
    load=dict(classes=(0, 8), n_test=317),
    d=784,
    n_train=512,
    n_val=171,
    n_poison=85,
    batch=17,
    log_lam=1.6,
    seed=0,
    lr=0.1,
    perturb=0.01,
    ift_steps=(150, 600, 2400, 9600),
    rmd_steps=(150, 600, 2400),
    ift_cg_iters=200,
    ift_cg_tol=1e-6,
    # (solver tol on ||grad_w||, adjoint CG tol) of Implicit
    newton=((1e-2, 1e-2), (1e-3, 1e-3), (1e-4, 1e-4), (1e-5, 1e-6)),
    lbfgs=((1e-4, 1e-4), (1e-5, 1e-6)),
    implicit_cg_iters=200,
    # peers: their default adjoint at the brief's tolerances, and a CG adjoint at (solver tol, CG tol)
    peer_solvers=("LBFGS", "BFGS"),
    peer_tols=(1e-4, 1e-6),
    peer_cg=((1e-3, 1e-3), (1e-4, 1e-4), (1e-6, 1e-6)),
    peer_cg_iters=1000,
    peer_max_steps=10000,
    repeats=15,
    max_load=1.5,
)
QUICK = dict(
    FULL,
    name="LR, digits 0 v 8 (quick)",
    dataset="digits",
    load=dict(classes=(0, 8)),
    d=64,
    n_train=150,
    n_val=60,
    n_poison=17,
    batch=17,
    ift_steps=(150,),
    rmd_steps=(150,),
    newton=((1e-4, 1e-4),),
    lbfgs=((1e-4, 1e-4),),
    peer_solvers=("LBFGS",),
    peer_tols=(1e-4,),
    peer_cg=((1e-4, 1e-4),),
    repeats=2,
)
# lineax's CG measures the residual in the max norm and raises when it has not converged by max_steps; in
# float32 it stalls near 1e-6, so its relative tolerance is kept at or above this.
LINEAX_CG_FLOOR = 1e-5


# --------------------------------------------------------------------------------------------
# The problem, shared by both processes through an npz of float32 arrays.

_STATE_FIELDS = ("xp", "yp", "replace_idx", "active", "trainable", "log_lam", "key", "nonfinite_steps")
_DATA_FIELDS = ("x_train", "y_train", "x_val", "y_val")


def build_problem(spec: dict) -> dict:
    """One split with all poison points active, as numpy arrays (float32 features)."""
    from poison_jax import engine
    from poison_jax.poisoning import attack, data, models

    ds = data.load_dataset(spec["dataset"], **spec["load"])
    splits = data.sample_splits(ds, [spec["seed"]], spec["n_train"], spec["n_val"])
    model = models.logistic_regression(spec["d"])
    settings = attack.AttackSettings(
        model, engine.RMD(steps=1, lr=spec["lr"]), alpha=1.0, beta=1.0, x_box=(0.0, 1.0), lam_box=(-8.0, 12.0)
    )
    keys = jax.random.split(jax.random.PRNGKey(spec["seed"]), 1)
    state = attack.init_attack(settings, keys, splits, spec["n_poison"], spec["log_lam"])
    state = attack.set_poison_count(state, spec["n_poison"], spec["batch"])
    arrays = {f: np.asarray(getattr(state, f)[0]) for f in _STATE_FIELDS}
    arrays.update({f: np.asarray(getattr(splits, f)[0]) for f in _DATA_FIELDS})
    return arrays


def losses(arrays: dict, d: int, dtype):
    """``(inner, outer, w0, theta)`` from :func:`poison_jax.poisoning.attack.make_losses`, floats cast to ``dtype``."""
    from poison_jax.poisoning import attack, models

    def cast(a):
        a = np.asarray(a)
        return jnp.asarray(a, dtype) if np.issubdtype(a.dtype, np.floating) else jnp.asarray(a)

    model = models.logistic_regression(d)
    state = attack.AttackState(**{f: cast(arrays[f]) for f in _STATE_FIELDS})
    inner, outer = attack.make_losses(model, *(cast(arrays[f]) for f in _DATA_FIELDS), state)
    w0 = jax.tree_util.tree_map(cast, model.init(jax.random.PRNGKey(0)))
    theta = {"xp": state.xp, "log_lam": state.log_lam}
    return inner, outer, w0, theta


def _flat(tree) -> np.ndarray:
    return np.asarray(ravel_pytree(tree)[0], np.float64)


# --------------------------------------------------------------------------------------------
# Reference (float64, its own process).


def compute_reference(folder: Path) -> None:
    """Read ``folder/problem.npz``, write the exact float64 hypergradient to ``folder/reference.npz``."""
    jax.config.update("jax_enable_x64", True)
    from poison_jax import engine

    with np.load(folder / "problem.npz") as f:
        arrays = {k: f[k] for k in f.files if k != "d"}
        d = int(f["d"])
    inner, outer, w0, theta = losses(arrays, d, jnp.float64)
    start = time.perf_counter()
    solver = engine.NewtonCG(tol=1e-12, maxiter=100, cg_iters=1000)
    w_star, solve = jax.jit(lambda w, th: solver(lambda v: inner(v, th), w))(w0, theta)
    flat, unravel = ravel_pytree(w_star)
    grad_norm = float(jnp.linalg.norm(ravel_pytree(jax.grad(inner)(w_star, theta))[0]))
    eig = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda f: inner(unravel(f), theta))(flat)))
    value, exact, _ = engine.exact_hypergrad(inner, outer, w_star, theta)
    seconds = time.perf_counter() - start
    np.savez(
        folder / "reference.npz",
        xp=np.asarray(exact["xp"]),
        log_lam=np.asarray(exact["log_lam"]),
        w_star=np.asarray(flat),
        outer_value=float(value),
        grad_norm=grad_norm,
        newton_iterations=int(solve.iterations),
        newton_converged=bool(solve.converged),
        hessian_min_eig=float(eig[0]),
        hessian_max_eig=float(eig[-1]),
        seconds=seconds,
        x64=bool(jax.config.jax_enable_x64),
        dtype=str(flat.dtype),
    )


class Reference:
    """:func:`compute_reference` in a fresh process, started at once (it runs while the float32 candidates
    compile); :meth:`result` waits for it and returns ``(exact hypergradient, info)``."""

    def __init__(self, arrays: dict, d: int):
        self._tmp = tempfile.TemporaryDirectory(prefix="engine_peers_")
        self.folder = Path(self._tmp.name)
        np.savez(self.folder / "problem.npz", d=d, **arrays)
        env = dict(os.environ, JAX_ENABLE_X64="1")
        root = Path(__file__).resolve().parents[1]
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.engine_peers", "--reference-only", str(self.folder)],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def result(self) -> tuple[dict, dict]:
        try:
            output, _ = self._proc.communicate()
            if self._proc.returncode != 0:
                raise RuntimeError(f"reference process failed (exit {self._proc.returncode}):\n{output[-4000:]}")
            with np.load(self.folder / "reference.npz") as f:
                ref = {k: f[k] for k in f.files}
        finally:
            self._tmp.cleanup()
        exact = {"xp": ref.pop("xp"), "log_lam": ref.pop("log_lam")}
        ref.pop("w_star")
        info = {k: v.item() for k, v in ref.items()}
        info["solver"] = "poison_jax NewtonCG(tol=1e-12, maxiter=100, cg_iters=1000) from w = 0, float64"
        info["hypergradient"] = "poison_jax.engine.exact_hypergrad (dense Hessian solve), float64"
        return exact, info


# --------------------------------------------------------------------------------------------
# The candidates. Each is a dict: library, family, warm (bool), settings, ``call() -> (value, dtheta)``
# (timed) and ``diag() -> dict`` (run once, untimed: iterations, ||grad_w|| at the returned w, CG).


def _poison_jax_candidates(spec, inner, outer, w0, theta, theta_prev):
    from poison_jax import engine

    out = []
    lr = spec["lr"]

    def info_diag(info):
        return {
            "inner_grad_norm": float(info.inner_grad_norm),
            "solve_iterations": int(info.solve.iterations),
            "solve_converged": bool(info.solve.converged),
            "cg_iterations": int(info.cg.iterations),
            "cg_residual": float(info.cg.residual),
            "cg_converged": bool(info.cg.converged),
        }

    def add(family, settings, method, warm=None):
        if warm is None:
            call = lambda: method(inner, outer, w0, theta)
        else:
            call = lambda: engine.warm_hypergrad(method, inner, outer, warm, theta)
        out.append(
            dict(
                library="poison_jax",
                family=family,
                warm=warm is not None,
                settings=settings,
                call=lambda: call()[:2],
                diag=lambda: info_diag(call()[2]),
            )
        )

    for t in spec["ift_steps"]:
        add(
            "poison_jax IFT (GD)",
            f"T={t}, η={lr}, CG ≤ {spec['ift_cg_iters']} to {spec['ift_cg_tol']:g}",
            engine.IFT(steps=t, lr=lr, cg_iters=spec["ift_cg_iters"], cg_tol=spec["ift_cg_tol"]),
        )
    for t in spec["rmd_steps"]:
        add("poison_jax RMD", f"T={t}, η={lr}", engine.RMD(steps=t, lr=lr))
    implicit = []
    for tol, ctol in spec["newton"]:
        solver = engine.NewtonCG(tol=tol, maxiter=100, cg_iters=50)
        implicit.append(
            (
                "NewtonCG",
                f"tol={tol:g}, CG tol={ctol:g}",
                engine.Implicit(solver=solver, cg_iters=spec["implicit_cg_iters"], cg_tol=ctol),
            )
        )
    for tol, ctol in spec["lbfgs"]:
        solver = engine.LBFGS(tol=tol, maxiter=1000)
        implicit.append(
            (
                "LBFGS",
                f"tol={tol:g}, CG tol={ctol:g}",
                engine.Implicit(solver=solver, cg_iters=spec["implicit_cg_iters"], cg_tol=ctol),
            )
        )
    for name, settings, method in implicit:
        add(f"poison_jax Implicit {name}", settings + ", from w0 = 0", method)
    cold = engine.Warm(w0, jax.tree_util.tree_map(jnp.zeros_like, w0))
    for name, settings, method in implicit:
        # The Warm of the previous hyperiteration, at theta_prev (itself solved from w0 = 0).
        warm = jax.block_until_ready(engine.warm_hypergrad(method, inner, outer, cold, theta_prev)[2].warm)
        add(f"poison_jax Implicit {name} warm", settings + ", from the previous Warm", method, warm=warm)
    return out


def _grad_norm(inner, w, theta):
    return float(jnp.linalg.norm(ravel_pytree(jax.grad(inner)(w, theta))[0]))


def _peer_rows(library, family, settings, hyper, forward, inner, w0, theta, theta_prev, tuned):
    """A cold and a warm row of one peer: ``hyper(theta, w_init) -> (value, dtheta)``,
    ``forward(theta, w_init) -> (w, iterations)``; warm starts at the peer's own w at ``theta_prev``.
    ``tuned``: the adjoint solve is one we configured (CG), not the library's default."""
    w_prev = jax.block_until_ready(forward(theta_prev, w0)[0])
    rows = []
    for warm, w_init in ((False, w0), (True, w_prev)):

        def diag(w_init=w_init):
            w, steps = forward(theta, w_init)
            g = _grad_norm(inner, w, theta)
            return {"solve_iterations": int(steps), "inner_grad_norm": g}

        rows.append(
            dict(
                library=library,
                family=family + (" warm" if warm else ""),
                warm=warm,
                tuned_adjoint=tuned,
                settings=settings + (", from the previous solution" if warm else ", from w0 = 0"),
                call=lambda w_init=w_init: hyper(theta, w_init),
                diag=diag,
            )
        )
    return rows


def _optimistix_candidates(spec, inner, outer, w0, theta, theta_prev):
    import lineax as lx
    import optimistix as optx

    psd = frozenset({lx.symmetric_tag, lx.positive_semidefinite_tag})
    configs = [(tol, None) for tol in spec["peer_tols"]] + list(spec["peer_cg"])
    out = []
    for name in spec["peer_solvers"]:
        cls = getattr(optx, name)
        for tol, ctol in configs:
            solver = cls(rtol=tol, atol=tol)
            if ctol is None:
                adjoint, tags, family = optx.ImplicitAdjoint(), frozenset(), f"optimistix {name}"
                settings = f"rtol=atol={tol:g}, ImplicitAdjoint() (default: dense solve)"
            else:
                rtol = max(ctol, LINEAX_CG_FLOOR)
                adjoint = optx.ImplicitAdjoint(lx.CG(rtol=rtol, atol=1e-2 * rtol, max_steps=spec["peer_cg_iters"]))
                tags, family = psd, f"optimistix {name} + CG adjoint"
                settings = f"rtol=atol={tol:g}, ImplicitAdjoint(lx.CG(rtol={rtol:g})), PSD tag"

            def solve(th, w_init, solver=solver, adjoint=adjoint, tags=tags):
                return optx.minimise(
                    inner,
                    solver,
                    w_init,
                    args=th,
                    max_steps=spec["peer_max_steps"],
                    adjoint=adjoint,
                    throw=False,
                    tags=tags,
                )

            hyper = jax.jit(jax.value_and_grad(lambda th, w_init, solve=solve: outer(solve(th, w_init).value, th)))
            forward = jax.jit(
                lambda th, w_init, solve=solve: (lambda s: (s.value, s.stats["num_steps"]))(solve(th, w_init))
            )
            out += _peer_rows(
                "optimistix", family, settings, hyper, forward, inner, w0, theta, theta_prev, ctol is not None
            )
    return out


def _jaxopt_candidates(spec, inner, outer, w0, theta, theta_prev):
    import functools

    import jaxopt

    configs = [(tol, None) for tol in spec["peer_tols"]] + list(spec["peer_cg"])
    out = []
    for tol, ctol in configs:
        if ctol is None:
            solve, family = None, "jaxopt LBFGS"
            settings = f"tol={tol:g}, implicit_diff (default: normal-equation CG)"
        else:
            solve = functools.partial(jaxopt.linear_solve.solve_cg, tol=ctol, maxiter=spec["peer_cg_iters"])
            family = "jaxopt LBFGS + CG adjoint"
            settings = f"tol={tol:g}, implicit_diff_solve=solve_cg(tol={ctol:g})"
        solver = jaxopt.LBFGS(
            fun=inner, tol=tol, maxiter=spec["peer_max_steps"], implicit_diff=True, implicit_diff_solve=solve
        )
        hyper = jax.jit(jax.value_and_grad(lambda th, w_init, solver=solver: outer(solver.run(w_init, th).params, th)))
        forward = jax.jit(
            lambda th, w_init, solver=solver: (lambda r: (r.params, r.state.iter_num))(solver.run(w_init, th))
        )
        out += _peer_rows("jaxopt", family, settings, hyper, forward, inner, w0, theta, theta_prev, ctol is not None)
    return out


CG_YARDSTICK_STEPS = 50
YARDSTICK = "yardstick: 50 CG steps"


def _cg_yardstick(inner, w0, theta):
    """A call running ``CG_YARDSTICK_STEPS`` steps of :func:`poison_jax.engine.conjugate_gradient`
    (tolerance 0, so every step runs) on the inner Hessian at ``w0``: one step is a Hessian-vector
    product and the vector updates, the unit every method here pays in (a gradient costs about as
    much). Timed among the candidates, it turns each row's time into CG-step equivalents."""
    from poison_jax import engine

    w = jax.tree_util.tree_map(lambda a: a + 0.01, w0)  # off the symmetric start, where sigmoid' is flat
    rhs = jax.tree_util.tree_map(lambda a: jax.random.normal(jax.random.PRNGKey(5), a.shape, a.dtype), w0)
    run = jax.jit(
        lambda w, b, th: engine.conjugate_gradient(
            lambda v: engine.hvp(lambda u: inner(u, th), w, v), b, maxiter=CG_YARDSTICK_STEPS, tol=0.0
        )
    )
    return lambda: run(w, rhs, theta)


def _timings(calls: dict, *, repeats: int, warmup: int = 1) -> dict:
    """``name -> (median, min)`` wall seconds of each ``call()`` in interleaved rounds. The minimum is the
    less disturbed by other work on the machine."""
    import statistics

    samples = interleaved_samples(calls, repeats=repeats, warmup=warmup)
    return {name: (statistics.median(s), min(s)) for name, s in samples.items()}


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for pkg in ("optimistix", "jaxopt", "lineax", "equinox", "optax"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _wait_for_idle(max_load: float, patience_s: float) -> list:
    """Wait (up to ``patience_s``) until the 1-minute load average is below ``max_load``."""
    seen = []
    deadline = time.time() + patience_s
    while True:
        load = os.getloadavg()[0]
        seen.append(round(load, 2))
        if load < max_load or time.time() >= deadline:
            return seen
        time.sleep(30)


# --------------------------------------------------------------------------------------------


def run(quick: bool = False, wait_s: float = 0.0) -> dict:
    spec = QUICK if quick else FULL
    arrays = build_problem(spec)
    ref_process = Reference(arrays, spec["d"])  # float64, in its own process, while the candidates compile

    inner, outer, w0, theta = losses(arrays, spec["d"], jnp.float32)
    if jax.config.jax_enable_x64:  # optimistix's LBFGS does not trace with x64 on and float32 inputs
        raise RuntimeError("run the float32 timings without jax_enable_x64 (unset JAX_ENABLE_X64)")
    noise = spec["perturb"] * jax.random.normal(jax.random.PRNGKey(1), theta["xp"].shape, jnp.float32)
    theta_prev = {"xp": jnp.clip(theta["xp"] + noise, 0.0, 1.0), "log_lam": theta["log_lam"]}

    candidates = _poison_jax_candidates(spec, inner, outer, w0, theta, theta_prev)
    skipped = {}
    for pkg, make in (("optimistix", _optimistix_candidates), ("jaxopt", _jaxopt_candidates)):
        try:
            __import__(pkg)
        except ImportError:
            skipped[pkg] = f"{pkg} not installed: pip install 'poison-jax[bench]'"
            continue
        candidates += make(spec, inner, outer, w0, theta, theta_prev)
    keys = [(c["family"], c["settings"]) for c in candidates]
    assert len(set(keys)) == len(keys)

    # Compile everything first (the timing's warm-up call then runs compiled code); a candidate that fails
    # (e.g. lineax's CG raising at max_steps) is reported, not timed.
    start = time.perf_counter()
    failed = []
    for c in list(candidates):
        try:
            jax.block_until_ready(c["call"]())
        except Exception as err:  # noqa: BLE001 - a peer's failure is a result, not a crash
            message = str(err).strip().splitlines()
            failed.append(
                {
                    "family": c["family"],
                    "settings": c["settings"],
                    "error": type(err).__name__,
                    "message": next((m for m in message if "Error" in m), message[0] if message else "")[:300],
                }
            )
            candidates.remove(c)
    keys = [(c["family"], c["settings"]) for c in candidates]
    compile_s = time.perf_counter() - start
    exact, ref_info = ref_process.result()
    exact_flat = _flat(exact)
    exact_lam = np.asarray(exact["log_lam"], np.float64)
    loads_waited = _wait_for_idle(spec["max_load"], wait_s) if wait_s > 0 else []
    load_before = os.getloadavg()
    start = time.perf_counter()
    calls = {k: c["call"] for k, c in zip(keys, candidates, strict=False)}
    calls[YARDSTICK] = _cg_yardstick(inner, w0, theta)
    times = _timings(calls, repeats=spec["repeats"], warmup=1)
    cg_step_ms = 1e3 * times.pop(YARDSTICK)[0] / CG_YARDSTICK_STEPS
    timing_s = time.perf_counter() - start
    load_after = os.getloadavg()

    rows = []
    for key, c in zip(keys, candidates, strict=False):
        value, dtheta = c["call"]()
        flat = _flat(dtheta)
        cos = cosine(flat, exact_flat)
        rows.append(
            {
                "library": c["library"],
                "family": c["family"],
                "warm": c["warm"],
                "tuned_adjoint": c.get("tuned_adjoint", False),
                "settings": c["settings"],
                "median_ms": 1e3 * times[key][0],
                "cg_step_equivalents": 1e3 * times[key][0] / cg_step_ms,
                "min_ms": 1e3 * times[key][1],
                "cosine": cos,
                "rel_error": rel_error(flat, exact_flat),
                "log_lam_rel_error": rel_error(np.asarray(dtheta["log_lam"]), exact_lam),
                "reaches_target": bool(np.isfinite(cos) and cos >= TARGET_COSINE),
                "outer_value": float(value),
                **c["diag"](),
            }
        )

    families = list(dict.fromkeys(r["family"] for r in rows))
    best = {}
    for family in families:
        hits = [r for r in rows if r["family"] == family and r["reaches_target"]]
        best[family] = min(hits, key=lambda r: r["median_ms"]) if hits else None

    def fastest(ours: bool, warm: bool | None, default_adjoint_only: bool = False):
        hits = [
            r
            for r in best.values()
            if r
            and (r["library"] == "poison_jax") == ours
            and (warm is None or r["warm"] == warm)
            and not (default_adjoint_only and r["tuned_adjoint"])
        ]
        return min(hits, key=lambda r: r["median_ms"]) if hits else None

    def ratio(a, b):
        return {
            "poison_jax": a and f"{a['family']} ({a['settings']})",
            "poison_jax_ms": a and a["median_ms"],
            "peer": b and f"{b['family']} ({b['settings']})",
            "peer_ms": b and b["median_ms"],
            "ratio": (a["median_ms"] / b["median_ms"]) if a and b else None,
            "ratio_of_minimum_times": (a["min_ms"] / b["min_ms"]) if a and b else None,
        }

    ratios = {
        "cold_vs_cold": ratio(fastest(True, False), fastest(False, False)),
        "cold_vs_cold_default_adjoint": ratio(fastest(True, False), fastest(False, False, True)),
        "warm_vs_warm": ratio(fastest(True, True), fastest(False, True)),
        "warm_vs_cold_peer": ratio(fastest(True, True), fastest(False, False)),
        "any_vs_any": ratio(fastest(True, None), fastest(False, None)),
    }
    headline = ratios["cold_vs_cold"]["ratio"]
    result = {
        "benchmark": "engine_peers",
        "quick": quick,
        "target_cosine": TARGET_COSINE,
        "problem": {
            k: spec[k]
            for k in (
                "name",
                "dataset",
                "load",
                "d",
                "n_train",
                "n_val",
                "n_poison",
                "batch",
                "log_lam",
                "seed",
                "lr",
                "perturb",
            )
        },
        "settings": {
            k: spec[k]
            for k in (
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
        },
        "theta_shapes": {k: list(v.shape) for k, v in theta.items()},
        "dtype": "float32",
        "reference": ref_info,
        "rows": rows,
        "failed": failed,
        "fastest_reaching_target": {
            f: (
                r
                and {
                    "settings": r["settings"],
                    "median_ms": r["median_ms"],
                    "min_ms": r["min_ms"],
                    "cosine": r["cosine"],
                }
            )
            for f, r in best.items()
        },
        "ratios": ratios,
        "cg_step_ms": cg_step_ms,
        "headline_ratio": headline,
        "headline": "fastest poison_jax path reaching cosine 0.999 / fastest peer (any library, solver, adjoint, "
        "tolerance) reaching it, both from w0 = 0",
        "goals": {"poison_jax / fastest JAX peer to cosine 0.999 (cold start) <= 0.5": headline},
        "goal_met": None if headline is None else bool(headline <= GOAL),
        "timing": {
            "repeats": spec["repeats"],
            "warmup": 1,
            "max_load": spec["max_load"],
            "interleaved": True,
            "compile_and_first_calls_s": compile_s,
            "timing_s": timing_s,
            "load_average_before": list(load_before),
            "load_average_after": list(load_after),
            "load_waited": loads_waited,
            "x64": bool(jax.config.jax_enable_x64),
        },
        "versions": _versions(),
        "skipped": skipped,
    }
    result.update(environment())
    return jsonable(result)


# --------------------------------------------------------------------------------------------
# Output.


def _fmt(x, spec):
    return "—" if x is None else format(x, spec)


def _ms(x) -> str:
    return "—" if x is None else (f"{x:.3g}" if x < 100 else f"{x:.0f}")


def markdown(result: dict) -> str:
    p, ref, t = result["problem"], result["reference"], result["timing"]
    lines = [
        f"### {p['name']}: hypergradient against JAX's bilevel tools"
        + (" — **--quick: not the goal's settings**" if result["quick"] else ""),
        "",
        f"n_train={p['n_train']} (poison {p['n_poison']}, replace mode), n_val={p['n_val']}, d={p['d']}, "
        f"log λ={p['log_lam']}; theta = xp {tuple(result['theta_shapes']['xp'])} + log λ, float32. Reference: "
        f"exact hypergradient in float64 at a Newton optimum, ‖∇w‖ = {ref['grad_norm']:.1e} "
        f"({ref['newton_iterations']} Newton steps), Hessian eigenvalues [{ref['hessian_min_eig']:.2e}, "
        f"{ref['hessian_max_eig']:.2e}]. {result['device']}, {result['cpu_count']} CPUs, JAX "
        f"{result['jax_version']}, optimistix {result['versions']['optimistix']}, jaxopt "
        f"{result['versions']['jaxopt']}; median of {t['repeats']} interleaved warm calls; load average "
        f"{t['load_average_before'][0]:.2f} before, {t['load_average_after'][0]:.2f} after (this process "
        "included)."
        + (
            " **The machine was busy with other work: compare the minimum times too.**"
            if t["load_average_before"][0] > t["max_load"]
            else ""
        ),
        "",
        "Inner iters: gradient steps, Newton or quasi-Newton iterations; ‖∇w‖ at the returned w "
        "(float32); CG iters: poison_jax's adjoint solve (the peers' adjoint solves report nothing). "
        f"CG steps: the row's time in units of one conjugate-gradient step on this problem's Hessian "
        f"(a Hessian-vector product and the vector updates; {_fmt(result.get('cg_step_ms'), '.3f')} ms, "
        f"timed among the rows as {CG_YARDSTICK_STEPS} steps in one call): what a row would cost if "
        "nothing but such steps ran.",
        "",
        "| method | settings | ms (median) | ms (min) | cosine | log-λ rel. error | reaches 0.999 | inner iters "
        "| ‖∇w‖ | CG iters | CG steps |",
        "|---|---|---:|---:|---:|---:|:---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        cos = r["cosine"]
        cos_s = "—" if cos is None else (f"{cos:.6f}" if cos < 0.9999995 else "1.000000")
        lines.append(
            f"| {r['family']} | {r['settings']} | {_ms(r['median_ms'])} | {_ms(r['min_ms'])} | {cos_s} | "
            f"{_fmt(r['log_lam_rel_error'], '.1e')} | {'yes' if r['reaches_target'] else 'no'} | "
            f"{r.get('solve_iterations', '—')} | {_fmt(r.get('inner_grad_norm'), '.1e')} | "
            f"{r.get('cg_iterations', '—')} | {_fmt(r.get('cg_step_equivalents'), '.0f')} |"
        )
    lines += [
        "",
        f"Fastest setting of each family reaching cosine >= {result['target_cosine']}:",
        "",
        "| family | settings | ms | cosine |",
        "|---|---|---:|---:|",
    ]
    for family, r in result["fastest_reaching_target"].items():
        if r:
            lines.append(f"| {family} | {r['settings']} | {_ms(r['median_ms'])} | {r['cosine']:.6f} |")
        else:
            lines.append(f"| {family} | none reaches it | — | — |")
    lines.append("")
    for f in result.get("failed", []):
        lines.append(f"- failed, not timed: {f['family']} ({f['settings']}): {f['error']}: {f['message']}")
    for pkg, why in result.get("skipped", {}).items():
        lines.append(f"- {pkg}: skipped ({why})")
    labels = {
        "cold_vs_cold": "**headline** (cold start, both; peers with the best adjoint we found)",
        "cold_vs_cold_default_adjoint": "cold start, peers with their default adjoint solve",
        "warm_vs_warm": "warm start, both",
        "warm_vs_cold_peer": "poison_jax warm / peer cold (not like for like)",
        "any_vs_any": "any poison_jax row / any peer row",
    }
    for key, label in labels.items():
        r = result["ratios"][key]
        lines.append(
            f"- {label}: {r['poison_jax']} {_ms(r['poison_jax_ms'])} ms / {r['peer']} "
            f"{_ms(r['peer_ms'])} ms = **{_fmt(r['ratio'], '.2f')}** (minimum times: "
            f"{_fmt(r['ratio_of_minimum_times'], '.2f')})"
            + (
                f" (goal <= {GOAL}: {'met' if result['goal_met'] else 'not met'})"
                if key == "cold_vs_cold" and r["ratio"] is not None
                else ""
            )
        )
    step, cold = result.get("cg_step_ms"), result["ratios"]["cold_vs_cold"]
    if step and cold["ratio"] is not None:
        ours, peer = cold["poison_jax_ms"] / step, cold["peer_ms"] / step
        lines.append(
            f"- in CG steps ({step:.3f} ms each): the headline's poison_jax path costs {ours:.0f}, the peer "
            f"{peer:.0f}; the goal needs at most {GOAL * peer:.0f}"
        )
    return "\n".join(lines)


MARKERS = "osDv^<>PXh*p"


def plot(result: dict, path: Path) -> None:
    """1 - cosine against time, one line per family; cold starts left, warm starts right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bases = list(dict.fromkeys(r["family"].removesuffix(" warm") for r in result["rows"]))
    style = {b: (MARKERS[i % len(MARKERS)], f"C{i % 10}") for i, b in enumerate(bases)}
    floor = 1e-9
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), sharey=True)
    for ax, warm in zip(axes, (False, True), strict=False):
        for base in bases:
            rows = sorted(
                (
                    r
                    for r in result["rows"]
                    if r["family"].removesuffix(" warm") == base and r["warm"] == warm and r["cosine"] is not None
                ),
                key=lambda r: r["median_ms"],
            )
            if not rows:
                continue
            marker, colour = style[base]
            ax.loglog(
                [r["median_ms"] for r in rows],
                [max(1 - r["cosine"], floor) for r in rows],
                marker=marker,
                color=colour,
                ls="-" if base.startswith("poison_jax") else "--",
                label=base,
            )
        ax.axhline(1 - TARGET_COSINE, color="grey", ls=":", label=f"cosine = {TARGET_COSINE}")
        ax.set_xlabel("median warm wall time (ms)")
        ax.set_title(
            "inner solve from w0 = 0 (cold)"
            if not warm
            else "inner solve from the previous hyperiteration's solution (warm)",
            fontsize=9,
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel(f"1 - cosine to the exact hypergradient (floor {floor:g})")
    p = result["problem"]
    fig.suptitle(
        f"{p['name']}, {p['n_train']} train ({p['n_poison']} poison), float32; {result['device']}, "
        f"{result['cpu_count']} CPUs" + (" (--quick)" if result["quick"] else ""),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, "engine_peers")
    parser.add_argument(
        "--reference-only",
        metavar="DIR",
        default=None,
        help="internal: compute the float64 reference of DIR/problem.npz into DIR/reference.npz",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="after compiling, wait up to SECONDS for a 1-minute load average below 1.5 before "
        "timing (default: 0; the load is recorded either way)",
    )
    args = parser.parse_args(argv)
    if args.reference_only:
        compute_reference(Path(args.reference_only))
        return None
    select_device(args.device)
    result = run(quick=args.quick, wait_s=args.wait_idle or 0.0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(result, out / "engine_peers.png")
    result["plot"] = "engine_peers.png"
    write_results(args.out, "engine_peers", result, markdown(result))
    print(
        f"\nheadline: poison_jax / fastest peer to cosine {TARGET_COSINE} (cold) = "
        f"{_fmt(result['headline_ratio'], '.3f')} (goal <= {GOAL})"
    )
    return result


if __name__ == "__main__":
    main()
