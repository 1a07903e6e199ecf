"""The engine_peers problem (float32 arrays shared by both processes through an npz) and its exact
float64 reference, computed in a process of its own."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from benchmarks import engine_calls as ec
from benchmarks import harness

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
PROBLEM_KEYS = ("name", "dataset", "load", "d", "n_train", "n_val", "n_poison", "batch", "log_lam", "seed", "lr")
_STATE_FIELDS = ("xp", "yp", "replace_idx", "active", "trainable", "log_lam", "key", "nonfinite_steps")
_DATA_FIELDS = ("x_train", "y_train", "x_val", "y_val")


class Problem(NamedTuple):
    """The losses of :func:`poison_jax.poisoning.attack.make_losses`, the start, ``theta`` and the
    previous hyperiteration's ``theta_prev`` (``xp`` perturbed), for the warm starts."""

    inner: Any
    outer: Any
    w0: Any
    theta: Any
    theta_prev: Any


def build_problem(spec: dict) -> dict:
    """One split with all poison points active, as numpy arrays (float32 features)."""
    from poison_jax.poisoning import attack, data, models

    ds = data.load_dataset(spec["dataset"], **spec["load"])
    splits = data.sample_splits(ds, [spec["seed"]], spec["n_train"], spec["n_val"])
    model = models.logistic_regression(spec["d"])
    settings = attack.AttackSettings(
        model, ec.rmd_method(1, spec["lr"]), alpha=1.0, beta=1.0, x_box=(0.0, 1.0), lam_box=(-8.0, 12.0)
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
    return inner, outer, w0, {"xp": state.xp, "log_lam": state.log_lam}


def float32_problem(arrays: dict, spec: dict) -> Problem:
    inner, outer, w0, theta = losses(arrays, spec["d"], jnp.float32)
    noise = spec["perturb"] * jax.random.normal(jax.random.PRNGKey(1), theta["xp"].shape, jnp.float32)
    theta_prev = {"xp": jnp.clip(theta["xp"] + noise, 0.0, 1.0), "log_lam": theta["log_lam"]}
    return Problem(inner, outer, w0, theta, theta_prev)


def compute_reference(folder: Path) -> None:
    """Read ``folder/problem.npz``, write the exact float64 hypergradient to ``folder/reference.npz``."""
    jax.config.update("jax_enable_x64", True)
    with np.load(folder / "problem.npz") as f:
        arrays = {k: f[k] for k in f.files if k != "d"}
        d = int(f["d"])
    inner, outer, w0, theta = losses(arrays, d, jnp.float64)
    start = time.perf_counter()
    solver = ec.newton_cg(tol=1e-12, maxiter=100, cg_iters=1000)
    w_star, iterations, converged = jax.jit(lambda w, th: ec.solve(solver, lambda v: inner(v, th), w))(w0, theta)
    flat, unravel = ravel_pytree(w_star)
    grad_norm = float(jnp.linalg.norm(ravel_pytree(jax.grad(inner)(w_star, theta))[0]))
    eig = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda f: inner(unravel(f), theta))(flat)))
    exact = ec.exact(inner, outer, w_star, theta)
    np.savez(
        folder / "reference.npz",
        xp=np.asarray(exact.grad["xp"]),
        log_lam=np.asarray(exact.grad["log_lam"]),
        outer_value=float(exact.value),
        grad_norm=grad_norm,
        newton_iterations=int(iterations),
        newton_converged=bool(converged),
        hessian_min_eig=float(eig[0]),
        hessian_max_eig=float(eig[-1]),
        seconds=time.perf_counter() - start,
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
        self._proc = subprocess.Popen(
            harness.module_command("engine_peers", "--reference-only", str(self.folder)),
            cwd=harness.ROOT,
            env=dict(os.environ, JAX_ENABLE_X64="1"),
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
        info = {k: v.item() for k, v in ref.items()}
        info["solver"] = "poison_jax NewtonCG(tol=1e-12, maxiter=100, cg_iters=1000) from w = 0, float64"
        info["hypergradient"] = "poison_jax Method(given w*, Dense()): dense Hessian solve, float64"
        return exact, info
