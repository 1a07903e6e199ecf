"""Floor 0, the engine: inner solvers x ways to differentiate them -> hypergradients.

The engine knows nothing of poisoning, data or models: a bilevel problem is two scalar functions
``inner_loss(w, theta, *args)`` and ``outer_loss(w, theta, *args)`` of any pytrees, and
:func:`hypergrad` differentiates ``theta -> outer_loss(w*(theta), theta, *args)`` with a
:class:`Method`, an inner solver composed with a way to differentiate it:

=======================  ==========================================================================
inner solvers            :class:`GradientDescent` (fixed steps, ``lax.scan``), :class:`NewtonCG`,
                         :class:`LBFGS`, :class:`DenseNewton` (to a tolerance, ``lax.while_loop``),
                         or yours
ways to differentiate    :class:`Unrolled` (reverse mode, optional checkpointing),
                         :class:`ImplicitCG` (implicit function theorem, CG, warm-startable),
                         :class:`Dense` (implicit, a dense Hessian solve; with DenseNewton the
                         solver's own Cholesky factor), or yours
named combinations       :class:`RMD`, :class:`IFT` (the paper's), :class:`Implicit` (the strong attack's),
                         :class:`ImplicitDense` (the strong attack's for small models)
=======================  ==========================================================================

Every hypergradient is one :class:`Result` (value, grad, status, stats, warm); ``throw=True``
raises :class:`HypergradError` with the status's :func:`message`. Building blocks: :func:`hvp`,
:func:`conjugate_gradient`, :func:`traced_once`; validation helpers: :mod:`poison_jax.engine.checks`.
"""

from poison_jax.engine import checks
from poison_jax.engine._adjoints import Dense, Differentiated, ImplicitCG, Unrolled
from poison_jax.engine._hypergrad import (
    IFT,
    RMD,
    HypergradError,
    Implicit,
    ImplicitDense,
    Method,
    Result,
    Warm,
    hypergrad,
)
from poison_jax.engine._linear import CGInfo, conjugate_gradient, hvp, traced_once
from poison_jax.engine._solvers import LBFGS, RESULTS, DenseNewton, GradientDescent, NewtonCG, Solution, message

__all__ = [
    "CGInfo",
    "Dense",
    "DenseNewton",
    "Differentiated",
    "GradientDescent",
    "HypergradError",
    "IFT",
    "Implicit",
    "ImplicitCG",
    "ImplicitDense",
    "LBFGS",
    "Method",
    "NewtonCG",
    "RESULTS",
    "RMD",
    "Result",
    "Solution",
    "Unrolled",
    "Warm",
    "checks",
    "conjugate_gradient",
    "hvp",
    "hypergrad",
    "message",
    "traced_once",
]
