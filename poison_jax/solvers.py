"""Converged inner solvers for bilevel problems (floor 0): ``argmin_w f(w)`` to a tolerance.

The paper trains the inner problem by a fixed number of gradient-descent steps. A hypergradient by
the implicit function theorem is only right where ``∇_w f = 0``; these solvers get there, from a
warm start, and say whether they did:

* :class:`NewtonCG` -- truncated Newton: each step solves ``∇²f p = -∇f`` by conjugate gradient
  on Hessian-vector products (:func:`hvp`) to a relative residual ``min(0.5, sqrt(||∇f||))``, then
  backtracks along ``p`` until the Armijo condition holds (along ``-∇f`` when no step along ``p``
  does, e.g. a huge ``p`` from a nearly singular Hessian). Quadratic convergence near a strongly
  convex minimum (logistic regression with an L2 penalty); a negative-curvature direction falls
  back to the gradient, so it also finds a local minimum of a non-convex ``f``.
* :class:`LBFGS` -- optax's ``lbfgs`` with its zoom line search, in a ``lax.while_loop``.

Both are frozen dataclasses (static configuration, validated at construction), called as
``solver(f, w0) -> (w, SolveInfo)``; ``w0`` and ``w`` are any pytree of float arrays. They run
under ``jax.jit`` and ``jax.vmap`` (under ``vmap`` each lane keeps its own iterate; the loop runs
until every lane has stopped).

Also here, because the solvers and the hypergradients share them: :func:`hvp` and
:func:`conjugate_gradient` (with a warm start ``x0``).

Example::

    >>> import jax.numpy as jnp
    >>> from poison_jax import solvers
    >>> f = lambda w: jnp.sum(jnp.logaddexp(0.0, -w)) + 0.5 * jnp.sum(w ** 2)
    >>> w, info = solvers.NewtonCG(tol=1e-6, maxiter=20)(f, jnp.zeros(3))
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
    vdot = otu.tree_vdot
    b_norm = jnp.sqrt(vdot(b, b))
    threshold = (tol * b_norm) ** 2
    if x0 is None:
        x0, r0 = otu.tree_zeros_like(b), b
    else:
        r0 = otu.tree_sub(b, matvec(x0))

    def cond(state):
        _, _, _, rs, k, positive = state
        return (k < maxiter) & (rs > threshold) & positive

    def body(state):
        x, r, p, rs, k, _ = state
        ap = matvec(p)
        curvature = vdot(p, ap)
        positive = curvature > 0
        alpha = jnp.where(positive, rs / jnp.where(positive, curvature, 1), 0)
        x = otu.tree_add_scale(x, alpha, p)
        r = otu.tree_add_scale(r, -alpha, ap)
        rs_new = vdot(r, r)
        p = otu.tree_add_scale(r, rs_new / jnp.where(rs > 0, rs, 1), p)
        return x, r, p, rs_new, k + 1, positive

    rs0 = vdot(r0, r0)
    init = (x0, r0, r0, rs0, jnp.asarray(0, jnp.int32), jnp.asarray(True))
    x, _, _, _, iterations, _ = jax.lax.while_loop(cond, body, init)
    residual_vec = otu.tree_sub(b, matvec(x))
    residual = jnp.sqrt(vdot(residual_vec, residual_vec)) / jnp.where(b_norm > 0, b_norm, 1)
    return x, CGInfo(iterations, residual, residual <= tol)


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


def _armijo_backtrack(f, w, value, slope, p, *, max_halvings: int = 30):
    """Largest ``t`` in 1, 1/2, 1/4, ... with ``f(w + t p) <= f(w) + 1e-4 t slope`` (0 if none)."""

    def trial(t):
        return f(otu.tree_add_scale(w, t, p))

    def cond(state):
        t, f_t, k = state
        return (k < max_halvings) & ~(f_t <= value + 1e-4 * t * slope)

    def body(state):
        t, _, k = state
        t = t / 2
        return t, trial(t), k + 1

    one = jnp.asarray(1.0, value.dtype)
    t, f_t, _ = jax.lax.while_loop(cond, body, (one, trial(one), jnp.asarray(0, jnp.int32)))
    accepted = f_t <= value + 1e-4 * t * slope
    return jnp.where(accepted, t, 0.0)


@dataclasses.dataclass(frozen=True)
class NewtonCG:
    """Truncated Newton with an Armijo line search, on Hessian-vector products.

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
        value_and_grad = jax.value_and_grad(f)

        def cond(state):
            _, _, g, k, stalled = state
            return (k < self.maxiter) & (otu.tree_norm(g) > self.tol) & ~stalled

        def body(state):
            w, value, g, k, _ = state
            g_norm = otu.tree_norm(g)
            neg_g = otu.tree_scale(-1.0, g)

            def matvec(v):
                return otu.tree_add_scale(hvp(f, w, v), self.damping, v)

            # Eisenstat-Walker forcing: loose solves far away, tight ones near the minimum.
            p, _ = conjugate_gradient(matvec, neg_g, maxiter=self.cg_iters, tol=jnp.minimum(0.5, jnp.sqrt(g_norm)))
            slope = otu.tree_vdot(g, p)
            p = jax.tree_util.tree_map(lambda a, b: jnp.where(slope < 0, a, b), p, neg_g)  # not descent: -g
            slope = jnp.minimum(slope, -(g_norm**2))
            t = _armijo_backtrack(f, w, value, slope, p)
            # A direction no step along which decreases f (CG on a nearly singular Hessian can return a
            # huge one): retry along -g before giving up.
            retry = t == 0
            p = jax.tree_util.tree_map(lambda a, b: jnp.where(retry, b, a), p, neg_g)
            t = jax.lax.cond(retry, lambda: _armijo_backtrack(f, w, value, -(g_norm**2), neg_g), lambda: t)
            w = otu.tree_add_scale(w, t, p)
            value, g = value_and_grad(w)
            return w, value, g, k + 1, t == 0

        value, g = value_and_grad(w0)
        w, _, g, k, _ = jax.lax.while_loop(cond, body, (w0, value, g, jnp.asarray(0, jnp.int32), jnp.asarray(False)))
        g_norm = otu.tree_norm(g)
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
