"""The sections of an experiment config that are choices (floor 2): model, penalty, loss, method,
inner solver, outer step rules and victim.

Each choice is a frozen dataclass holding only the fields that choice reads, each documented where
it is defined (``metadata["help"]``) and checked at construction; :func:`family` lists a choice's
alternatives by ``kind`` (the name ``--set method=implicit`` and ``config.json`` use). Each builds
the value the rest of the package consumes (``build()``). The data sources are in
:mod:`poison_jax.experiments.sources`; the sections without alternatives (attack, sweep) and the
config that holds them all in :mod:`poison_jax.experiments.config`.

Example::

    >>> from poison_jax.experiments import sections
    >>> sections.Implicit(solver=sections.LBFGS(tol=1e-4)).build().solver.tol
    0.0001
    >>> sections.RMD(steps=0)
    Traceback (most recent call last):
    ...
    poison_jax.experiments.checked.ConfigError: method.steps must be a positive integer, got 0
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from poison_jax import engine
from poison_jax.engine import checks
from poison_jax.experiments.checked import (
    ConfigError,
    Section,
    boolean,
    family,
    is_a,
    non_negative,
    option,
    positive,
    positive_int,
    unit,
)
from poison_jax.poisoning import losses, models, outer, penalties, victims

__all__ = [
    "IFT",
    "LBFGS",
    "LR",
    "MLP",
    "RMD",
    "SGD",
    "AdamStep",
    "ArmijoStep",
    "Converged",
    "DenseNewton",
    "ElasticNet",
    "Implicit",
    "L1",
    "L2",
    "Logistic",
    "NewtonCG",
    "SmoothedHinge",
    "Squared",
    "NormalisedStep",
    "OptimisticStep",
    "SGDStep",
    "StepRule",
]


# -- model -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LR(Section):
    """Logistic regression (a linear model: with the squared loss, ridge regression; with the
    smoothed hinge, a linear SVM)."""

    kind: ClassVar[str] = "lr"
    at: ClassVar[str] = "model"

    def build(self, d: int, **kwargs: Any) -> models.Model:
        """The model on ``d`` features (``kwargs``: penalty, loss, num_classes)."""
        return models.logistic_regression(d, **kwargs)


def _hidden(path: str, value: Any) -> None:
    if not (isinstance(value, tuple) and value and all(checks.is_int(h) and h > 0 for h in value)):
        checks.fail(path, value, "a non-empty tuple of positive integers", error=ConfigError)


@dataclasses.dataclass(frozen=True)
class MLP(Section):
    """A fully connected network, one log λ per layer (the paper's 2-hidden-layer network)."""

    kind: ClassVar[str] = "mlp"
    at: ClassVar[str] = "model"
    hidden: tuple[int, ...] = option((128, 32), "hidden layer sizes", _hidden)

    def build(self, d: int, **kwargs: Any) -> models.Model:
        """The model on ``d`` features (``kwargs``: penalty, loss, num_classes)."""
        return models.mlp(d, hidden=self.hidden, **kwargs)


MODELS = family(LR, MLP)

# -- penalty and loss ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class L2(Section):
    """The paper's penalty, ``exp(λ)/2 ||w||²`` per layer."""

    kind: ClassVar[str] = "l2"
    at: ClassVar[str] = "penalty"

    def build(self) -> penalties.Penalty:
        return penalties.L2()


_EPS = "ε of the smoothed |w| = sqrt(w² + ε²) − ε (> 0)"


@dataclasses.dataclass(frozen=True)
class L1(Section):
    """A smoothed L1 penalty, one log λ per layer."""

    kind: ClassVar[str] = "l1"
    at: ClassVar[str] = "penalty"
    smoothing: float = option(1e-3, _EPS, positive)

    def build(self) -> penalties.Penalty:
        return penalties.L1(smoothing=float(self.smoothing))


@dataclasses.dataclass(frozen=True)
class ElasticNet(Section):
    """A smoothed L1 plus an L2 penalty, two log λ per layer."""

    kind: ClassVar[str] = "elastic-net"
    at: ClassVar[str] = "penalty"
    smoothing: float = option(1e-3, _EPS, positive)

    def build(self) -> penalties.Penalty:
        return penalties.ElasticNet(smoothing=float(self.smoothing))


PENALTIES = family(L2, L1, ElasticNet)


@dataclasses.dataclass(frozen=True)
class Logistic(Section):
    """The paper's loss: logistic (binary) or softmax cross-entropy (multiclass)."""

    kind: ClassVar[str] = "logistic"
    at: ClassVar[str] = "loss"

    def build(self) -> losses.Loss:
        return losses.Logistic()


@dataclasses.dataclass(frozen=True)
class SmoothedHinge(Section):
    """A smoothed hinge loss (a linear SVM with model lr); binary only."""

    kind: ClassVar[str] = "smoothed-hinge"
    at: ClassVar[str] = "loss"
    smoothing: float = option(0.5, "width h of the quadratic band below margin 1 (> 0)", positive)

    def build(self) -> losses.Loss:
        return losses.SmoothedHinge(smoothing=float(self.smoothing))


@dataclasses.dataclass(frozen=True)
class Squared(Section):
    """The squared loss: a regression (ridge regression with model lr), judged by test MSE."""

    kind: ClassVar[str] = "squared"
    at: ClassVar[str] = "loss"

    def build(self) -> losses.Loss:
        return losses.Squared()


LOSSES = family(Logistic, SmoothedHinge, Squared)

# -- inner solver, method --------------------------------------------------------------------------

_TOL = "stop when ||grad_w inner|| <= tol (> 0)"


@dataclasses.dataclass(frozen=True)
class NewtonCG(Section):
    """Newton's method with conjugate-gradient steps, to a tolerance from a warm start."""

    kind: ClassVar[str] = "newton-cg"
    at: ClassVar[str] = "solver"
    tol: float = option(1e-5, _TOL, positive)
    iters: int = option(100, "solver iterations at most", positive_int)

    def build(self) -> engine.NewtonCG:
        return engine.NewtonCG(tol=self.tol, maxiter=self.iters)


@dataclasses.dataclass(frozen=True)
class LBFGS(Section):
    """L-BFGS, to a tolerance from a warm start."""

    kind: ClassVar[str] = "lbfgs"
    at: ClassVar[str] = "solver"
    tol: float = option(1e-5, _TOL, positive)
    iters: int = option(100, "solver iterations at most", positive_int)

    def build(self) -> engine.LBFGS:
        return engine.LBFGS(tol=self.tol, maxiter=self.iters)


@dataclasses.dataclass(frozen=True)
class DenseNewton(Section):
    """Newton's method on the materialised Hessian (Cholesky), to a tolerance from a warm start; with
    method implicit its factor at the solution also solves the adjoint (no CG). For small models on a
    GPU; on a CPU Newton-CG is faster from a few dozen weights up (docs: How to choose, "Which solver
    where")."""

    kind: ClassVar[str] = "dense-newton"
    at: ClassVar[str] = "solver"
    tol: float = option(1e-5, _TOL, positive)
    iters: int = option(100, "solver iterations at most", positive_int)

    def build(self, damping: float = 0.0) -> engine.DenseNewton:
        """The solver; ``damping``: added to the Hessian's diagonal (method implicit's damping)."""
        return engine.DenseNewton(tol=self.tol, maxiter=self.iters, damping=damping)


SOLVERS = family(NewtonCG, LBFGS, DenseNewton)
_STEPS = "T, full-batch gradient-descent steps of the inner training"
_LR = "η, step size of the inner training"
_CG_ITERS = "conjugate-gradient iterations at most for the adjoint"
_CG_TOL = "relative CG residual to stop at"
_DAMPING = "added to the Hessian's diagonal in the adjoint system"


@dataclasses.dataclass(frozen=True)
class RMD(Section):
    """The paper's hypergradient: reverse mode through T steps of gradient descent."""

    kind: ClassVar[str] = "rmd"
    at: ClassVar[str] = "method"
    steps: int = option(150, _STEPS, positive_int)
    lr: float = option(0.1, _LR, positive)
    checkpoint: bool = option(False, "rematerialise the inner loop in segments (memory for time)", boolean)

    def build(self) -> engine.Method:
        return engine.RMD(steps=self.steps, lr=self.lr, checkpoint=True if self.checkpoint else None)


@dataclasses.dataclass(frozen=True)
class IFT(Section):
    """The implicit function theorem at w_T, after T steps of gradient descent."""

    kind: ClassVar[str] = "ift"
    at: ClassVar[str] = "method"
    steps: int = option(150, _STEPS, positive_int)
    lr: float = option(0.1, _LR, positive)
    cg_iters: int = option(100, _CG_ITERS, positive_int)
    cg_tol: float = option(1e-6, _CG_TOL, non_negative)
    damping: float = option(0.0, _DAMPING, non_negative)

    def build(self) -> engine.Method:
        return engine.IFT(
            steps=self.steps, lr=self.lr, cg_iters=self.cg_iters, cg_tol=self.cg_tol, damping=self.damping
        )


@dataclasses.dataclass(frozen=True)
class Implicit(Section):
    """A converged, warm-started inner solve, then the implicit function theorem (the strong attack):
    the adjoint by CG, or with solver dense-newton by the solver's Cholesky factor (cg_iters and
    cg_tol unused; damping added to the Hessian in the solve and the adjoint alike)."""

    kind: ClassVar[str] = "implicit"
    at: ClassVar[str] = "method"
    solver: NewtonCG | LBFGS | DenseNewton = option(
        NewtonCG(), "the inner solver: newton-cg, lbfgs or dense-newton", is_a(SOLVERS)
    )
    cg_iters: int = option(100, _CG_ITERS, positive_int)
    cg_tol: float = option(1e-6, _CG_TOL, non_negative)
    damping: float = option(0.0, _DAMPING, non_negative)

    def build(self) -> engine.Method:
        if isinstance(self.solver, DenseNewton):
            return engine.ImplicitDense(tol=self.solver.tol, maxiter=self.solver.iters, damping=self.damping)
        return engine.Implicit(
            solver=self.solver.build(), cg_iters=self.cg_iters, cg_tol=self.cg_tol, damping=self.damping
        )


METHODS = family(RMD, IFT, Implicit)

# -- outer step rules ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StepRule(Section):
    """An outer step rule (its kind names it: :data:`poison_jax.poisoning.outer.OUTER_STEPS`)."""

    at: ClassVar[str] = "step"

    def build(self) -> Any:
        return outer.OUTER_STEPS[self.kind]()


@dataclasses.dataclass(frozen=True)
class NormalisedStep(StepRule):
    """A projected step of fixed length along the normalised gradient (the paper's rule for Xp)."""

    kind: ClassVar[str] = "normalised"


@dataclasses.dataclass(frozen=True)
class SGDStep(StepRule):
    """A projected gradient step (the paper's rule for log λ)."""

    kind: ClassVar[str] = "sgd"


@dataclasses.dataclass(frozen=True)
class AdamStep(StepRule):
    """optax's Adam, projected."""

    kind: ClassVar[str] = "adam"


@dataclasses.dataclass(frozen=True)
class OptimisticStep(StepRule):
    """optax's optimistic gradient descent, projected."""

    kind: ClassVar[str] = "optimistic"


@dataclasses.dataclass(frozen=True)
class ArmijoStep(StepRule):
    """A normalised step with a backtracking (Armijo) line search on the objective."""

    kind: ClassVar[str] = "armijo"
    min_scale: float = option(
        1.0, "floor of each line search's first trial length, as a multiple of the step size, in [0, 1]", unit
    )

    def build(self) -> outer.Armijo:
        return outer.Armijo(min_scale=float(self.min_scale))


STEP_RULES = family(NormalisedStep, SGDStep, AdamStep, OptimisticStep, ArmijoStep)


# -- victim --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SGD(Section):
    """The paper's victim: mini-batch SGD from the model's initialisation."""

    kind: ClassVar[str] = "sgd"
    at: ClassVar[str] = "victim"
    lr: float = option(1e-2, "learning rate η_tr", positive)
    epochs: int = option(200, "epochs", positive_int)
    batch: int = option(64, "mini-batch size (at most n_train)", positive_int)

    def build(self, n_train: int) -> victims.SGDVictim:
        return victims.SGDVictim(lr=float(self.lr), epochs=self.epochs, batch_size=min(self.batch, n_train))


@dataclasses.dataclass(frozen=True)
class Converged(Section):
    """A victim trained to convergence by an inner solver."""

    kind: ClassVar[str] = "converged"
    at: ClassVar[str] = "victim"
    solver: NewtonCG | LBFGS | DenseNewton = option(
        NewtonCG(), "the solver: newton-cg, lbfgs or dense-newton", is_a(SOLVERS)
    )

    def build(self, n_train: int) -> victims.ConvergedVictim:
        return victims.ConvergedVictim(self.solver.build())


VICTIMS = family(SGD, Converged)
