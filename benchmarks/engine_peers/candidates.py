"""The timed hypergradients, as values: :class:`Ours` (a poison_jax method, cold or warm) and
:class:`Peer` (optimistix or jaxopt, cold or warm). Each has ``call(problem) -> (value, grad)``
(timed) and ``diag(problem) -> dict`` (run once, untimed: iterations, ||grad_w|| at the returned w,
CG)."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from benchmarks import engine_calls as ec
from benchmarks.engine_peers.problem import Problem

# lineax's CG measures the residual in the max norm and raises when it has not converged by max_steps; in
# float32 it stalls near 1e-6, so its relative tolerance is kept at or above this.
LINEAX_CG_FLOOR = 1e-5
CG_YARDSTICK_STEPS = 50


class Ours(NamedTuple):
    """A poison_jax method from ``w0`` (``start`` None) or from the previous hyperiteration's warm state."""

    family: str
    settings: str
    method: Any
    start: Any = None

    library = "poison_jax"
    tuned_adjoint = False

    @property
    def warm(self) -> bool:
        return self.start is not None

    def _result(self, p: Problem):
        return ec.hypergrad(self.method, p.inner, p.outer, p.w0, p.theta, warm=self.start)

    def call(self, p: Problem):
        r = self._result(p)
        return r.value, r.grad

    def diag(self, p: Problem) -> dict:
        r = self._result(p)
        names = {"inner_steps": "solve_iterations", "adjoint_steps": "cg_iterations", "adjoint_residual": "cg_residual"}
        return {**{names.get(k, k): v.item() for k, v in r.stats.items()}, "status": int(r.status)}


class Peer(NamedTuple):
    """A peer's ``hyper(theta, w_init) -> (value, grad)`` and ``forward(theta, w_init) -> (w, iterations)``
    from ``w_init`` (w0, or its own solution at ``theta_prev`` for the warm row). ``tuned_adjoint``:
    the adjoint solve is one we configured (CG), not the library's default."""

    library: str
    family: str
    settings: str
    hyper: Any
    forward: Any
    w_init: Any
    warm: bool
    tuned_adjoint: bool

    def call(self, p: Problem):
        return self.hyper(p.theta, self.w_init)

    def diag(self, p: Problem) -> dict:
        w, steps = self.forward(p.theta, self.w_init)
        grad_norm = float(jnp.linalg.norm(ravel_pytree(jax.grad(p.inner)(w, p.theta))[0]))
        return {"solve_iterations": int(steps), "inner_grad_norm": grad_norm}


def ours(spec: dict, p: Problem) -> list[Ours]:
    lr, out = spec["lr"], []
    for t in spec["ift_steps"]:
        method = ec.ift_method(t, lr, cg_iters=spec["ift_cg_iters"], cg_tol=spec["ift_cg_tol"])
        settings = f"T={t}, η={lr}, CG ≤ {spec['ift_cg_iters']} to {spec['ift_cg_tol']:g}"
        out.append(Ours("poison_jax IFT (GD)", settings, method))
    out += [Ours("poison_jax RMD", f"T={t}, η={lr}", ec.rmd_method(t, lr)) for t in spec["rmd_steps"]]
    solvers = [("NewtonCG", tol, ctol, ec.newton_cg(tol, maxiter=100, cg_iters=50)) for tol, ctol in spec["newton"]]
    solvers += [("LBFGS", tol, ctol, ec.lbfgs(tol, maxiter=1000)) for tol, ctol in spec["lbfgs"]]
    implicit = [
        (name, f"tol={tol:g}, CG tol={ctol:g}", ec.implicit_method(solver, spec["implicit_cg_iters"], ctol))
        for name, tol, ctol, solver in solvers
    ]
    tol = spec["newton"][-1][0]  # dense Newton at Newton-CG's tightest tolerance; its adjoint is a direct solve
    implicit.append(
        ("DenseNewton", f"tol={tol:g}, Dense adjoint by its Cholesky factor", ec.implicit_dense_method(tol))
    )
    out += [Ours(f"poison_jax Implicit {name}", s + ", from w0 = 0", m) for name, s, m in implicit]
    cold = ec.cold_warm(p.w0)
    for name, settings, method in implicit:
        # The warm state of the previous hyperiteration, at theta_prev (itself solved from w0 = 0).
        start = jax.block_until_ready(ec.hypergrad(method, p.inner, p.outer, p.w0, p.theta_prev, warm=cold).warm)
        out.append(Ours(f"poison_jax Implicit {name} warm", settings + ", from the previous Warm", method, start))
    return out


def _cold_and_warm(library, family, settings, hyper, forward, p: Problem, tuned: bool) -> list[Peer]:
    w_prev = jax.block_until_ready(forward(p.theta_prev, p.w0)[0])
    return [
        Peer(library, family, settings + ", from w0 = 0", hyper, forward, p.w0, False, tuned),
        Peer(library, family + " warm", settings + ", from the previous solution", hyper, forward, w_prev, True, tuned),
    ]


def _optimistix_pair(optx, lx, spec: dict, p: Problem, name: str, tol: float, ctol: float | None) -> list[Peer]:
    solver = getattr(optx, name)(rtol=tol, atol=tol)
    if ctol is None:
        adjoint, tags, family = optx.ImplicitAdjoint(), frozenset(), f"optimistix {name}"
        settings = f"rtol=atol={tol:g}, ImplicitAdjoint() (default: dense solve)"
    else:
        rtol = max(ctol, LINEAX_CG_FLOOR)
        adjoint = optx.ImplicitAdjoint(lx.CG(rtol=rtol, atol=1e-2 * rtol, max_steps=spec["peer_cg_iters"]))
        tags, family = frozenset({lx.symmetric_tag, lx.positive_semidefinite_tag}), f"optimistix {name} + CG adjoint"
        settings = f"rtol=atol={tol:g}, ImplicitAdjoint(lx.CG(rtol={rtol:g})), PSD tag"

    def solve(th, w_init):
        kw = dict(max_steps=spec["peer_max_steps"], adjoint=adjoint, throw=False, tags=tags)
        return optx.minimise(p.inner, solver, w_init, args=th, **kw)

    hyper = jax.jit(jax.value_and_grad(lambda th, w_init: p.outer(solve(th, w_init).value, th)))
    forward = jax.jit(lambda th, w_init: (lambda s: (s.value, s.stats["num_steps"]))(solve(th, w_init)))
    return _cold_and_warm("optimistix", family, settings, hyper, forward, p, ctol is not None)


def optimistix_peers(spec: dict, p: Problem) -> list[Peer]:
    import lineax as lx
    import optimistix as optx

    configs = [(tol, None) for tol in spec["peer_tols"]] + list(spec["peer_cg"])
    return [
        peer
        for name in spec["peer_solvers"]
        for tol, ctol in configs
        for peer in _optimistix_pair(optx, lx, spec, p, name, tol, ctol)
    ]


def jaxopt_peers(spec: dict, p: Problem) -> list[Peer]:
    import jaxopt

    out = []
    for tol, ctol in [(tol, None) for tol in spec["peer_tols"]] + list(spec["peer_cg"]):
        if ctol is None:
            solve, family = None, "jaxopt LBFGS"
            settings = f"tol={tol:g}, implicit_diff (default: normal-equation CG)"
        else:
            solve = functools.partial(jaxopt.linear_solve.solve_cg, tol=ctol, maxiter=spec["peer_cg_iters"])
            family = "jaxopt LBFGS + CG adjoint"
            settings = f"tol={tol:g}, implicit_diff_solve=solve_cg(tol={ctol:g})"
        solver = jaxopt.LBFGS(
            fun=p.inner, tol=tol, maxiter=spec["peer_max_steps"], implicit_diff=True, implicit_diff_solve=solve
        )
        hyper = jax.jit(jax.value_and_grad(lambda th, w_init, s=solver: p.outer(s.run(w_init, th).params, th)))
        forward = jax.jit(lambda th, w_init, s=solver: (lambda r: (r.params, r.state.iter_num))(s.run(w_init, th)))
        out += _cold_and_warm("jaxopt", family, settings, hyper, forward, p, ctol is not None)
    return out


def cg_yardstick(p: Problem):
    """A call running ``CG_YARDSTICK_STEPS`` conjugate-gradient steps (tolerance 0, so every step runs) on
    the inner Hessian at ``w0``: one step is a Hessian-vector product and the vector updates, the unit
    every method here pays in (a gradient costs about as much). Timed among the candidates, it turns
    each row's time into CG-step equivalents."""
    w = jax.tree_util.tree_map(lambda a: a + 0.01, p.w0)  # off the symmetric start, where sigmoid' is flat
    rhs = jax.tree_util.tree_map(lambda a: jax.random.normal(jax.random.PRNGKey(5), a.shape, a.dtype), p.w0)
    run = jax.jit(lambda w, b, th: ec.cg_steps(p.inner, w, th, b, CG_YARDSTICK_STEPS))
    return lambda: run(w, rhs, p.theta)
