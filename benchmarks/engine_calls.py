"""Every call the benchmarks make into :mod:`poison_jax.engine`, in a few small functions.

The scripts build methods and hypergradients only through these, so that a change of the engine's
API is a change of this file. A hypergradient is the engine's :class:`~poison_jax.engine.Result`
(``value``, ``grad``, ``status``, ``stats``, ``warm``).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from poison_jax import engine


@dataclasses.dataclass(frozen=True)
class Given:
    """An inner "solver" that returns its start: differentiate at a ``w*`` computed elsewhere."""

    def solve(self, f, w0) -> engine.Solution:
        del f
        return engine.Solution(w0, jnp.asarray(engine.RESULTS.successful, jnp.int32), {"inner_steps": jnp.int32(0)})


def rmd_method(steps: int, lr: float, checkpoint=None) -> engine.Method:
    """The paper's method: ``steps`` of gradient descent, differentiated in reverse mode."""
    return engine.RMD(steps=steps, lr=lr, checkpoint=checkpoint)


def ift_method(steps: int, lr: float, cg_iters: int, cg_tol: float) -> engine.Method:
    """``steps`` of gradient descent, then the implicit adjoint by CG."""
    return engine.IFT(steps=steps, lr=lr, cg_iters=cg_iters, cg_tol=cg_tol)


def newton_cg(tol: float, maxiter: int = 100, cg_iters: int = 50):
    return engine.NewtonCG(tol=tol, maxiter=maxiter, cg_iters=cg_iters)


def lbfgs(tol: float, maxiter: int = 1000):
    return engine.LBFGS(tol=tol, maxiter=maxiter)


def implicit_method(solver, cg_iters: int, cg_tol: float, damping: float = 0.0) -> engine.Method:
    """A converged inner ``solver`` (warm-started), the implicit adjoint by CG."""
    return engine.Implicit(solver=solver, cg_iters=cg_iters, cg_tol=cg_tol, damping=damping)


def implicit_dense_method(tol: float, maxiter: int = 100, damping: float = 0.0) -> engine.Method:
    """Dense Newton (warm-started), the implicit adjoint by its Cholesky factor at w*."""
    return engine.ImplicitDense(tol=tol, maxiter=maxiter, damping=damping)


def hypergrad(method, inner, outer, w0, theta, *args, warm=None) -> engine.Result:
    """``method``'s hypergradient from ``w0`` (or from ``warm``, an earlier result's ``warm``)."""
    return engine.hypergrad(method, inner, outer, w0, theta, *args, warm=warm)


@functools.partial(jax.jit, static_argnums=(0, 1))
def fit(method, inner, w0, theta, *args):
    """``method``'s inner solution alone, jitted (for RMD and IFT: the forward unroll)."""
    return method.fit(inner, w0, theta, *args)


def rmd(inner, outer, w0, theta, *args, steps: int, lr: float, checkpoint=None):
    """``(value, grad)`` of the paper's RMD hypergradient."""
    r = engine.hypergrad(rmd_method(steps, lr, checkpoint), inner, outer, w0, theta, *args)
    return r.value, r.grad


def ift_at(inner, outer, w_star, theta, *args, cg_iters: int, cg_tol: float) -> engine.Result:
    """The implicit hypergradient at a given ``w_star`` (no training), CG on the adjoint."""
    method = engine.Method(Given(), engine.ImplicitCG(iters=cg_iters, tol=cg_tol))
    return engine.hypergrad(method, inner, outer, w_star, theta, *args)


def exact(inner, outer, w_star, theta, *args) -> engine.Result:
    """The implicit hypergradient at ``w_star`` with a dense Hessian solve (small problems, float64)."""
    return engine.hypergrad(engine.Method(Given(), engine.Dense()), inner, outer, w_star, theta, *args)


def cold_warm(w0) -> engine.Warm:
    """The warm state of a call from ``w0`` with a zero adjoint."""
    return engine.Warm(w0, jax.tree_util.tree_map(jnp.zeros_like, w0))


def cg_steps(inner, w, theta, rhs, steps: int):
    """``steps`` conjugate-gradient steps (tolerance 0: every step runs) on ``inner``'s Hessian at ``w``."""
    return engine.conjugate_gradient(lambda v: engine.hvp(lambda u: inner(u, theta), w, v), rhs, maxiter=steps, tol=0.0)


def solve(solver, fn, w0):
    """``(w, iterations, converged)`` of a converged inner ``solver`` minimising ``fn`` from ``w0``."""
    solution = solver.solve(fn, w0)
    return solution.w, solution.stats["inner_steps"], solution.status == engine.RESULTS.successful
