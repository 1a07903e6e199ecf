"""Ways to differentiate an inner solve (floor 0): unrolled, implicit by CG, implicit and dense.

Each is a frozen dataclass called as
``adjoint(solver, inner_loss, outer_loss, w0, adjoint0, theta, args) -> Differentiated``: it
runs ``solver`` from ``w0`` and returns the outer value at the solution, its derivative in
``theta``, the solution, and what the adjoint solve did. Write your own (a frozen dataclass with
that ``__call__``) and pass it to :class:`~poison_jax.engine.Method`.

The implicit ones solve ``(∇²_w L + damping·I) v = ∇_w A`` at the solution ``w*`` and return
``∂_θ A - (∂_θ ∇_w L)ᵀ v``; ``w*`` is treated as a constant (no reverse pass through the solver,
so any solver works, including ``while_loop`` ones).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax.tree_utils as otu
from jax.flatten_util import ravel_pytree

from poison_jax.engine import checks
from poison_jax.engine._linear import conjugate_gradient, hvp, traced_once
from poison_jax.engine._solvers import RESULTS, DenseNewton, Solution, cho_solve

PyTree = Any
Loss = Callable[..., jax.Array]  # (w, theta, *args) -> scalar


class Differentiated(NamedTuple):
    """What a way to differentiate returns: the outer ``value``, ``grad`` (like ``theta``), the inner
    ``solution``, the adjoint ``v`` (``None`` where none is solved), the adjoint's ``status`` and
    ``stats``."""

    value: jax.Array
    grad: PyTree
    solution: Solution
    adjoint: PyTree
    status: jax.Array
    stats: dict[str, jax.Array]


def _segment(checkpoint: int | bool | None, steps: int) -> int | None:
    if checkpoint is None or checkpoint is False:
        return None
    if checkpoint is True:
        return max(1, math.isqrt(steps))
    return checks.positive_int("checkpoint", checkpoint)


@dataclasses.dataclass(frozen=True)
class Unrolled:
    """Reverse-mode differentiation through the solver's loop (``jax.vjp``): exact for the truncated
    problem (the paper's RMD). The solver must be reverse-differentiable: a fixed number of steps
    (:class:`~poison_jax.engine.GradientDescent`, or a ``lax.scan`` of your own), not a
    ``while_loop``.

    Attributes:
      checkpoint: ``None`` stores every step (memory ~ steps); an integer k remats the loop in
        segments of k steps (memory ~ steps/k + k); ``True`` picks k = isqrt(steps). Needs a solver
        whose ``solve`` takes ``checkpoint=`` and has ``steps`` (GradientDescent).
    """

    checkpoint: int | bool | None = None

    def __post_init__(self):
        if not (self.checkpoint is None or isinstance(self.checkpoint, bool)):
            checks.positive_int("checkpoint", self.checkpoint)

    def check_solver(self, solver: Any) -> None:
        unrolls_in_segments = not (self.checkpoint is None or self.checkpoint is False)
        if unrolls_in_segments and not isinstance(getattr(solver, "steps", None), int):
            raise TypeError(
                f"Unrolled(checkpoint={self.checkpoint!r}) needs a solver with a fixed number of steps "
                f"(GradientDescent), got {solver!r}: use checkpoint=None"
            )

    def __call__(self, solver, inner_loss: Loss, outer_loss: Loss, w0, adjoint0, theta, args) -> Differentiated:
        del adjoint0  # nothing to warm-start: the reverse pass solves no linear system
        segment = _segment(self.checkpoint, getattr(solver, "steps", 0))
        keywords = {} if segment is None else {"checkpoint": segment}

        def objective(th):
            solution = solver.solve(lambda w: inner_loss(w, th, *args), w0, **keywords)
            return outer_loss(solution.w, th, *args), solution

        try:
            value, pullback, solution = jax.vjp(objective, theta, has_aux=True)
            (grad,) = pullback(jnp.ones_like(value))
        except ValueError as err:
            if "Reverse-mode differentiation does not work for lax.while_loop" not in str(err):
                raise
            raise TypeError(
                f"Unrolled() differentiates through the solver's loop, but {solver!r} runs a while_loop, "
                "which reverse mode cannot go through: use ImplicitCG() or Dense() with it"
            ) from err
        return Differentiated(value, grad, solution, None, jnp.asarray(RESULTS.successful, jnp.int32), {})


def _implicit(solve_adjoint, solver, inner_loss, outer_loss, w0, adjoint0, theta, args) -> Differentiated:
    """The implicit hypergradient at the solver's ``w*``, with ``solve_adjoint(f, w*, rhs, v0, solution)``
    (``solution``: the solver's :class:`~poison_jax.engine.Solution`, e.g. for a factor it carries)."""
    theta_c, args_c = jax.lax.stop_gradient((theta, args))  # w* is differentiated implicitly
    solution = jax.lax.stop_gradient(solver.solve(lambda w: inner_loss(w, theta_c, *args_c), w0))
    w_star = solution.w
    value, (g_w, g_theta) = jax.value_and_grad(outer_loss, argnums=(0, 1))(w_star, theta, *args)
    v, status, stats = solve_adjoint(lambda w: inner_loss(w, theta, *args), w_star, g_w, adjoint0, solution)
    _, mixed_vjp = jax.vjp(lambda th: jax.grad(inner_loss)(w_star, th, *args), theta)
    (mixed,) = mixed_vjp(v)
    return Differentiated(value, otu.tree_sub(g_theta, mixed), solution, v, status, stats)


@dataclasses.dataclass(frozen=True)
class ImplicitCG:
    """The implicit function theorem with conjugate gradient on Hessian-vector products (``jvp`` of
    ``grad``), warm-started from the previous adjoint when one is passed.

    Attributes:
      iters: maximum CG iterations (> 0); reaching them sets the status ``adjoint_max_steps``.
      tol: relative residual at which CG stops (>= 0); float32 floors near 1e-6.
      damping: added to the Hessian's diagonal (>= 0).
    """

    iters: int = 100
    tol: float = 1e-6
    damping: float = 0.0

    def __post_init__(self):
        checks.positive_int("iters", self.iters)
        checks.positive_finite("tol", self.tol, allow_zero=True)
        checks.positive_finite("damping", self.damping, allow_zero=True)

    def check_solver(self, solver: Any) -> None:
        del solver  # any solver: w* is a constant here

    def solve_adjoint(self, f, w_star, rhs, v0, solution: Solution | None = None):
        del solution  # CG needs only Hessian-vector products at w*
        f = traced_once(f, w_star)  # CG's products (before, in and after its loop) share one trace of f
        matvec = lambda v: otu.tree_add_scale(hvp(f, w_star, v), self.damping, v)
        v, info = conjugate_gradient(matvec, rhs, maxiter=self.iters, tol=self.tol, x0=v0)
        status = jnp.where(info.converged, jnp.int32(RESULTS.successful), jnp.int32(RESULTS.adjoint_max_steps))
        return v, status, {"adjoint_steps": info.iterations, "adjoint_residual": info.residual}

    def __call__(self, solver, inner_loss: Loss, outer_loss: Loss, w0, adjoint0, theta, args) -> Differentiated:
        return _implicit(self.solve_adjoint, solver, inner_loss, outer_loss, w0, adjoint0, theta, args)


@dataclasses.dataclass(frozen=True)
class Dense:
    """The implicit function theorem with the ``(p, p)`` Hessian solved directly: no iterations,
    exact to float rounding. For small problems (``p`` up to a few thousand weights); the reference
    the iterative methods are checked against.

    With :class:`~poison_jax.engine.DenseNewton` it reuses the Cholesky factor of
    ``∇²L + damping·I`` that the solver returns at ``w*`` (``Solution.factor``): no second Hessian.
    The two must then have the same ``damping`` (a :class:`~poison_jax.engine.Method` pairing them
    otherwise is refused; :class:`~poison_jax.engine.ImplicitDense` builds the pair). A solver of
    your own that returns a factor must factor ``∇²L + damping·I`` with this ``damping``. With any
    other solver it materialises the Hessian (``jax.hessian``) at ``w*`` and solves by LU. Where the
    factored matrix is not positive definite (a saddle; a singular Hessian without damping) the
    factor is NaN and so are the hypergradient and its residual: the status says ``nonfinite``.

    Attributes:
      damping: added to the Hessian's diagonal (>= 0).
    """

    damping: float = 0.0

    def __post_init__(self):
        checks.positive_finite("damping", self.damping, allow_zero=True)

    def check_solver(self, solver: Any) -> None:
        if isinstance(solver, DenseNewton) and solver.damping != self.damping:
            raise ValueError(
                f"Dense(damping={self.damping!r}) cannot reuse the Cholesky factor of {solver!r}, which "
                f"factors the Hessian + {solver.damping!r}·I: give both the same damping "
                f"(engine.ImplicitDense(damping=...) does), or use ImplicitCG({self.damping!r}) as the adjoint"
            )

    def solve_adjoint(self, f, w_star, rhs, v0, solution: Solution | None = None):
        del v0  # a direct solve needs no start
        flat_w, unravel = ravel_pytree(w_star)
        flat_rhs = ravel_pytree(rhs)[0]
        flat_f = lambda x: f(unravel(x))
        if solution is not None and solution.factor is not None:  # the solver's factor at w*
            v = cho_solve(solution.factor, flat_rhs)
            product = hvp(flat_f, flat_w, v) + self.damping * v  # one Hessian-vector product to check it
        else:
            eye = jnp.eye(flat_w.size, dtype=flat_w.dtype)
            hessian = jax.hessian(flat_f)(flat_w) + self.damping * eye
            v = jnp.linalg.solve(hessian, flat_rhs)
            product = hessian @ v
        scale = jnp.maximum(jnp.linalg.norm(flat_rhs), jnp.finfo(flat_rhs.dtype).tiny)
        residual = jnp.linalg.norm(product - flat_rhs) / scale  # how well float precision solved it
        return unravel(v), jnp.asarray(RESULTS.successful, jnp.int32), {"adjoint_residual": residual}

    def __call__(self, solver, inner_loss: Loss, outer_loss: Loss, w0, adjoint0, theta, args) -> Differentiated:
        return _implicit(self.solve_adjoint, solver, inner_loss, outer_loss, w0, adjoint0, theta, args)
