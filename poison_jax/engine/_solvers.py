"""Inner solvers (floor 0): ``argmin_w f(w)``, each a frozen dataclass with ``solve(f, w0)``.

* :class:`GradientDescent` -- a fixed number of full-batch steps in one ``lax.scan`` (the paper's
  training; reverse-differentiable, so :class:`~poison_jax.engine.Unrolled` can go through it).
* :class:`NewtonCG` -- truncated Newton: each step solves ``∇²f p = -∇f`` by conjugate gradient on
  Hessian-vector products to a relative residual ``min(0.5, sqrt(||∇f||))``, then backtracks along
  ``p`` (Armijo, or near the minimum Hager and Zhang's approximate Wolfe conditions; along ``-∇f``
  when no step along ``p`` passes). Quadratic convergence near a strongly convex minimum; on a
  network whose minima sit on a kink (LeakyReLU) it runs to ``maxiter`` and says so.
* :class:`LBFGS` -- optax's ``lbfgs`` with its zoom line search, in a ``lax.while_loop``.
* :class:`DenseNewton` -- Newton with the ``(p, p)`` Hessian materialised and Cholesky-factored, the
  same line search as NewtonCG; for small models (``p`` up to about a thousand weights on a CPU). Its
  :class:`Solution` carries the factor at ``w*``, with which :class:`~poison_jax.engine.Dense`
  solves the adjoint system without a second Hessian.

A solver is any hashable value with ``solve(f, w0) -> Solution``: write your own (a frozen
dataclass) and pass it to :class:`~poison_jax.engine.Method`. ``w0`` and ``w`` are any pytree of
float arrays. Solvers run under ``jax.jit`` and ``jax.vmap`` (each lane keeps its own iterate).

Example::

    >>> import jax.numpy as jnp
    >>> from poison_jax import engine
    >>> f = lambda w: jnp.sum(jnp.logaddexp(0.0, -w)) + 0.5 * jnp.sum(w ** 2)
    >>> solution = engine.NewtonCG(tol=1e-6, maxiter=20).solve(f, jnp.zeros(3))
    >>> int(solution.status), int(solution.stats["inner_steps"]) <= 6
    (0, True)
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu
from jax.flatten_util import ravel_pytree

from poison_jax.engine import checks
from poison_jax.engine._linear import conjugate_gradient, hvp, traced_once

PyTree = Any


class RESULTS(enum.IntEnum):
    """Status codes of a solve and of a hypergradient (``Result.status``, an int32 array).

    Compare with ``result.status == engine.RESULTS.successful``; :func:`message` explains a code.
    """

    successful = 0
    inner_nonfinite = 1  # the inner solution has a NaN or an infinity
    inner_max_steps = 2  # the inner solver hit its iteration cap above its tolerance
    adjoint_max_steps = 3  # the adjoint (linear) solve hit its iteration cap above its tolerance
    nonfinite = 4  # the outer value or the hypergradient has a NaN or an infinity


MESSAGES = {
    RESULTS.successful: "successful",
    RESULTS.inner_nonfinite: "the inner solution is not finite (NaN or inf): lower the inner step size or "
    "raise the penalty",
    RESULTS.inner_max_steps: "the inner solver stopped at its iteration cap above its tolerance: raise its "
    "maxiter or its tol",
    RESULTS.adjoint_max_steps: "the adjoint solve stopped at its iteration cap above its tolerance: raise its "
    "iterations, its tolerance or its damping",
    RESULTS.nonfinite: "the outer value or the hypergradient is not finite (NaN or inf)",
}


def message(status: Any) -> str:
    """What a status code means (``"successful"`` for 0)."""
    return MESSAGES[RESULTS(int(status))]


class Solution(NamedTuple):
    """What an inner solve returns.

    Attributes:
      w: the solution, a pytree like ``w0``.
      status: int32 scalar, a :class:`RESULTS` code (``successful``, ``inner_nonfinite`` or
        ``inner_max_steps``).
      stats: what the solver did, e.g. ``{"inner_steps": k, "inner_grad_norm": ||∇f(w)||}``.
      factor: ``None``, or (:class:`DenseNewton`) the lower Cholesky factor ``L`` ``(p, p)`` of
        ``∇²f(w) + damping·I`` over ``ravel_pytree(w)`` (``L Lᵀ``; ``damping`` the solver's), NaN
        where that matrix is not positive definite; :class:`~poison_jax.engine.Dense` solves the
        adjoint with it.
    """

    w: PyTree
    status: jax.Array
    stats: dict[str, jax.Array]
    factor: jax.Array | None = None


def all_finite(tree: PyTree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(tree)]))


def _status(w: PyTree, converged: jax.Array | None) -> jax.Array:
    status = jnp.asarray(RESULTS.successful, jnp.int32)
    if converged is not None:
        status = jnp.where(converged, status, jnp.int32(RESULTS.inner_max_steps))
    return jnp.where(all_finite(w), status, jnp.int32(RESULTS.inner_nonfinite))


@dataclasses.dataclass(frozen=True)
class GradientDescent:
    """``steps`` full-batch gradient-descent steps ``w <- w - lr ∇f(w)`` in one ``jax.lax.scan``.

    It has no tolerance: its status says only whether ``w`` stayed finite.

    Attributes:
      steps: number of steps T (> 0).
      lr: step size η (finite, > 0).
    """

    steps: int
    lr: float

    def __post_init__(self):
        checks.positive_int("steps", self.steps)
        checks.positive_finite("lr", self.lr)

    def solve(self, f: Callable[[PyTree], jax.Array], w0: PyTree, *, checkpoint: int | None = None) -> Solution:
        """``checkpoint``: remat the loop in segments of that many steps (reverse mode stores one
        carry per segment and recomputes the rest); the result is the same."""
        grad = jax.grad(f)

        def step(w, _):
            # Cast back so that a float64 lr never promotes a float32 carry (scan needs fixed dtypes).
            return jax.tree_util.tree_map(lambda a, g: (a - self.lr * g).astype(a.dtype), w, grad(w)), None

        def run(w, length):
            return jax.lax.scan(step, w, None, length=length)[0]

        if checkpoint is None or checkpoint >= self.steps:
            w = run(w0, self.steps)
        else:
            n_segments, rest = divmod(self.steps, checkpoint)
            segment = jax.checkpoint(lambda c: run(c, checkpoint), prevent_cse=False)
            w = jax.lax.scan(lambda c, _: (segment(c), None), w0, None, length=n_segments)[0]
            if rest:
                w = jax.checkpoint(lambda c: run(c, rest), prevent_cse=False)(w)
        return Solution(w, _status(w, None), {"inner_steps": jnp.asarray(self.steps, jnp.int32)})


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
class _ToTolerance:
    """A solver that stops at ``||∇f|| <= tol`` or after ``maxiter`` iterations."""

    tol: float = 1e-5
    maxiter: int = 100

    def __post_init__(self):
        checks.positive_finite("tol", self.tol)
        checks.positive_int("maxiter", self.maxiter)


@dataclasses.dataclass(frozen=True)
class NewtonCG(_ToTolerance):
    """Truncated Newton with a backtracking line search, on Hessian-vector products.

    Attributes:
      tol: stop when ``||∇f|| <= tol`` (> 0). float32 reaches about 1e-6 on the projects' problems.
      maxiter: iteration cap (> 0); reaching it sets the status ``inner_max_steps``.
      cg_iters: conjugate-gradient iterations per Newton step (> 0).
      damping: added to the Hessian's diagonal in the Newton system (>= 0); keeps the step defined
        where an unpenalised bias makes the Hessian singular (separable data).
    """

    maxiter: int = 100
    cg_iters: int = 50
    damping: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        checks.positive_int("cg_iters", self.cg_iters)
        checks.positive_finite("damping", self.damping, allow_zero=True)

    def solve(self, f: Callable[[PyTree], jax.Array], w0: PyTree) -> Solution:
        flat_w0, unravel = ravel_pytree(w0)  # one flat vector: one XLA op per vector operation, not per leaf
        flat_f = traced_once(lambda x: f(unravel(x)), flat_w0)  # one trace for its gradients, products, trials

        def direction(w, g):
            g_norm = jnp.linalg.norm(g)
            matvec = lambda v: hvp(flat_f, w, v) + self.damping * v
            # Eisenstat-Walker forcing: loose solves far away, tight ones near the minimum.
            p, _ = conjugate_gradient(matvec, -g, maxiter=self.cg_iters, tol=jnp.minimum(0.5, jnp.sqrt(g_norm)))
            slope = g @ p
            p = jnp.where(slope < 0, p, -g)  # not a descent direction: -g
            return p, jnp.minimum(slope, -(g_norm**2))

        w, g, k = newton_iterations(flat_f, flat_w0, direction, maxiter=self.maxiter, tol=self.tol)
        return _converged_solution(unravel(w), k, jnp.linalg.norm(g), self.tol)


def newton_iterations(flat_f, flat_w0: jax.Array, direction, *, maxiter: int, tol: float):
    """Newton-type iterations on a flat ``w`` ``(p,)``: each step along ``direction(w, g) -> (p, slope)``
    (a descent direction and the slope the line search tests) backtracked by :func:`_line_search`,
    until ``||g|| <= tol``, ``maxiter`` steps or a line search that fails. Returns ``(w, g, steps)``."""
    value_and_grad = jax.value_and_grad(flat_f)

    def cond(state):
        _, _, g, k, stalled = state
        return (k < maxiter) & (jnp.linalg.norm(g) > tol) & ~stalled

    def body(state):
        w, value, g, k, _ = state
        p, slope = direction(w, g)
        step, value, g_next, passed = _line_search(value_and_grad, w, value, g, p, slope)
        return w + step, value, g_next, k + 1, ~passed

    value, g = value_and_grad(flat_w0)
    init = (flat_w0, value, g, jnp.asarray(0, jnp.int32), jnp.asarray(False))
    w, _, g, k, _ = jax.lax.while_loop(cond, body, init)
    return w, g, k


# On the CPU one matrix at a time under vmap: jaxlib's batched LAPACK kernels spread a batch over the
# thread pool that runs the programs, and deadlock when several CPU devices run at once (the sweep's
# jax_num_cpu_devices = cores, seeds in shard_map lanes). A GPU keeps its batched factorisation.
def _on_this_backend(fn):
    return jax.custom_batching.sequential_vmap(fn) if jax.default_backend() == "cpu" else fn


def cholesky(matrix: jax.Array) -> jax.Array:
    """The lower Cholesky factor ``L`` of a symmetric ``(p, p)`` matrix (``L Lᵀ``); NaN where it is
    not positive definite."""
    return _on_this_backend(lambda m: jax.scipy.linalg.cho_factor(m, lower=True)[0])(matrix)


def cho_solve(factor: jax.Array, rhs: jax.Array) -> jax.Array:
    """``x`` with ``L Lᵀ x = rhs`` for the lower factor ``L`` ``(p, p)`` of :func:`cholesky`, ``rhs`` ``(p,)``."""
    return _on_this_backend(lambda lower, b: jax.scipy.linalg.cho_solve((lower, True), b))(factor, rhs)


@dataclasses.dataclass(frozen=True)
class DenseNewton(_ToTolerance):
    """Newton's method on the materialised Hessian: each step solves ``(∇²f + δ·I) p = -∇f`` by
    Cholesky, ``δ = min(damping, ||∇f||²)``, then backtracks along ``p`` as :class:`NewtonCG` does.
    For small models: a step costs a ``(p, p)`` Hessian (``jax.hessian`` over ``ravel_pytree(w)``)
    and an ``O(p³)`` factor.

    Where ``∇²f + δ·I`` is not positive definite (a saddle, or a singular Hessian without damping:
    Cholesky gives NaN) that step goes along ``-∇f``. The factor at the returned ``w`` comes
    back as ``Solution.factor`` (computed after the loop, so a caller that uses only ``w`` never pays
    for it), and :class:`~poison_jax.engine.Dense` with the same damping solves the adjoint with it:
    the implicit hypergradient then costs no second Hessian at ``w*`` and no CG. A solve of ``k``
    steps evaluates ``k`` Hessians, ``k + 1`` with the factor.

    Attributes:
      tol: stop when ``||∇f|| <= tol`` (> 0).
      maxiter: iteration cap (> 0); reaching it sets the status ``inner_max_steps``.
      damping: added to the Hessian's diagonal in the factor returned (>= 0), and at most this in
        each step's (``min(damping, ||∇f||²)``, so that the steps stay Newton's near the minimum);
        keeps the step defined where an unpenalised bias makes the Hessian singular.
    """

    maxiter: int = 100
    damping: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        checks.positive_finite("damping", self.damping, allow_zero=True)

    def factor(self, f: Callable[[jax.Array], jax.Array], w: jax.Array, damping: Any = None) -> jax.Array:
        """The lower Cholesky factor ``(p, p)`` of ``∇²f(w) + damping·I`` at a flat ``w`` ``(p,)``
        (``damping``: the solver's unless given); NaN where that matrix is not positive definite."""
        hessian = jax.hessian(f)(w)
        damping = self.damping if damping is None else damping
        return cholesky(0.5 * (hessian + hessian.T) + damping * jnp.eye(w.size, dtype=w.dtype))

    def solve(self, f: Callable[[PyTree], jax.Array], w0: PyTree) -> Solution:
        flat_w0, unravel = ravel_pytree(w0)
        flat_f = lambda x: f(unravel(x))

        def direction(w, g):
            # Damped by min(damping, ||g||²): defined where the Hessian is singular, and undamped enough
            # near the minimum to keep Newton's fast convergence (a fixed damping above the Hessian's
            # smallest eigenvalues makes it linear: 60-100 steps instead of 11 on digits, log λ = -8).
            p = cho_solve(self.factor(flat_f, w, jnp.minimum(self.damping, g @ g)), -g)
            slope = g @ p
            newton = jnp.all(jnp.isfinite(p)) & (slope < 0)  # else (no factor: not positive definite) -g
            return jnp.where(newton, p, -g), jnp.where(newton, slope, -(g @ g))

        w, g, k = newton_iterations(flat_f, flat_w0, direction, maxiter=self.maxiter, tol=self.tol)
        # The factor at w, after the loop: a caller that needs only w (Method.fit, a victim) never computes it.
        factor = self.factor(flat_f, w)
        return _converged_solution(unravel(w), k, jnp.linalg.norm(g), self.tol)._replace(factor=factor)


def _converged_solution(w: PyTree, steps: jax.Array, grad_norm: jax.Array, tol: float) -> Solution:
    return Solution(w, _status(w, grad_norm <= tol), {"inner_steps": steps, "inner_grad_norm": grad_norm})


@dataclasses.dataclass(frozen=True)
class LBFGS(_ToTolerance):
    """optax's L-BFGS (``optax.lbfgs``, zoom line search) in a ``lax.while_loop``.

    Attributes:
      tol: stop when ``||∇f|| <= tol`` (> 0).
      maxiter: iteration cap (> 0); reaching it sets the status ``inner_max_steps``.
      memory: number of curvature pairs kept (> 0).
    """

    maxiter: int = 500
    memory: int = 10

    def __post_init__(self):
        super().__post_init__()
        checks.positive_int("memory", self.memory)

    def solve(self, f: Callable[[PyTree], jax.Array], w0: PyTree) -> Solution:
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
        return _converged_solution(w, k, otu.tree_norm(jax.grad(f)(w)), self.tol)
