"""Regularisation penalties as values, each with its own log-λ per layer (floor 1).

A model's penalty acts on its layers' kernels (biases are never penalised, as in the paper). Every
penalty is a frozen dataclass with ``lams_per_layer`` (how many log-λ each layer has) and
``__call__(kernels, log_lam) -> scalar``, ``kernels`` the layers' kernels in input-to-output order
and ``log_lam`` of shape ``(lams_per_layer * num_layers,)``:

* :class:`L2` -- ``Σ_l exp(λ_l)/2 · ||W_l||²``, the paper's penalty (one λ per layer);
* :class:`L1` -- ``Σ_l exp(λ_l) · Σ_j (sqrt(W_lj² + ε²) − ε)``: the absolute value smoothed by
  the pseudo-Huber function with parameter ``ε = smoothing`` (one λ per layer);
* :class:`ElasticNet` -- the two together, ``log_lam = (λ1_1..λ1_L, λ2_1..λ2_L)``: the smoothed L1
  with the first ``L`` log-λ, the L2 with the last ``L``.

Why a smoothed L1. ``|w|`` is not differentiable at 0, and both hypergradients need more than a
gradient of the inner loss: RMD differentiates through the training steps, IFT needs the Hessian
``∇²_w L``. With ``sqrt(w² + ε²) − ε`` the inner problem is twice differentiable (curvature
``ε² / (w² + ε²)^{3/2}``, at most ``1/ε`` at 0), it is within ``ε`` of ``|w|`` for every weight,
and the hypergradient poison_jax computes is the *exact* hypergradient of this smoothed problem
(tested against central differences of it in float64). It is not the hypergradient of the
non-smooth problem, whose solution map is only piecewise differentiable (weights at exactly 0 do
not respond to small changes); as ``ε → 0`` the smoothed solutions approach the L1 ones while the
inner problem gets stiffer (a larger ``1/ε`` curvature). The default ``ε = 1e-3`` is small
against the weights that matter (about 0.01 to 1 on [0, 1] pixel features) and keeps the
curvature bounded for the converged solvers.

Example::

    >>> import jax.numpy as jnp
    >>> from poison_jax.poisoning import penalties
    >>> kernels = [jnp.array([[3.0], [-4.0]])]
    >>> float(penalties.L2()(kernels, jnp.zeros(1)))
    12.5
    >>> round(float(penalties.L1(smoothing=1e-6)(kernels, jnp.zeros(1))), 4)
    7.0
    >>> penalties.ElasticNet().lams_per_layer
    2
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from poison_jax.engine import checks

__all__ = ["ElasticNet", "L1", "L2", "PENALTIES", "Penalty"]


def _sum_squares(kernels: Sequence[jax.Array]) -> jax.Array:
    return jnp.stack([jnp.sum(k**2) for k in kernels])


def _smoothed_abs_sums(kernels: Sequence[jax.Array], eps: float) -> jax.Array:
    return jnp.stack([jnp.sum(jnp.sqrt(k**2 + eps**2) - eps) for k in kernels])


@dataclasses.dataclass(frozen=True)
class L2:
    """``Σ_l exp(λ_l)/2 · ||W_l||²`` (the paper's penalty)."""

    lams_per_layer = 1

    def __call__(self, kernels: Sequence[jax.Array], log_lam: jax.Array) -> jax.Array:
        return 0.5 * jnp.sum(jnp.exp(log_lam) * _sum_squares(kernels))


@dataclasses.dataclass(frozen=True)
class _Smoothed:
    """A penalty with the pseudo-Huber ``ε = smoothing`` (> 0) of a smoothed ``|w|``."""

    smoothing: float = 1e-3

    def __post_init__(self):
        if not checks.is_real(self.smoothing) or self.smoothing <= 0:
            checks.fail(f"{type(self).__name__} smoothing", self.smoothing, "a finite number > 0 (the pseudo-Huber ε)")


@dataclasses.dataclass(frozen=True)
class L1(_Smoothed):
    """``Σ_l exp(λ_l) · Σ_j (sqrt(W_lj² + ε²) − ε)``, a smoothed L1 (``ε = smoothing`` > 0)."""

    lams_per_layer = 1

    def __call__(self, kernels: Sequence[jax.Array], log_lam: jax.Array) -> jax.Array:
        return jnp.sum(jnp.exp(log_lam) * _smoothed_abs_sums(kernels, self.smoothing))


@dataclasses.dataclass(frozen=True)
class ElasticNet(_Smoothed):
    """The smoothed L1 with ``log_lam[:L]`` plus the L2 with ``log_lam[L:]`` (two λ per layer)."""

    lams_per_layer = 2

    def __call__(self, kernels: Sequence[jax.Array], log_lam: jax.Array) -> jax.Array:
        num_layers = len(kernels)
        return L1(self.smoothing)(kernels, log_lam[:num_layers]) + L2()(kernels, log_lam[num_layers:])


Penalty = L2 | L1 | ElasticNet
PENALTIES: dict[str, type[L2] | type[L1] | type[ElasticNet]] = {"l2": L2, "l1": L1, "elastic-net": ElasticNet}
