"""Hypergradients (floor 0): an inner solver and a way to differentiate it, composed by value.

A bilevel problem is two scalar functions of pytrees, with data as extra (traced) arguments::

    inner_loss(w, theta, *args) -> scalar   # the learner: w* = argmin_w inner_loss(w, theta, *args)
    outer_loss(w, theta, *args) -> scalar   # the objective A(theta) = outer_loss(w*(theta), theta, *args)

:func:`hypergrad` computes ``A`` and ``dA/dtheta`` with a :class:`Method`: an inner solver
(:class:`~poison_jax.engine.GradientDescent`, :class:`~poison_jax.engine.NewtonCG`,
:class:`~poison_jax.engine.LBFGS`, :class:`~poison_jax.engine.DenseNewton` or your own) times a
way to differentiate it (:class:`~poison_jax.engine.Unrolled`,
:class:`~poison_jax.engine.ImplicitCG`, :class:`~poison_jax.engine.Dense` or your own).
:class:`RMD`, :class:`IFT` and :class:`Implicit` are the named combinations of the paper and of
the strong attack; :class:`ImplicitDense` is the strong attack's for small models.

Every call returns one :class:`Result`. Data after ``theta`` are traced, so a loop over data sets of
the same shapes compiles once; pass the *same* loss functions on every call (not a fresh
``lambda``), since they are static arguments of the compiled function.

Example::

    >>> import jax.numpy as jnp
    >>> from poison_jax import engine
    >>> def inner(w, theta, x, y):  # ridge regression, log-scale penalty, data as arguments
    ...     return jnp.mean((x @ w - y) ** 2) / 2 + jnp.exp(theta) / 2 * jnp.sum(w ** 2)
    >>> def outer(w, theta, x, y):
    ...     return jnp.mean((x @ w - y + 0.1) ** 2)
    >>> x = jnp.array([[1., 0.], [0., 1.], [1., 1.]]); y = jnp.array([1., 0., 1.])
    >>> method = engine.Method(engine.NewtonCG(tol=1e-6), engine.Dense())
    >>> result = engine.hypergrad(method, inner, outer, jnp.zeros(2), jnp.array(-1.0), x, y, throw=True)
    >>> engine.message(result.status), sorted(result.stats)
    ('successful', ['adjoint_residual', 'inner_grad_norm', 'inner_steps'])
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax.tree_utils as otu

from poison_jax.engine import checks
from poison_jax.engine._adjoints import Dense, ImplicitCG, Unrolled
from poison_jax.engine._solvers import MESSAGES, RESULTS, DenseNewton, GradientDescent, NewtonCG, all_finite

PyTree = Any
Loss = Callable[..., jax.Array]  # (w, theta, *args) -> scalar


class Warm(NamedTuple):
    """Where the next hypergradient of a slowly changing problem may start: the inner solution ``w``
    and the adjoint ``adjoint`` (``None``: the adjoint solve starts from zero)."""

    w: PyTree
    adjoint: PyTree


class Result(NamedTuple):
    """One hypergradient.

    Attributes:
      value: the outer loss at the inner solution (scalar).
      grad: ``dA/dtheta``, structured like ``theta``.
      status: int32 scalar, a :class:`~poison_jax.engine.RESULTS` code; ``engine.message(status)``
        says what it means.
      stats: what the method really did: the solver's (``inner_steps``, ``inner_grad_norm``) and the
        adjoint's (``adjoint_steps``, ``adjoint_residual``; none for :class:`~poison_jax.engine.Unrolled`).
      warm: the :class:`Warm` start of a next call (``hypergrad(..., warm=result.warm)``).
    """

    value: jax.Array
    grad: PyTree
    status: jax.Array
    stats: dict[str, jax.Array]
    warm: Warm


class HypergradError(RuntimeError):
    """A hypergradient asked to ``throw`` did not succeed; the message says why."""


@dataclasses.dataclass(frozen=True)
class Method:
    """An inner solver and a way to differentiate it.

    Attributes:
      solver: a value with ``solve(f, w0) -> Solution`` (GradientDescent, NewtonCG, LBFGS,
        DenseNewton, yours).
      adjoint: a way to differentiate it (Unrolled, ImplicitCG, Dense, yours).
      warm_start: whether a loop of hypergradients (the attack, ``hyperopt.fit``) should start each
        solve from the previous ``result.warm`` (True) or from a fresh ``w0`` each time (the paper).
    """

    solver: Any
    adjoint: Any = ImplicitCG()
    warm_start: bool = False

    def __post_init__(self):
        if not callable(getattr(self.solver, "solve", None)):
            raise TypeError(f"solver must have a solve(f, w0) method (e.g. engine.NewtonCG()), got {self.solver!r}")
        if not callable(self.adjoint):
            raise TypeError(f"adjoint must be a way to differentiate (e.g. engine.ImplicitCG()), got {self.adjoint!r}")
        check = getattr(self.adjoint, "check_solver", None)
        if check is not None:
            check(self.solver)

    def fit(self, inner_loss: Loss, w0: PyTree, theta: PyTree, *args: Any) -> PyTree:
        """The inner solution ``w*(theta)`` only (no derivative)."""
        return self.solver.solve(lambda w: inner_loss(w, theta, *args), w0).w


class RMD(Method):
    """The paper's RMD: ``steps`` of gradient descent from ``w0``, differentiated in reverse mode
    (``Method(GradientDescent(steps, lr), Unrolled(checkpoint))``)."""

    def __init__(self, steps: int, lr: float, checkpoint: int | bool | None = None):
        super().__init__(GradientDescent(steps, lr), Unrolled(checkpoint), warm_start=False)


class IFT(Method):
    """The paper's IFT: ``steps`` of gradient descent from ``w0``, then the implicit hypergradient by
    CG (``Method(GradientDescent(steps, lr), ImplicitCG(cg_iters, cg_tol, damping))``)."""

    def __init__(self, steps: int, lr: float, cg_iters: int = 100, cg_tol: float = 1e-6, damping: float = 0.0):
        super().__init__(GradientDescent(steps, lr), _cg(cg_iters, cg_tol, damping), warm_start=False)


class Implicit(Method):
    """The strong attack's method: a converged solve (Newton-CG by default) and the implicit
    hypergradient by CG, both warm-started from the previous call's solutions. With a
    :class:`~poison_jax.engine.DenseNewton` solver the adjoint is still CG: :class:`ImplicitDense`
    solves it with the solver's Cholesky factor instead."""

    def __init__(self, solver: Any = NewtonCG(), cg_iters: int = 100, cg_tol: float = 1e-5, damping: float = 0.0):
        super().__init__(solver, _cg(cg_iters, cg_tol, damping), warm_start=True)


class ImplicitDense(Method):
    """The strong attack's method for small models: a converged dense Newton solve and the implicit
    hypergradient by the Cholesky factor the solve ends with (no second Hessian, no CG), warm-started
    (``Method(DenseNewton(tol, maxiter, damping), Dense(damping), warm_start=True)``)."""

    def __init__(self, tol: float = 1e-5, maxiter: int = 100, damping: float = 0.0):
        super().__init__(DenseNewton(tol, maxiter, damping), Dense(damping), warm_start=True)


def _cg(cg_iters: int, cg_tol: float, damping: float) -> ImplicitCG:
    """The adjoint CG of a named combination, its settings checked under the names the user wrote."""
    checks.positive_int("cg_iters", cg_iters)
    checks.positive_finite("cg_tol", cg_tol, allow_zero=True)
    checks.positive_finite("damping", damping, allow_zero=True)
    return ImplicitCG(cg_iters, cg_tol, damping)


def _check_loss(name: str, loss: Loss, w: PyTree, theta: PyTree, args: tuple) -> None:
    """Trace-time check: ``loss(w, theta, *args)`` runs and returns a scalar."""
    try:
        out = jax.eval_shape(loss, w, theta, *args)
    except Exception as err:  # re-raised with what was passed, the cause chained
        extra = f" and {len(args)} data argument(s)" if args else ""
        raise ValueError(
            f"{name}(w, theta{', *args' if args else ''}) failed for w with structure "
            f"{jax.tree_util.tree_structure(w)} and shapes {jax.tree_util.tree_map(jnp.shape, w)}{extra}: "
            f"{type(err).__name__}: {err}"
        ) from err
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
        raise ValueError(f"{name} must return a scalar (shape ()), got {getattr(out, 'shape', type(out).__name__)}")


def _check_problem(inner_loss: Loss, outer_loss: Loss, warm: Warm, theta: PyTree, args: tuple) -> None:
    checks.float_tree("w0", warm.w)
    checks.float_tree("theta", theta)
    _check_loss("inner_loss", inner_loss, warm.w, theta, args)
    _check_loss("outer_loss", outer_loss, warm.w, theta, args)
    try:
        grad_shape = jax.eval_shape(jax.grad(inner_loss), warm.w, theta, *args)
    except Exception as err:
        raise ValueError(
            f"grad_w inner_loss(w0, theta) failed; its gradient must have the pytree structure of w0, "
            f"{jax.tree_util.tree_structure(warm.w)}: {type(err).__name__}: {err}"
        ) from err
    checks.same_shapes("grad_w inner_loss(w0, theta)", grad_shape, "w0", warm.w)
    if warm.adjoint is not None:
        checks.same_shapes("warm.adjoint", warm.adjoint, "w0", warm.w)


def _first_failure(*codes: jax.Array) -> jax.Array:
    status = jnp.asarray(RESULTS.successful, jnp.int32)
    for code in reversed(codes):  # the first code that is not successful wins
        status = jnp.where(code != RESULTS.successful, code, status)
    return status


@functools.partial(jax.jit, static_argnames=("method", "inner_loss", "outer_loss"))
def _hypergrad(method: Method, inner_loss: Loss, outer_loss: Loss, warm: Warm, theta: PyTree, args: tuple) -> Result:
    _check_problem(inner_loss, outer_loss, warm, theta, args)
    out = method.adjoint(method.solver, inner_loss, outer_loss, warm.w, warm.adjoint, theta, args)
    w = out.solution.w
    stats = {**out.solution.stats, **out.stats}
    if "inner_grad_norm" not in stats:  # measured, so that a fixed-step solve says how stationary it is
        stats["inner_grad_norm"] = otu.tree_norm(jax.grad(inner_loss)(w, theta, *args))
    finite = all_finite((out.value, out.grad))
    status = _first_failure(out.solution.status, out.status, jnp.where(finite, 0, jnp.int32(RESULTS.nonfinite)))
    return Result(out.value, out.grad, status, stats, Warm(w, out.adjoint))


def _raise_unless_successful(status: Any) -> None:
    codes = sorted({int(c) for c in np.ravel(np.asarray(status))} - {int(RESULTS.successful)})
    if codes:
        raise HypergradError("; ".join(MESSAGES[RESULTS(c)] for c in codes))


def hypergrad(
    method: Method,
    inner_loss: Loss,
    outer_loss: Loss,
    w0: PyTree,
    theta: PyTree,
    *args: Any,
    warm: Warm | None = None,
    throw: bool = False,
) -> Result:
    """The outer loss and its hypergradient ``dA/dtheta`` by ``method``.

    Args:
      method: a :class:`Method` (e.g. ``RMD(steps=100, lr=0.1)``, ``Implicit()``,
        ``Method(NewtonCG(), Dense())``).
      inner_loss: ``(w, theta, *args) -> scalar``, the training loss.
      outer_loss: ``(w, theta, *args) -> scalar``, the objective of ``theta``.
      w0: where the inner solve starts (any pytree of float arrays).
      theta: hyperparameters (any pytree of float arrays).
      *args: data passed on to both losses (traced: new data of the same shapes do not recompile).
      warm: a previous ``result.warm``: the solve starts at ``warm.w`` instead of ``w0`` and the
        adjoint solve at ``warm.adjoint``.
      throw: raise :class:`HypergradError` with the status's message unless successful (inside
        ``jax.jit`` the error surfaces when the computation runs).
    Returns:
      A :class:`Result` (value, grad like ``theta``, status, stats, warm).
    """
    if not isinstance(method, Method):
        raise TypeError(f"method must be an engine.Method (e.g. RMD(...), IFT(...), Implicit(...)), got {method!r}")
    result = _hypergrad(method, inner_loss, outer_loss, warm if warm is not None else Warm(w0, None), theta, args)
    if throw:
        try:
            _raise_unless_successful(result.status)
        except jax.errors.TracerArrayConversionError:  # under a caller's jit: check when it runs
            jax.debug.callback(_raise_unless_successful, result.status)
    return result
