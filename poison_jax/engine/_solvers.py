"""Converged inner solvers for bilevel problems (floor 0): ``argmin_w f(w)`` to a tolerance.

The paper trains the inner problem by a fixed number of gradient-descent steps. A hypergradient by
the implicit function theorem is only right where ``∇_w f = 0``; these solvers get there, from a
warm start, and say whether they did:

* :class:`NewtonCG` -- truncated Newton: each step solves ``∇²f p = -∇f`` by conjugate gradient
  on Hessian-vector products (:func:`hvp`) to a relative residual ``min(0.5, sqrt(||∇f||))``, then
  backtracks along ``p`` until the Armijo condition, or near the minimum (where the decrease is
  below ``f``'s rounding) Hager and Zhang's approximate Wolfe conditions, hold (along ``-∇f`` when
  no step along ``p`` does, e.g. a huge ``p`` from a nearly singular Hessian). It runs on the
  flattened ``w``. Quadratic convergence near a strongly convex minimum (logistic regression with
  an L2 penalty); a negative-curvature direction falls back to the gradient, so it also finds a
  local minimum of a smooth non-convex ``f``. A network with LeakyReLU (the paper's MLP) often has
  its minima on a kink, where ``∇f`` jumps and never falls below the tolerance: there the solver
  runs to ``maxiter`` and reports ``converged = False``, as does :class:`LBFGS`.
* :class:`LBFGS` -- optax's ``lbfgs`` with its zoom line search, in a ``lax.while_loop``.

Both are frozen dataclasses (static configuration, validated at construction), called as
``solver(f, w0) -> (w, SolveInfo)``; ``w0`` and ``w`` are any pytree of float arrays. They run
under ``jax.jit`` and ``jax.vmap`` (under ``vmap`` each lane keeps its own iterate; the loop runs
until every lane has stopped).

Also here, because the solvers and the hypergradients share them: :func:`hvp` and
:func:`conjugate_gradient` (with a warm start ``x0``).

Example::

    >>> import jax.numpy as jnp
    >>> from poison_jax import engine
    >>> f = lambda w: jnp.sum(jnp.logaddexp(0.0, -w)) + 0.5 * jnp.sum(w ** 2)
    >>> w, info = engine.NewtonCG(tol=1e-6, maxiter=20)(f, jnp.zeros(3))
    >>> bool(info.converged), int(info.iterations) <= 6
    (True, True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu
from jax.flatten_util import ravel_pytree

PyTree = Any
_Tracer = getattr(jax.core, "Tracer", None) or jax._src.core.Tracer  # public name moves between releases

__all__ = ["CGInfo", "LBFGS", "NewtonCG", "SolveInfo", "conjugate_gradient", "hvp"]


class CGInfo(NamedTuple):
    """What a conjugate-gradient solve did.

    Attributes:
      iterations: int32 scalar, CG iterations run.
      residual: relative residual ``||b - A x|| / ||b||`` of the returned solution (recomputed,
        not the recurrence's estimate; 0 when ``b`` is zero).
      converged: bool scalar, ``residual <= tol``.
    """

    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array


class SolveInfo(NamedTuple):
    """What an inner solve did.

    Attributes:
      iterations: int32 scalar, solver iterations run (for fixed-step gradient descent: the steps).
      grad_norm: ``||∇_w f||`` at the returned ``w``.
      converged: bool scalar, ``grad_norm <= tol`` (for fixed-step training, which has no
        tolerance: whether ``w`` stayed finite).
    """

    iterations: jax.Array
    grad_norm: jax.Array
    converged: jax.Array


def _same_structure(a: PyTree, b: PyTree) -> bool:
    structure: Any = jax.tree_util.tree_structure(a)  # PyTreeDef's stubs lack __eq__
    return bool(structure == jax.tree_util.tree_structure(b))


def hvp(f: Callable[[PyTree], jax.Array], w: PyTree, v: PyTree) -> PyTree:
    """Hessian-vector product ``∇²f(w) · v`` by forward-over-reverse (``jax.jvp`` of ``jax.grad``).

    The Hessian is never materialised: the cost is about that of two gradients.

    Args:
      f: scalar function of one pytree.
      w: point, any pytree.
      v: direction, same structure and shapes as ``w``.
    Returns:
      A pytree like ``w``.
    """
    if not _same_structure(v, w) or any(
        jnp.shape(a) != jnp.shape(b)
        for a, b in zip(jax.tree_util.tree_leaves(v), jax.tree_util.tree_leaves(w), strict=False)
    ):
        raise ValueError(
            f"v has pytree structure and shapes {jax.tree_util.tree_map(jnp.shape, v)}, but w has "
            f"{jax.tree_util.tree_map(jnp.shape, w)}; they must match"
        )
    return jax.jvp(jax.grad(f), (w,), (v,))[1]


def conjugate_gradient(
    matvec: Callable[[PyTree], PyTree], b: PyTree, *, maxiter: int, tol, x0: PyTree | None = None
) -> tuple[PyTree, CGInfo]:
    """Solve ``A x = b`` for symmetric positive-definite ``A`` given as ``matvec``, on pytrees.

    Stops after ``maxiter`` iterations or when the relative residual ``||b - A x|| / ||b||`` is at
    most ``tol``. Unlike ``jax.scipy.sparse.linalg.cg`` it reports what it did (:class:`CGInfo`).
    A warm start ``x0`` (e.g. the previous solution of a slowly changing system) saves iterations;
    a direction of non-positive curvature ends the solve. Under ``vmap`` each lane stops updating
    once it has converged.

    Returns:
      ``(x, info)`` with ``x`` like ``b``.
    """
    # The iteration runs on one flat vector: a pytree of several leaves would make every vector
    # operation in the loop one small XLA op per leaf (about 10 % of a CG step on logistic regression).
    flat_b, unravel = ravel_pytree(b)

    def flat_matvec(x):
        return ravel_pytree(matvec(unravel(x)))[0]

    b_norm = jnp.linalg.norm(flat_b)
    threshold = (tol * b_norm) ** 2
    if x0 is None:
        x, r0 = jnp.zeros_like(flat_b), flat_b
    else:
        x = ravel_pytree(x0)[0].astype(flat_b.dtype)
        r0 = flat_b - flat_matvec(x)

    def cond(state):
        _, _, _, rs, k, positive = state
        return (k < maxiter) & (rs > threshold) & positive

    def body(state):
        x, r, p, rs, k, _ = state
        ap = flat_matvec(p)
        curvature = p @ ap
        positive = curvature > 0
        alpha = jnp.where(positive, rs / jnp.where(positive, curvature, 1), 0)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = r @ r
        p = r + (rs_new / jnp.where(rs > 0, rs, 1)) * p
        return x, r, p, rs_new, k + 1, positive

    init = (x, r0, r0, r0 @ r0, jnp.asarray(0, jnp.int32), jnp.asarray(True))
    x, _, _, _, iterations, _ = jax.lax.while_loop(cond, body, init)
    residual = jnp.linalg.norm(flat_b - flat_matvec(x)) / jnp.where(b_norm > 0, b_norm, 1)
    return unravel(x), CGInfo(iterations, residual, residual <= tol)


# --------------------------------------------------------------------------------------------
# Validation of static settings.


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_positive_finite(name: str, value: Any, *, allow_zero: bool = False) -> None:
    if isinstance(value, _Tracer):
        return  # a traced value cannot be inspected; the caller vouches for it
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if arr.shape != ():
        raise ValueError(f"{name} must be a scalar, got shape {arr.shape}")
    low_ok = arr >= 0 if allow_zero else arr > 0
    if not (np.isfinite(arr) and low_ok):
        allowed = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


# --------------------------------------------------------------------------------------------
# Solvers.


def _line_search(value_and_grad, w, value, grad, p, slope, *, max_halvings: int = 30):
    """Backtracking line search on flat vectors: the largest ``t`` in 1, 1/2, ..., 2**-max_halvings that
    passes along ``d = p``, and if none does (CG on a nearly singular Hessian can return a huge ``p``),
    along ``d = -grad``.

    A step passes the Armijo condition ``f(w + t d) <= f(w) + 1e-4 t slope``, or, where ``t |slope|``
    is within ``1e-6 |f|`` (the decrease asked for is lost in ``f``'s rounding), Hager and Zhang's
    approximate Wolfe conditions (SIAM J. Optim. 16, 2005): ``f`` rose by at most ``1e-6 |f|`` and the
    directional derivative went from ``φ'(0) < 0`` to ``φ'(t)`` in ``[0.9 φ'(0), -0.8 φ'(0)]``. Near
    the minimum the decrease of a Newton step falls below the rounding of ``f``, where Armijo alone
    rejects every step and the solve stalls short of its tolerance; the directional derivative is
    still exact there.

    One loop for both directions, so that under ``vmap`` a lane pays only for the trials it needs.
    Each trial evaluates the gradient too: the accepted one is the next iteration's. Returns
    ``(step, f(w + step), ∇f(w + step), passed)`` with ``step = t d``, or ``(0, value, grad, False)``
    when no trial passes.
    """
    steepest = -(grad @ grad)
    derivative = grad @ p

    def trial(t, along_grad):
        d = jnp.where(along_grad, -grad, p)
        f_t, g_t = value_and_grad(w + t * d)
        return t * d, f_t, g_t, g_t @ d

    def passes(t, along_grad, f_t, derivative_t):
        decrease = t * jnp.where(along_grad, steepest, slope)  # < 0
        armijo = f_t <= value + 1e-4 * decrease
        phi0 = jnp.where(along_grad, steepest, derivative)
        slack = 1e-6 * jnp.abs(value)
        approximate_wolfe = (
            (-decrease <= slack)  # only where the decrease asked for is lost in f's rounding
            & (f_t <= value + slack)
            & (phi0 < 0)
            & (derivative_t >= 0.9 * phi0)
            & (derivative_t <= -0.8 * phi0)
        )
        return armijo | approximate_wolfe

    def cond(state):
        t, along_grad, _, f_t, _, derivative_t, k = state
        return (k < 2 * max_halvings + 1) & ~passes(t, along_grad, f_t, derivative_t)

    def body(state):
        t, along_grad, *_, k = state
        switch = k == max_halvings  # every t along p failed: start again along -grad
        along_grad = along_grad | switch
        t = jnp.where(switch, 1.0, t / 2).astype(t.dtype)
        return t, along_grad, *trial(t, along_grad), k + 1

    one, no = jnp.asarray(1.0, value.dtype), jnp.asarray(False)
    init = (one, no, *trial(one, no), jnp.asarray(0))
    t, along_grad, step, f_t, g_t, derivative_t, _ = jax.lax.while_loop(cond, body, init)
    ok = passes(t, along_grad, f_t, derivative_t)
    return jnp.where(ok, step, 0.0), jnp.where(ok, f_t, value), jnp.where(ok, g_t, grad), ok


@dataclasses.dataclass(frozen=True)
class NewtonCG:
    """Truncated Newton with a backtracking line search, on Hessian-vector products.

    Attributes:
      tol: stop when ``||∇f|| <= tol`` (> 0). float32 reaches about 1e-6 on the projects' problems.
      maxiter: iteration cap (> 0); reaching it leaves ``converged`` False.
      cg_iters: conjugate-gradient iterations per Newton step (> 0).
      damping: added to the Hessian's diagonal in the Newton system (>= 0); keeps the step defined
        where an unpenalised bias makes the Hessian singular (separable data).
    """

    tol: float = 1e-5
    maxiter: int = 100
    cg_iters: int = 50
    damping: float = 0.0

    def __post_init__(self):
        check_positive_finite("tol", self.tol)
        check_positive_int("maxiter", self.maxiter)
        check_positive_int("cg_iters", self.cg_iters)
        check_positive_finite("damping", self.damping, allow_zero=True)

    def __call__(self, f: Callable[[PyTree], jax.Array], w0: PyTree) -> tuple[PyTree, SolveInfo]:
        flat_w0, unravel = ravel_pytree(w0)  # one flat vector: one XLA op per vector operation, not per leaf
        w, info = self._solve(lambda x: f(unravel(x)), flat_w0)
        return unravel(w), info

    def _solve(self, f: Callable[[jax.Array], jax.Array], w0: jax.Array) -> tuple[jax.Array, SolveInfo]:
        value_and_grad = jax.value_and_grad(f)

        def cond(state):
            _, _, g, k, stalled = state
            return (k < self.maxiter) & (jnp.linalg.norm(g) > self.tol) & ~stalled

        def body(state):
            w, value, g, k, _ = state
            g_norm = jnp.linalg.norm(g)

            def matvec(v):
                return hvp(f, w, v) + self.damping * v

            # Eisenstat-Walker forcing: loose solves far away, tight ones near the minimum.
            p, _ = conjugate_gradient(matvec, -g, maxiter=self.cg_iters, tol=jnp.minimum(0.5, jnp.sqrt(g_norm)))
            slope = g @ p
            p = jnp.where(slope < 0, p, -g)  # not a descent direction: -g
            slope = jnp.minimum(slope, -(g_norm**2))
            step, value, g_next, passed = _line_search(value_and_grad, w, value, g, p, slope)
            return w + step, value, g_next, k + 1, ~passed

        value, g = value_and_grad(w0)
        w, _, g, k, _ = jax.lax.while_loop(cond, body, (w0, value, g, jnp.asarray(0, jnp.int32), jnp.asarray(False)))
        g_norm = jnp.linalg.norm(g)
        return w, SolveInfo(k, g_norm, g_norm <= self.tol)


@dataclasses.dataclass(frozen=True)
class LBFGS:
    """optax's L-BFGS (``optax.lbfgs``, zoom line search) in a ``lax.while_loop``.

    Attributes:
      tol: stop when ``||∇f|| <= tol`` (> 0).
      maxiter: iteration cap (> 0); reaching it leaves ``converged`` False.
      memory: number of curvature pairs kept (> 0).
    """

    tol: float = 1e-5
    maxiter: int = 500
    memory: int = 10

    def __post_init__(self):
        check_positive_finite("tol", self.tol)
        check_positive_int("maxiter", self.maxiter)
        check_positive_int("memory", self.memory)

    def __call__(self, f: Callable[[PyTree], jax.Array], w0: PyTree) -> tuple[PyTree, SolveInfo]:
        opt = optax.lbfgs(memory_size=self.memory)
        value_and_grad = optax.value_and_grad_from_state(f)

        def cond(carry):
            _, state, k = carry
            g = otu.tree_get(state, "grad")
            return (k == 0) | ((k < self.maxiter) & (otu.tree_norm(g) > self.tol))

        def body(carry):
            w, state, k = carry
            value, g = value_and_grad(w, state=state)
            updates, state = opt.update(g, state, w, value=value, grad=g, value_fn=f)
            return optax.apply_updates(w, updates), state, k + 1

        w, _, k = jax.lax.while_loop(cond, body, (w0, opt.init(w0), jnp.asarray(0, jnp.int32)))
        g_norm = otu.tree_norm(jax.grad(f)(w))
        return w, SolveInfo(k, g_norm, g_norm <= self.tol)
