"""Hypergradients of bilevel problems: the generic engine of poison_jax (floor 0).

A bilevel problem is given by two scalar functions of pytrees, with data as extra arguments::

    inner_loss(w, theta, *args) -> scalar   # the learner fits w:  w* = argmin_w inner_loss(w, theta, *args)
    outer_loss(w, theta, *args) -> scalar   # the objective A(theta) = outer_loss(w*(theta), theta, *args)

This module knows nothing about poisoning, data or models. It computes ``dA/dtheta`` in three
ways:

* :func:`rmd_hypergrad` -- reverse-mode differentiation through ``steps`` of full-batch gradient
  descent (:func:`unroll`), exact for the truncated problem and cheap to make memory-light with
  ``checkpoint``;
* :func:`ift_hypergrad` -- the implicit function theorem at a (near) stationary ``w*``: a
  conjugate-gradient solve with Hessian-vector products (:func:`hvp`), then one vector-Jacobian
  product;
* :func:`exact_hypergrad` -- a dense Hessian solve, the reference for small problems.

The strategies :class:`RMD`, :class:`IFT` and :class:`Implicit` (a converged, warm-started solve)
bundle a method with its static settings, so that callers pass one value to :func:`hypergrad`
instead of a flag and a bag of keywords.

**One signature.** Every hypergradient -- the three functions, :func:`hypergrad`,
:func:`warm_hypergrad` and every strategy -- returns ``(value, dtheta, info)``: the outer loss, the
hypergradient structured like ``theta``, and a :class:`HypergradInfo` (the inner gradient norm,
the CG solve, the inner solve, and the warm start of a next call).

**Data as arguments.** Everything after ``theta`` is passed on to both losses and traced, as in
jaxopt and optimistix: a loop over data sets of the same shapes compiles once. Every public
function is jitted with its loss functions and integer settings static: pass the *same* function
objects on every call (not a fresh ``lambda`` each time), or each call compiles anew. All
functions are pure and may be used inside ``jax.jit`` and ``jax.vmap``.

Example::

    >>> import jax, jax.numpy as jnp
    >>> from poison_jax import engine
    >>> def inner(w, theta, x, y):  # ridge regression, log-scale penalty, data as arguments
    ...     return jnp.mean((x @ w - y) ** 2) / 2 + jnp.exp(theta) / 2 * jnp.sum(w ** 2)
    >>> def outer(w, theta, x, y):
    ...     return jnp.mean((x @ w - y + 0.1) ** 2)
    >>> x = jnp.array([[1., 0.], [0., 1.], [1., 1.]]); y = jnp.array([1., 0., 1.])
    >>> value, dtheta, info = engine.hypergrad(engine.RMD(steps=500, lr=0.5), inner, outer,
    ...                                         jnp.zeros(2), jnp.array(-1.0), x, y)
    >>> info.inner_grad_norm < 1e-3
    Array(True, dtype=bool)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax.tree_utils as otu
from jax.flatten_util import ravel_pytree
from jax.typing import ArrayLike

from poison_jax.engine._solvers import (
    LBFGS,
    CGInfo,
    NewtonCG,
    SolveInfo,
    _same_structure,
    conjugate_gradient,
    hvp,
)
from poison_jax.engine._solvers import check_positive_finite as _check_positive_finite
from poison_jax.engine._solvers import check_positive_int as _check_positive_int

PyTree = Any
Loss = Callable[..., jax.Array]  # (w, theta, *args) -> scalar

__all__ = [
    "CGInfo",
    "HypergradInfo",
    "IFT",
    "Implicit",
    "LBFGS",
    "NewtonCG",
    "SolveInfo",
    "Warm",
    "warm_hypergrad",
    "RMD",
    "conjugate_gradient",
    "exact_hypergrad",
    "hvp",
    "hypergrad",
    "ift_hypergrad",
    "rmd_hypergrad",
    "unroll",
]


class Warm(NamedTuple):
    """Where the next hypergradient of a slowly changing problem may start.

    Attributes:
      w: inner weights (a pytree): the converged solution for :class:`Implicit`, ``w_T`` for
        :class:`RMD` and :class:`IFT` (which start from the caller's ``w0`` each time).
      adjoint: the solution ``v`` of ``∇²_w L v = ∇_w A`` (like ``w``), the warm start of the next
        CG solve; zeros for :class:`RMD`; ``None`` starts CG from zero.
    """

    w: PyTree
    adjoint: PyTree


class HypergradInfo(NamedTuple):
    """Diagnostics of one hypergradient, the same structure for every method.

    Attributes:
      inner_grad_norm: ``||grad_w inner_loss(w_T, theta)||`` at the trained weights: how far the
        inner problem is from stationarity (IFT assumes it is zero).
      cg: the :class:`CGInfo` of IFT's solve; for RMD zero iterations, zero residual, converged.
      solve: the :class:`SolveInfo` of the inner training: the converged solver's iterations, or
        for fixed-step gradient descent the number of steps (``converged``: ``w_T`` is finite).
      warm: the :class:`Warm` start of a next call on a slowly changing problem: the trained
        weights and the adjoint solution (zeros for RMD, which solves no adjoint).
    """

    inner_grad_norm: jax.Array
    cg: CGInfo
    solve: SolveInfo
    warm: Warm


# --------------------------------------------------------------------------------------------
# Validation. Static settings are checked in Python; properties of the losses at trace time.


def _check_checkpoint(checkpoint: Any, steps: int) -> int | None:
    """``None`` (no remat), ``True`` (segments of ~sqrt(steps)) or a positive segment length."""
    if checkpoint is None or checkpoint is False:
        return None
    if checkpoint is True:
        return max(1, math.isqrt(steps))
    return _check_positive_int("checkpoint", checkpoint)


def _check_float_tree(name: str, tree: PyTree) -> None:
    leaves = jax.tree_util.tree_leaves(tree)
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            where = jax.tree_util.keystr(path)  # empty for a bare array
            raise TypeError(f"{name}{where} must have a floating dtype, got {dtype}")
    if not leaves:
        raise ValueError(f"{name} is an empty pytree; it needs at least one array leaf")


def _check_loss(name: str, loss: Loss, w: PyTree, theta: PyTree, args: tuple = ()) -> None:
    """Trace-time check: ``loss(w, theta, *args)`` runs and returns a scalar."""
    try:
        out = jax.eval_shape(loss, w, theta, *args)
    except Exception as err:  # re-raised with what was passed, the cause chained
        w_struct = jax.tree_util.tree_structure(w)
        extra = f" and {len(args)} data argument(s)" if args else ""
        raise ValueError(
            f"{name}(w, theta{', *args' if args else ''}) failed for w with structure {w_struct} and shapes "
            f"{jax.tree_util.tree_map(jnp.shape, w)}{extra}: {type(err).__name__}: {err}"
        ) from err
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(f"{name} must return a scalar (shape ()), got {shape}")


def _check_same_structure(name: str, tree: PyTree, reference_name: str, reference: PyTree) -> None:
    s, r = jax.tree_util.tree_structure(tree), jax.tree_util.tree_structure(reference)
    if not _same_structure(tree, reference):
        raise ValueError(f"{name} has pytree structure {s}, but {reference_name} has {r}; they must match")
    for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(reference), strict=False):
        if jnp.shape(a) != jnp.shape(b):
            raise ValueError(
                f"{name} has leaf shapes {jax.tree_util.tree_map(jnp.shape, tree)}, but "
                f"{reference_name} has {jax.tree_util.tree_map(jnp.shape, reference)}; they must match"
            )


def _check_problem(inner_loss: Loss, outer_loss: Loss, w: PyTree, theta: PyTree, w_name: str, args: tuple = ()) -> None:
    _check_float_tree(w_name, w)
    _check_float_tree("theta", theta)
    _check_loss("inner_loss", inner_loss, w, theta, args)
    _check_loss("outer_loss", outer_loss, w, theta, args)
    try:
        grad_shape = jax.eval_shape(jax.grad(inner_loss), w, theta, *args)
    except Exception as err:
        raise ValueError(
            f"grad_w inner_loss({w_name}, theta) failed; its gradient must have the pytree structure "
            f"of {w_name}, {jax.tree_util.tree_structure(w)}: {type(err).__name__}: {err}"
        ) from err
    _check_same_structure(f"grad_w inner_loss({w_name}, theta)", grad_shape, w_name, w)


# --------------------------------------------------------------------------------------------
# Building blocks. ``args`` (a tuple, traced) is passed on to the losses after ``theta``.


def _gd_step(inner_loss: Loss, theta: PyTree, lr, args: tuple) -> Callable[[PyTree], PyTree]:
    grad = jax.grad(inner_loss)

    def step(w):
        g = grad(w, theta, *args)
        # Cast back so that a float64 lr never promotes a float32 carry (scan needs fixed dtypes).
        return jax.tree_util.tree_map(lambda a, b: (a - lr * b).astype(a.dtype), w, g)

    return step


def _unroll(
    inner_loss: Loss, w0: PyTree, theta: PyTree, steps: int, lr, segment: int | None, args: tuple = ()
) -> PyTree:
    step = _gd_step(inner_loss, theta, lr, args)

    def run(w, length):
        return jax.lax.scan(lambda c, _: (step(c), None), w, None, length=length)[0]

    if segment is None or segment >= steps:
        return run(w0, steps)
    # Store only one carry per segment; the backward pass recomputes each segment's steps.
    n_segments, rest = divmod(steps, segment)
    run_segment = jax.checkpoint(lambda w: run(w, segment), prevent_cse=False)
    w = jax.lax.scan(lambda c, _: (run_segment(c), None), w0, None, length=n_segments)[0]
    if rest:
        w = jax.checkpoint(lambda c: run(c, rest), prevent_cse=False)(w)
    return w


@functools.partial(jax.jit, static_argnames=("inner_loss", "steps", "segment"))
def _unroll_jit(inner_loss, w0, theta, lr, args, *, steps, segment):
    _check_float_tree("w0", w0)
    _check_loss("inner_loss", inner_loss, w0, theta, args)
    return _unroll(inner_loss, w0, theta, steps, lr, segment, args)


def unroll(
    inner_loss: Loss,
    w0: PyTree,
    theta: PyTree,
    *args: Any,
    steps: int,
    lr: ArrayLike,
    checkpoint: int | bool | None = None,
) -> PyTree:
    """Train ``w`` by ``steps`` steps of full-batch gradient descent in one ``jax.lax.scan``.

    ``w_{t+1} = w_t - lr * grad_w inner_loss(w_t, theta, *args)``.

    Args:
      inner_loss: ``inner_loss(w, theta, *args) -> scalar``.
      w0: initial weights, any pytree of float arrays.
      theta: hyperparameters, any pytree of float arrays.
      *args: data (any pytrees of arrays), passed on to ``inner_loss``; traced, so new data of
        the same shapes does not recompile.
      steps: number of steps (static, > 0).
      lr: step size, finite and > 0 (may be traced).
      checkpoint: ``None`` stores every step for reverse mode (memory ~ steps); an integer k
        remats the loop in segments of k steps (memory ~ steps/k + k; k = sqrt(steps) is optimal);
        ``True`` picks k = isqrt(steps). The result is identical; only differentiation changes.
    Returns:
      ``w_T``, a pytree like ``w0``.
    """
    steps = _check_positive_int("steps", steps)
    _check_positive_finite("lr", lr)
    segment = _check_checkpoint(checkpoint, steps)
    return _unroll_jit(inner_loss, w0, theta, lr, args, steps=steps, segment=segment)


def _zero_cg_info(dtype) -> CGInfo:
    return CGInfo(jnp.asarray(0, jnp.int32), jnp.asarray(0, dtype), jnp.asarray(True))


def _steps_info(inner_loss, w, theta, steps: int, args: tuple) -> tuple[jax.Array, SolveInfo]:
    grad_norm = otu.tree_norm(jax.grad(inner_loss)(w, theta, *args))
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(w)]))
    return grad_norm, SolveInfo(jnp.asarray(steps, jnp.int32), grad_norm, finite)


# --------------------------------------------------------------------------------------------
# Hypergradients. Every one returns ``(value, dtheta, info)`` with ``info`` a HypergradInfo.


@functools.partial(jax.jit, static_argnames=("inner_loss", "outer_loss", "steps", "segment"))
def _rmd_jit(inner_loss, outer_loss, w0, theta, lr, args, *, steps, segment):
    _check_problem(inner_loss, outer_loss, w0, theta, "w0", args)

    def objective(th):
        w_t = _unroll(inner_loss, w0, th, steps, lr, segment, args)
        return outer_loss(w_t, th, *args), w_t

    value, pullback, w_t = jax.vjp(objective, theta, has_aux=True)
    (dtheta,) = pullback(jnp.ones_like(value))
    grad_norm, solve = _steps_info(inner_loss, w_t, theta, steps, args)
    info = HypergradInfo(grad_norm, _zero_cg_info(value.dtype), solve, Warm(w_t, otu.tree_zeros_like(w_t)))
    return value, dtheta, info


def rmd_hypergrad(
    inner_loss: Loss,
    outer_loss: Loss,
    w0: PyTree,
    theta: PyTree,
    *args: Any,
    steps: int,
    lr: ArrayLike,
    checkpoint: int | bool | None = None,
) -> tuple[jax.Array, PyTree, HypergradInfo]:
    """Hypergradient by reverse-mode differentiation through training (the paper's Algorithm 2).

    Trains ``w`` from ``w0`` with :func:`unroll` and differentiates
    ``theta -> outer_loss(w_T(theta), theta, *args)`` with ``jax.vjp``. Exact for the truncated
    problem; it equals the implicit hypergradient only when the inner problem has converged.

    Args:
      inner_loss: ``(w, theta, *args) -> scalar``, the training loss.
      outer_loss: ``(w, theta, *args) -> scalar``, the objective of ``theta``.
      w0: initial weights (pytree).
      theta: hyperparameters (pytree).
      *args: data passed on to both losses (traced: new data of the same shapes reuses the
        compiled function).
      steps: as in :func:`unroll`.
      lr: as in :func:`unroll`.
      checkpoint: as in :func:`unroll`.
    Returns:
      ``(value, dtheta, info)``: the outer loss at ``w_T`` (scalar), its gradient structured like
      ``theta``, and a :class:`HypergradInfo` (the inner gradient norm at ``w_T``; no CG).
    """
    return hypergrad(RMD(steps=steps, lr=lr, checkpoint=checkpoint), inner_loss, outer_loss, w0, theta, *args)


def _ift_solve(inner_loss, outer_loss, w_star, theta, cg_iters, cg_tol, damping, args, adjoint0=None):
    """IFT at ``w_star``; returns ``(value, dtheta, cg_info, adjoint)``."""
    value, (g_w, g_theta) = jax.value_and_grad(outer_loss, argnums=(0, 1))(w_star, theta, *args)

    def matvec(v):
        hv = hvp(lambda w: inner_loss(w, theta, *args), w_star, v)
        return otu.tree_add_scale(hv, damping, v)

    v, cg_info = conjugate_gradient(matvec, g_w, maxiter=cg_iters, tol=cg_tol, x0=adjoint0)
    _, mixed_vjp = jax.vjp(lambda th: jax.grad(inner_loss)(w_star, th, *args), theta)
    (mixed,) = mixed_vjp(v)
    return value, otu.tree_sub(g_theta, mixed), cg_info, v


@functools.partial(jax.jit, static_argnames=("inner_loss", "outer_loss", "cg_iters"))
def _ift_jit(inner_loss, outer_loss, w_star, theta, cg_tol, damping, adjoint0, args, *, cg_iters):
    _check_problem(inner_loss, outer_loss, w_star, theta, "w_star", args)
    if adjoint0 is not None:
        _check_same_structure("adjoint0", adjoint0, "w_star", w_star)
    value, dtheta, cg_info, v = _ift_solve(
        inner_loss, outer_loss, w_star, theta, cg_iters, cg_tol, damping, args, adjoint0
    )
    grad_norm, _ = _steps_info(inner_loss, w_star, theta, 0, args)
    solve = SolveInfo(jnp.asarray(0, jnp.int32), grad_norm, jnp.isfinite(grad_norm))
    return value, dtheta, HypergradInfo(grad_norm, cg_info, solve, Warm(w_star, v))


def ift_hypergrad(
    inner_loss: Loss,
    outer_loss: Loss,
    w_star: PyTree,
    theta: PyTree,
    *args: Any,
    cg_iters: int,
    cg_tol: ArrayLike = 1e-6,
    damping: ArrayLike = 0.0,
    adjoint0: PyTree | None = None,
) -> tuple[jax.Array, PyTree, HypergradInfo]:
    """Hypergradient by the implicit function theorem at a stationary ``w_star``.

    ``dA/dtheta = ∂_theta A - (∂_theta ∇_w L)ᵀ v`` with ``(∇²_w L + damping·I) v = ∇_w A``, solved
    by :func:`conjugate_gradient` using :func:`hvp`, then one ``jax.vjp`` of
    ``theta -> grad_w inner_loss(w_star, theta, *args)``.

    Args:
      inner_loss: ``(w, theta, *args) -> scalar``, convex near ``w_star``.
      outer_loss: ``(w, theta, *args) -> scalar``.
      w_star: trained weights (pytree), ideally with ``grad_w inner_loss = 0``.
      theta: hyperparameters (pytree).
      *args: data passed on to both losses (traced).
      cg_iters: maximum CG iterations (static, > 0).
      cg_tol: relative residual at which CG stops (>= 0).
      damping: Tikhonov term added to the Hessian (>= 0).
      adjoint0: warm start of CG (like ``w_star``), e.g. the previous ``v`` of a slowly changing
        problem (as secml does); ``None`` starts from zero.
    Returns:
      ``(value, dtheta, info)``: the outer loss at ``w_star``, the hypergradient like ``theta`` and
      a :class:`HypergradInfo` whose ``cg.converged`` is False when ``cg_iters`` was too small and
      whose ``warm.adjoint`` is ``v``.
    """
    cg_iters = _check_positive_int("cg_iters", cg_iters)
    _check_positive_finite("cg_tol", cg_tol, allow_zero=True)
    _check_positive_finite("damping", damping, allow_zero=True)
    return _ift_jit(inner_loss, outer_loss, w_star, theta, cg_tol, damping, adjoint0, args, cg_iters=cg_iters)


@functools.partial(jax.jit, static_argnames=("inner_loss", "outer_loss"))
def _exact_jit(inner_loss, outer_loss, w_star, theta, args):
    _check_problem(inner_loss, outer_loss, w_star, theta, "w_star", args)
    flat_w, unravel = ravel_pytree(w_star)
    value, (g_w, g_theta) = jax.value_and_grad(outer_loss, argnums=(0, 1))(w_star, theta, *args)
    hessian = jax.hessian(lambda fw: inner_loss(unravel(fw), theta, *args))(flat_w)
    rhs = ravel_pytree(g_w)[0]
    v = jnp.linalg.solve(hessian, rhs)
    _, mixed_vjp = jax.vjp(lambda th: ravel_pytree(jax.grad(inner_loss)(w_star, th, *args))[0], theta)
    (mixed,) = mixed_vjp(v)
    # A dense solve has no iterations; its residual says how well float precision solved it.
    residual = jnp.linalg.norm(hessian @ v - rhs) / jnp.maximum(jnp.linalg.norm(rhs), jnp.finfo(rhs.dtype).tiny)
    cg = CGInfo(jnp.asarray(0, jnp.int32), residual, jnp.isfinite(residual))
    grad_norm, _ = _steps_info(inner_loss, w_star, theta, 0, args)
    solve = SolveInfo(jnp.asarray(0, jnp.int32), grad_norm, jnp.isfinite(grad_norm))
    return value, otu.tree_sub(g_theta, mixed), HypergradInfo(grad_norm, cg, solve, Warm(w_star, unravel(v)))


def exact_hypergrad(
    inner_loss: Loss, outer_loss: Loss, w_star: PyTree, theta: PyTree, *args: Any
) -> tuple[jax.Array, PyTree, HypergradInfo]:
    """Implicit hypergradient with a dense Hessian solve: the reference for small problems.

    Materialises the ``(p, p)`` Hessian of ``inner_loss`` in ``w`` (``p`` = number of weights), so
    keep ``p`` to a few thousand. Returns ``(value, dtheta, info)`` as :func:`ift_hypergrad`
    (``info.cg``: no iterations, the relative residual of the dense solve).
    """
    return _exact_jit(inner_loss, outer_loss, w_star, theta, args)


# --------------------------------------------------------------------------------------------
# Strategies. Each is a frozen dataclass of static settings with
#   fit(inner_loss, w0, theta, *args) -> w                   the inner training it differentiates
#   warm_hypergrad(inner_loss, outer_loss, warm, theta, *args) -> (value, dtheta, info)
#   __call__(inner_loss, outer_loss, w0, theta, *args) -> (value, dtheta, info)   (cold start)
# and ``warm_starts``: whether a caller should pass the previous ``info.warm`` (True) or a fresh
# ``Warm(w0, None)`` each time (the paper's RMD and IFT restart training from w(0)).


def _cold(w0: PyTree) -> Warm:
    return Warm(w0, None)  # no adjoint yet: CG starts from zero, inside the jitted call


@dataclasses.dataclass(frozen=True)
class RMD:
    """Reverse-mode differentiation through ``steps`` of gradient descent from ``w0``.

    Attributes:
      steps: inner gradient-descent steps T (> 0).
      lr: inner step size η (finite, > 0).
      checkpoint: ``None``, ``True`` (segments of isqrt(steps)) or a segment length; see
        :func:`unroll`.
    """

    steps: int
    lr: ArrayLike  # a float where the strategy is a static argument (hashable)
    checkpoint: int | bool | None = None

    warm_starts = False

    def __post_init__(self):
        _check_positive_int("steps", self.steps)
        _check_positive_finite("lr", self.lr)
        _check_checkpoint(self.checkpoint, self.steps)

    def fit(self, inner_loss: Loss, w0: PyTree, theta: PyTree, *args) -> PyTree:
        return _unroll(inner_loss, w0, theta, self.steps, self.lr, None, args)

    def warm_hypergrad(self, inner_loss, outer_loss, warm: Warm, theta, *args):
        segment = _check_checkpoint(self.checkpoint, self.steps)
        return _rmd_jit(inner_loss, outer_loss, warm.w, theta, self.lr, args, steps=self.steps, segment=segment)

    def __call__(self, inner_loss, outer_loss, w0, theta, *args):
        return self.warm_hypergrad(inner_loss, outer_loss, _cold(w0), theta, *args)


@dataclasses.dataclass(frozen=True)
class IFT:
    """Implicit differentiation: train ``w*`` with :func:`unroll`, then :func:`ift_hypergrad`.

    Attributes:
      steps, lr: inner training from ``w0`` (as :class:`RMD`; no reverse pass through it).
      cg_iters: maximum conjugate-gradient iterations (> 0).
      cg_tol: relative residual at which CG stops (>= 0).
      damping: added to the Hessian's diagonal (>= 0).
    """

    steps: int
    lr: float
    cg_iters: int = 100
    cg_tol: float = 1e-6
    damping: float = 0.0

    warm_starts = False

    def __post_init__(self):
        _check_positive_int("steps", self.steps)
        _check_positive_finite("lr", self.lr)
        _check_positive_int("cg_iters", self.cg_iters)
        _check_positive_finite("cg_tol", self.cg_tol, allow_zero=True)
        _check_positive_finite("damping", self.damping, allow_zero=True)

    def fit(self, inner_loss: Loss, w0: PyTree, theta: PyTree, *args) -> PyTree:
        return _unroll(inner_loss, w0, theta, self.steps, self.lr, None, args)

    def warm_hypergrad(self, inner_loss, outer_loss, warm: Warm, theta, *args):
        return _ift_from_w0(
            inner_loss,
            outer_loss,
            warm,
            theta,
            self.lr,
            self.cg_tol,
            self.damping,
            args,
            steps=self.steps,
            cg_iters=self.cg_iters,
        )

    def __call__(self, inner_loss, outer_loss, w0, theta, *args):
        return self.warm_hypergrad(inner_loss, outer_loss, _cold(w0), theta, *args)


@functools.partial(jax.jit, static_argnames=("inner_loss", "outer_loss", "steps", "cg_iters"))
def _ift_from_w0(inner_loss, outer_loss, warm, theta, lr, cg_tol, damping, args, *, steps, cg_iters):
    _check_problem(inner_loss, outer_loss, warm.w, theta, "w0", args)
    # w* is a constant for the hypergradient: no reverse pass through training.
    w_star = jax.lax.stop_gradient(_unroll(inner_loss, warm.w, theta, steps, lr, None, args))
    value, dtheta, cg_info, v = _ift_solve(
        inner_loss, outer_loss, w_star, theta, cg_iters, cg_tol, damping, args, warm.adjoint
    )
    grad_norm, solve = _steps_info(inner_loss, w_star, theta, steps, args)
    return value, dtheta, HypergradInfo(grad_norm, cg_info, solve, Warm(w_star, v))


Solver = NewtonCG | LBFGS


@dataclasses.dataclass(frozen=True)
class Implicit:
    """A converged inner solve from a warm start, then the implicit hypergradient with a warm CG.

    The strong counterpart of :class:`IFT`: ``w*`` is found to ``solver.tol`` on ``||∇_w L||`` (so
    the implicit function theorem holds), and both the solve and the adjoint CG start from the
    previous hyperiteration's solutions (``warm_starts = True``: pass the previous ``info.warm``).
    Whether the solve converged is reported in ``info.solve``.

    Attributes:
      solver: :class:`~poison_jax.engine.NewtonCG` (default) or :class:`~poison_jax.engine.LBFGS`.
      cg_iters: maximum CG iterations of the adjoint solve (> 0).
      cg_tol: relative residual at which CG stops (>= 0); float32 reaches about 1e-6.
      damping: added to the Hessian's diagonal in the adjoint solve (>= 0).

    Example::

        >>> import jax.numpy as jnp
        >>> from poison_jax import engine
        >>> inner = lambda w, th: jnp.sum((w - th) ** 2) / 2 + jnp.sum(w ** 2) / 2
        >>> outer = lambda w, th: jnp.sum(w)
        >>> value, dtheta, info = engine.Implicit()(inner, outer, jnp.zeros(2), jnp.ones(2))
        >>> dtheta.tolist(), bool(info.solve.converged)
        ([0.5, 0.5], True)
    """

    solver: Solver = NewtonCG()
    cg_iters: int = 100
    cg_tol: float = 1e-5  # float32's CG floors near 1e-6 (see benchmarks/engine_peers)
    damping: float = 0.0

    warm_starts = True

    def __post_init__(self):
        if not isinstance(self.solver, (NewtonCG, LBFGS)):
            raise TypeError(f"solver must be NewtonCG(...) or LBFGS(...), got {self.solver!r}")
        _check_positive_int("cg_iters", self.cg_iters)
        _check_positive_finite("cg_tol", self.cg_tol, allow_zero=True)
        _check_positive_finite("damping", self.damping, allow_zero=True)

    def fit(self, inner_loss: Loss, w0: PyTree, theta: PyTree, *args) -> PyTree:
        return self.solver(lambda w: inner_loss(w, theta, *args), w0)[0]

    def warm_hypergrad(self, inner_loss, outer_loss, warm: Warm, theta, *args):
        return _implicit_jit(
            inner_loss,
            outer_loss,
            warm,
            theta,
            self.cg_tol,
            self.damping,
            args,
            solver=self.solver,
            cg_iters=self.cg_iters,
        )

    def __call__(self, inner_loss, outer_loss, w0, theta, *args):
        return self.warm_hypergrad(inner_loss, outer_loss, _cold(w0), theta, *args)


@functools.partial(jax.jit, static_argnames=("inner_loss", "outer_loss", "solver", "cg_iters"))
def _implicit_jit(inner_loss, outer_loss, warm, theta, cg_tol, damping, args, *, solver, cg_iters):
    _check_problem(inner_loss, outer_loss, warm.w, theta, "w0", args)
    if warm.adjoint is not None:
        _check_same_structure("warm.adjoint", warm.adjoint, "w0", warm.w)
    theta_c, args_c = jax.lax.stop_gradient((theta, args))  # w* is differentiated implicitly, not through the solve
    w_star, solve = solver(lambda w: inner_loss(w, theta_c, *args_c), warm.w)
    w_star = jax.lax.stop_gradient(w_star)
    value, dtheta, cg_info, v = _ift_solve(
        inner_loss, outer_loss, w_star, theta, cg_iters, cg_tol, damping, args, warm.adjoint
    )
    return value, dtheta, HypergradInfo(solve.grad_norm, cg_info, solve, Warm(w_star, v))


Method = RMD | IFT | Implicit
METHODS = (RMD, IFT, Implicit)


def _check_method(method) -> None:
    if not isinstance(method, METHODS):
        raise TypeError(f"method must be RMD(...), IFT(...) or Implicit(...), got {method!r}")


def hypergrad(
    method: Method, inner_loss: Loss, outer_loss: Loss, w0: PyTree, theta: PyTree, *args
) -> tuple[jax.Array, PyTree, HypergradInfo]:
    """``(value, dtheta, info)`` of ``theta -> outer_loss(w*(theta), theta, *args)`` by a strategy.

    Args:
      method: :class:`RMD`, :class:`IFT` or :class:`Implicit` with its settings.
      inner_loss: ``(w, theta, *args) -> scalar``, the training loss.
      outer_loss: ``(w, theta, *args) -> scalar``, the objective of ``theta``.
      w0: initial weights of inner training.
      theta: hyperparameters.
      *args: data passed on to both losses: traced, so a loop over data sets of the same shapes
        compiles once (pass the same loss functions every call).
    Returns:
      The outer loss at the trained weights, the hypergradient structured like ``theta``, and the
      :class:`HypergradInfo` diagnostics (the same structure for every method).
    """
    _check_method(method)
    return method(inner_loss, outer_loss, w0, theta, *args)


def warm_hypergrad(
    method: Method, inner_loss: Loss, outer_loss: Loss, warm: Warm, theta: PyTree, *args
) -> tuple[jax.Array, PyTree, HypergradInfo]:
    """One hypergradient from a warm start; ``info.warm`` is the warm start of the next one.

    For :class:`Implicit` the inner solve starts at ``warm.w`` and the adjoint CG at
    ``warm.adjoint``; :class:`RMD` and :class:`IFT` train from ``warm.w`` for their fixed number
    of steps (pass ``Warm(w0, None)`` to follow the paper). Start a sequence with
    ``Warm(w0, None)``.

    Returns:
      ``(value, dtheta, info)`` as :func:`hypergrad`.
    """
    _check_method(method)
    return method.warm_hypergrad(inner_loss, outer_loss, warm, theta, *args)
