"""Dense Newton: it converges, its Cholesky factor at w* solves the adjoint (no LU, no CG), under jit
and vmap; a Hessian that is not positive definite is stepped around or reported, never a silent NaN;
a damping the factor does not have is refused; the config builds it."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from poison_jax import engine
from poison_jax.engine import Dense, DenseNewton, ImplicitDense, Method, NewtonCG
from poison_jax.experiments import config, presets
from tests.test_engine import logistic_losses, make_data, problem


@pytest.mark.parametrize("name", ["ridge", "logistic"])
def test_dense_newton_reaches_its_tolerance_and_returns_the_factor_at_w(x64, name):
    """Quadratic convergence even with a damping as large as λ = 0.1: the steps' damping shrinks as
    min(damping, ||grad||²) (a fixed 0.1 took 26 steps on the logistic problem); the factor has all of it."""
    inner, _, w0, theta = problem(name)
    f = lambda w: inner(w, theta)
    solution = jax.jit(DenseNewton(tol=1e-10, damping=0.1).solve, static_argnums=0)(f, w0)
    assert int(solution.status) == engine.RESULTS.successful and float(solution.stats["inner_grad_norm"]) <= 1e-10
    assert int(solution.stats["inner_steps"]) <= 5
    flat, unravel = ravel_pytree(solution.w)
    hessian = jax.jit(jax.hessian(lambda x: f(unravel(x))))(flat) + 0.1 * jnp.eye(flat.size)
    np.testing.assert_allclose(solution.factor @ solution.factor.T, hessian, rtol=1e-10, atol=1e-12)
    assert jax.eval_shape(lambda w: NewtonCG().solve(f, w), w0).factor is None  # the other solvers carry none


def _jaxpr(method, inner, outer, w0, theta) -> str:
    return str(jax.make_jaxpr(lambda th: engine.hypergrad(method, inner, outer, w0, th)[:2])(theta))


def test_the_adjoint_reuses_the_solvers_factor(x64):
    """With DenseNewton, Dense solves by the solver's Cholesky factor: no LU, no CG, no adjoint steps."""
    inner, outer, w0, theta = problem("two_block")
    reused = _jaxpr(ImplicitDense(), inner, outer, w0, theta)
    assert not re.search(r"= lu ", reused) and re.search(r"= cholesky ", reused)
    assert re.search(r"= lu ", _jaxpr(Method(NewtonCG(), Dense()), inner, outer, w0, theta))  # materialised
    result = engine.hypergrad(ImplicitDense(tol=1e-10), inner, outer, w0, theta, throw=True)
    assert set(result.stats) == {"inner_steps", "inner_grad_norm", "adjoint_residual"}
    assert float(result.stats["adjoint_residual"]) < 1e-12  # checked by a Hessian-vector product


def test_mismatched_damping_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"Dense\(damping=0.0\) cannot reuse .*damping=0.001.*same damping"):
        Method(DenseNewton(damping=1e-3), Dense())
    Method(DenseNewton(damping=1e-3), engine.ImplicitCG(damping=0.0))  # CG needs no factor
    with pytest.raises(ValueError, match=r"damping must be a finite number >= 0, got -1"):
        DenseNewton(damping=-1)


def quartic(w, theta):
    """Not convex: the Hessian 3w² - 1 is negative near 0; minima at w³ - w = theta."""
    return jnp.sum(w**4 / 4 - w**2 / 2 - theta * w)


def test_a_hessian_that_is_not_positive_definite_is_stepped_around_or_reported(x64):
    theta = jnp.array([0.3, -0.2, 0.5])
    outer = lambda w, th: jnp.sum(w**2)
    start = jnp.zeros(3)  # Hessian -I: Cholesky fails, the step goes along -grad
    result = engine.hypergrad(ImplicitDense(tol=1e-10), quartic, outer, start, theta)
    w = result.warm.w
    assert int(result.status) == engine.RESULTS.successful and np.all(np.abs(w) > 1 / np.sqrt(3))
    np.testing.assert_allclose(result.grad, 2 * w / (3 * w**2 - 1), rtol=1e-8)  # dA/dθ = 2w · dw/dθ
    # At a stationary point that is a maximum the factor is NaN: the status says so.
    at_max = engine.hypergrad(ImplicitDense(), quartic, outer, start, jnp.zeros(3))
    assert int(at_max.status) == engine.RESULTS.nonfinite and int(at_max.stats["inner_steps"]) == 0


def test_jit_and_vmap_over_data_give_the_per_seed_results(x64):
    datas = [make_data(seed)[0] for seed in range(2)]
    theta = make_data(0)[1]
    method = ImplicitDense(tol=1e-9, damping=1e-3)

    def one(data):
        inner, outer, w0 = logistic_losses(data)
        result = engine.hypergrad(method, inner, outer, w0, theta)
        return result.value, result.grad, result.status, result.stats

    batched = jax.jit(jax.vmap(one))(jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *datas))
    for i, data in enumerate(datas):
        single = jax.jit(one)(data)
        for b, s in zip(jax.tree_util.tree_leaves(batched), jax.tree_util.tree_leaves(single), strict=True):
            np.testing.assert_allclose(b[i], s, rtol=1e-9, atol=1e-12)


def test_warm_starts_carry_through_a_scan(x64):
    """The Warm of ImplicitDense is (w, adjoint), shape-stable: a lax.scan of hyperiterations carries it."""
    inner, outer, w0, theta = problem("logistic")
    method = ImplicitDense(tol=1e-9)

    def step(carry, _):
        th, warm = carry
        result = engine.hypergrad(method, inner, outer, w0, th, warm=warm)
        th = {**th, "xp": th["xp"] - 0.1 * result.grad["xp"]}
        return (th, result.warm), result.stats["inner_steps"]

    first = engine.hypergrad(method, inner, outer, w0, theta)
    (_, warm), steps = jax.lax.scan(step, (theta, first.warm), None, length=4)
    assert jax.tree_util.tree_structure(warm) == jax.tree_util.tree_structure(first.warm)
    assert int(first.stats["inner_steps"]) == 3 and int(steps.max()) <= 2  # from the previous w*: fewer steps


def test_config_builds_the_dense_method_and_victim():
    base = presets.preset("digits-lr")
    cfg = config.override(base, {"method": "implicit", "method.solver": "dense-newton", "method.damping": 1e-4})
    assert cfg.method.build() == ImplicitDense(tol=1e-5, maxiter=100, damping=1e-4)
    cfg = config.override(cfg, {"victim": "converged", "victim.solver": "dense-newton", "victim.solver.iters": 50})
    assert cfg.victim.build(n_train=10).solver == DenseNewton(tol=1e-5, maxiter=50)
    assert cfg.hash() != config.override(cfg, {"method.solver": "newton-cg"}).hash()
