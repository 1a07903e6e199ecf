"""Linear algebra on pytrees for the engine: Hessian-vector products and conjugate gradient."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from poison_jax.engine.checks import same_shapes

PyTree = Any


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


def traced_once(f: Callable, like: Any) -> Callable:
    """``f`` jitted when ``like`` is traced (inside ``jit``, ``vmap``, ...): its gradients,
    Hessian-vector products and calls then reuse one trace of ``f``, and the nested jit is inlined
    (the program is the same). Called eagerly, ``f`` as it is: a jitted closure over concrete data
    would compile anew, with the data as constants, on every call.

    >>> import jax, jax.numpy as jnp
    >>> calls = []
    >>> def f(w):
    ...     calls.append(1)  # runs once per trace
    ...     return jnp.sum(w**2)
    >>> @jax.jit
    ... def value_and_grads(w):
    ...     g = traced_once(f, w)
    ...     return g(w), jax.grad(g)(w), jax.grad(g)(2 * w)
    >>> [a.tolist() for a in value_and_grads(jnp.ones(2))], len(calls)
    ([2.0, [2.0, 2.0], [4.0, 4.0]], 1)
    >>> traced_once(f, jnp.ones(2)) is f  # eagerly: f itself
    True
    """
    leaves = jax.tree_util.tree_leaves(like)
    return jax.jit(f) if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves) else f


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
    same_shapes("v", v, "w", w)
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
