"""Floor 0, the engine: inner solvers and ways to differentiate them, composed into hypergradients.

The engine knows nothing of poisoning, data or models: a bilevel problem is two scalar functions
``inner_loss(w, theta, *args)`` and ``outer_loss(w, theta, *args)`` of any pytrees.
"""

from poison_jax.engine._bilevel import (
    IFT,
    RMD,
    HypergradInfo,
    Implicit,
    Method,
    Warm,
    exact_hypergrad,
    hypergrad,
    ift_hypergrad,
    rmd_hypergrad,
    unroll,
    warm_hypergrad,
)
from poison_jax.engine._solvers import LBFGS, CGInfo, NewtonCG, SolveInfo, conjugate_gradient, hvp

__all__ = [
    "CGInfo",
    "HypergradInfo",
    "IFT",
    "Implicit",
    "LBFGS",
    "Method",
    "NewtonCG",
    "RMD",
    "SolveInfo",
    "Warm",
    "conjugate_gradient",
    "exact_hypergrad",
    "hvp",
    "hypergrad",
    "ift_hypergrad",
    "rmd_hypergrad",
    "unroll",
    "warm_hypergrad",
]
