"""Floor 0: hypergradients against finite differences, the dense reference and each other; the
engine composes solvers and ways to differentiate them, a solver written here included."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from poison_jax import engine
from poison_jax.engine import IFT, RMD, Dense, GradientDescent, ImplicitCG, Method, NewtonCG, Unrolled

N_CLEAN, N_POISON, N_VAL, D = 12, 3, 10, 4


def make_data(seed, dtype=jnp.float64):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N_CLEAN, D)) / np.sqrt(D)
    w_true = rng.normal(size=D)
    Xv = rng.normal(size=(N_VAL, D)) / np.sqrt(D)
    Xp = rng.normal(size=(N_POISON, D)) / np.sqrt(D)
    to = lambda a: jnp.asarray(a, dtype)
    data = {
        "X": to(X),
        "y_reg": to(X @ w_true + 0.1 * rng.normal(size=N_CLEAN)),
        "y_clf": to((X @ w_true > 0).astype(float)),
        "Xv": to(Xv),
        "yv_reg": to(Xv @ w_true),
        "yv_clf": to((Xv @ w_true > 0).astype(float)),
        "yp_reg": to(-rng.normal(size=N_POISON) - 1.0),
        "yp_clf": to(np.array([1.0, 0.0, 1.0])),
    }
    theta = {"xp": to(Xp), "log_lam": to(np.log(0.1))}
    return data, theta


# -- the problems: ridge regression, L2 logistic regression, a two-block model with two λ ------


def ridge_losses(data):
    def inner(w, theta):
        r = jnp.concatenate([data["X"] @ w - data["y_reg"], theta["xp"] @ w - data["yp_reg"]])
        return 0.5 * jnp.mean(r**2) + 0.5 * jnp.exp(theta["log_lam"]) * jnp.sum(w**2)

    def outer(w, theta):
        return 0.5 * jnp.mean((data["Xv"] @ w - data["yv_reg"]) ** 2)

    return inner, outer, jnp.zeros(D, data["X"].dtype)


def bce(logits, y):
    return jnp.mean(jax.nn.softplus(logits) - y * logits)


def logistic_losses(data):
    def inner(w, theta):
        X = jnp.concatenate([data["X"], theta["xp"]])
        y = jnp.concatenate([data["y_clf"], data["yp_clf"]])
        return bce(X @ w["w"] + w["b"], y) + 0.5 * jnp.exp(theta["log_lam"]) * jnp.sum(w["w"] ** 2)

    def outer(w, theta):
        return bce(data["Xv"] @ w["w"] + w["b"], data["yv_clf"])

    dtype = data["X"].dtype
    return inner, outer, {"w": jnp.zeros(D, dtype), "b": jnp.zeros((), dtype)}


def two_block_losses(data):
    """Weights in two blocks ("layers"), one log-λ per block: pytrees of several leaves."""
    k = D // 2

    def logits(w, X):
        return X[:, :k] @ w["layer_0"] + X[:, k:] @ w["layer_1"] + w["bias"]

    def inner(w, theta):
        X = jnp.concatenate([data["X"], theta["xp"]])
        y = jnp.concatenate([data["y_clf"], data["yp_clf"]])
        penalty = sum(0.5 * jnp.exp(theta["log_lam"][name]) * jnp.sum(w[name] ** 2) for name in ("layer_0", "layer_1"))
        return bce(logits(w, X), y) + penalty

    def outer(w, theta):
        return bce(logits(w, data["Xv"]), data["yv_clf"])

    dtype = data["X"].dtype
    w0 = {"layer_0": jnp.zeros(k, dtype), "layer_1": jnp.zeros(D - k, dtype), "bias": jnp.zeros((), dtype)}
    return inner, outer, w0


PROBLEMS = {"ridge": ridge_losses, "logistic": logistic_losses, "two_block": two_block_losses}
CONVERGED = dict(steps=4000, lr=1.0)  # contraction ≥ 1 - lr·exp(log λ) = 0.9 per step


def problem(name, seed=0):
    data, theta = make_data(seed)
    if name == "two_block":
        theta = {"xp": theta["xp"], "log_lam": {"layer_0": theta["log_lam"], "layer_1": theta["log_lam"] + 0.5}}
    inner, outer, w0 = PROBLEMS[name](data)
    return inner, outer, w0, theta


def central_differences(f, theta, eps=1e-5):
    flat, unravel = ravel_pytree(theta)
    grads = []
    for i in range(flat.size):
        e = jnp.zeros_like(flat).at[i].set(eps)
        grads.append((f(unravel(flat + e)) - f(unravel(flat - e))) / (2 * eps))
    return unravel(jnp.stack(grads))


def rel_err(a, b):
    a, b = ravel_pytree(a)[0], ravel_pytree(b)[0]
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def cosine(a, b):
    a, b = ravel_pytree(a)[0], ravel_pytree(b)[0]
    return float(a @ b / (jnp.linalg.norm(a) * jnp.linalg.norm(b)))


def solve(inner, w0, theta, solver=GradientDescent(**CONVERGED)):
    return solver.solve(lambda w: inner(w, theta), w0).w


def hypergrad(method, inner, outer, w0, theta, **kwargs):
    return engine.hypergrad(method, inner, outer, w0, theta, **kwargs)


EXACT = Method(GradientDescent(**CONVERGED), Dense())  # the dense reference at a converged w*


@dataclasses.dataclass(frozen=True)
class HeavyBall:
    """A solver written outside the package: gradient descent with momentum in a ``lax.scan``."""

    steps: int
    lr: float
    momentum: float = 0.5

    def solve(self, f, w0):
        grad = jax.grad(f)

        def step(carry, _):
            w, velocity = carry
            velocity = jax.tree_util.tree_map(lambda v, g: self.momentum * v - self.lr * g, velocity, grad(w))
            return (jax.tree_util.tree_map(jnp.add, w, velocity), velocity), None

        (w, _), _ = jax.lax.scan(step, (w0, jax.tree_util.tree_map(jnp.zeros_like, w0)), None, length=self.steps)
        return engine.Solution(w, jnp.asarray(0, jnp.int32), {"inner_steps": jnp.asarray(self.steps, jnp.int32)})


@dataclasses.dataclass(frozen=True)
class FixedPointWhile:
    """A solver with a ``while_loop`` (gradient steps until small): reverse mode cannot go through it."""

    lr: float = 0.5

    def solve(self, f, w0):
        grad = jax.grad(f)
        norm = lambda w: jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree_util.tree_leaves(grad(w))))
        step = lambda w: jax.tree_util.tree_map(lambda a, g: a - self.lr * g, w, grad(w))
        w = jax.lax.while_loop(lambda w: norm(w) > 1e-8, step, w0)
        return engine.Solution(w, jnp.asarray(0, jnp.int32), {})


# -- against central differences and the dense reference --------------------------------------


METHODS = {
    "rmd": RMD(**CONVERGED),
    "ift": IFT(**CONVERGED, cg_iters=50, cg_tol=1e-12),
    "dense": EXACT,
    "newton+cg": Method(NewtonCG(tol=1e-11, maxiter=50), ImplicitCG(iters=50, tol=1e-12)),
    "newton+dense": Method(NewtonCG(tol=1e-11, maxiter=50), Dense()),
    "dense_newton+dense": Method(engine.DenseNewton(tol=1e-11, maxiter=50), Dense()),
    "lbfgs+cg": Method(engine.LBFGS(tol=1e-11, maxiter=2000), ImplicitCG(iters=50, tol=1e-12)),
}


@functools.cache
def converged_central_differences(name):
    """Central differences of the converged objective of problem ``name`` (float64; shared by the methods)."""
    with jax.enable_x64(True):
        inner, outer, w0, theta = problem(name)
        return central_differences(jax.jit(lambda th: outer(solve(inner, w0, th), th)), theta)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_every_method_matches_central_differences(x64, name, method):
    inner, outer, w0, theta = problem(name)
    fd = converged_central_differences(name)
    result = hypergrad(METHODS[method], inner, outer, w0, theta, throw=True)
    assert int(result.status) == engine.RESULTS.successful
    assert jax.tree_util.tree_structure(result.grad) == jax.tree_util.tree_structure(theta)
    assert rel_err(result.grad, fd) < 1e-4
    assert float(result.stats["inner_grad_norm"]) < 1e-8


@pytest.mark.parametrize("name", ["logistic", "two_block"])
def test_a_solver_written_outside_the_package_is_unrolled_exactly(x64, name):
    """Unrolled differentiates the truncated problem: exact against central differences of it."""
    inner, outer, w0, theta = problem(name)
    solver = HeavyBall(steps=40, lr=0.3)
    fd = central_differences(jax.jit(lambda th: outer(solve(inner, w0, th, solver), th)), theta)
    result = hypergrad(Method(solver, Unrolled()), inner, outer, w0, theta)
    assert rel_err(result.grad, fd) < 1e-7
    assert float(result.stats["inner_grad_norm"]) > 1e-4  # 40 steps are far from stationary; the stats say so


@pytest.mark.parametrize("adjoint", [ImplicitCG(iters=60, tol=1e-12), Dense()], ids=["cg", "dense"])
def test_a_solver_written_outside_the_package_is_differentiated_implicitly(x64, adjoint):
    inner, outer, w0, theta = problem("two_block")
    solver = HeavyBall(steps=3000, lr=0.5)
    fd = central_differences(jax.jit(lambda th: outer(solve(inner, w0, th, solver), th)), theta)
    result = hypergrad(Method(solver, adjoint), inner, outer, w0, theta, throw=True)
    assert rel_err(result.grad, fd) < 1e-5
    assert rel_err(result.grad, hypergrad(EXACT, inner, outer, w0, theta).grad) < 1e-8


def test_unrolling_a_while_loop_solver_is_refused_with_the_fix(x64):
    inner, outer, w0, theta = problem("ridge")
    with pytest.raises(TypeError, match=r"runs a while_loop, .* use ImplicitCG\(\) or Dense\(\)"):
        hypergrad(Method(FixedPointWhile(), Unrolled()), inner, outer, w0, theta)
    result = hypergrad(Method(FixedPointWhile(), ImplicitCG(tol=1e-12)), inner, outer, w0, theta)
    assert rel_err(result.grad, hypergrad(EXACT, inner, outer, w0, theta).grad) < 1e-6


@pytest.mark.parametrize("name", ["ridge", "logistic"])
def test_rmd_error_falls_with_steps(x64, name):
    inner, outer, w0, theta = problem(name)
    exact = hypergrad(EXACT, inner, outer, w0, theta).grad
    errors = [rel_err(hypergrad(RMD(steps=t, lr=0.5), inner, outer, w0, theta).grad, exact) for t in (5, 20, 80, 320)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 1e-3 * errors[0]


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_an_unconverged_adjoint_is_reported_and_thrown(x64, name):
    inner, outer, w0, theta = problem(name)
    tight = hypergrad(IFT(**CONVERGED, cg_iters=100, cg_tol=1e-10), inner, outer, w0, theta)
    assert cosine(tight.grad, hypergrad(EXACT, inner, outer, w0, theta).grad) > 0.99999
    assert int(tight.status) == 0 and float(tight.stats["adjoint_residual"]) <= 1e-10

    loose = hypergrad(IFT(**CONVERGED, cg_iters=1, cg_tol=1e-10), inner, outer, w0, theta)
    assert int(loose.stats["adjoint_steps"]) == 1 and float(loose.stats["adjoint_residual"]) > 1e-3
    assert int(loose.status) == engine.RESULTS.adjoint_max_steps
    assert "adjoint solve stopped at its iteration cap" in engine.message(loose.status)
    with pytest.raises(engine.HypergradError, match="adjoint solve stopped at its iteration cap"):
        hypergrad(IFT(**CONVERGED, cg_iters=1, cg_tol=1e-10), inner, outer, w0, theta, throw=True)


def test_throw_inside_jit_raises_when_it_runs(x64):
    inner, outer, w0, theta = problem("ridge")
    method = Method(NewtonCG(tol=1e-14, maxiter=1), ImplicitCG())
    value = jax.jit(lambda th: hypergrad(method, inner, outer, w0, th).value)(theta)  # no throw: a value
    assert np.isfinite(float(value))
    with pytest.raises(Exception, match="inner solver stopped at its iteration cap"):
        jax.block_until_ready(jax.jit(lambda th: hypergrad(method, inner, outer, w0, th, throw=True).value)(theta))


def test_non_finite_results_have_their_status(x64):
    inner, outer, w0, theta = problem("ridge")
    diverging = hypergrad(RMD(steps=1000, lr=100.0), inner, outer, w0, theta)
    assert int(diverging.status) == engine.RESULTS.inner_nonfinite
    nan_outer = lambda w, th: outer(w, th) * jnp.nan
    assert int(hypergrad(EXACT, inner, nan_outer, w0, theta).status) == engine.RESULTS.nonfinite


ADJOINT_CG = {"adjoint_steps", "adjoint_residual"}
STATS = {
    "rmd": (RMD(steps=30, lr=0.5), {"inner_steps", "inner_grad_norm"}),
    "ift": (
        IFT(steps=30, lr=0.5, cg_iters=20),
        {"inner_steps", "inner_grad_norm", "adjoint_steps", "adjoint_residual"},
    ),
    "dense": (Method(NewtonCG(), Dense()), {"inner_steps", "inner_grad_norm", "adjoint_residual"}),
    "implicit_dense": (engine.ImplicitDense(), {"inner_steps", "inner_grad_norm", "adjoint_residual"}),
}


@pytest.mark.parametrize("name", sorted(STATS))
def test_stats_hold_only_what_the_method_did(x64, name):
    method, keys = STATS[name]
    inner, outer, w0, theta = problem("logistic")
    result = hypergrad(method, inner, outer, w0, theta)
    assert set(result.stats) == keys
    if isinstance(method.solver, GradientDescent):
        assert int(result.stats["inner_steps"]) == 30
    assert (result.warm.adjoint is None) == isinstance(method.adjoint, Unrolled)


def test_ift_damping_solves_the_damped_system(x64):
    inner, outer, w0, theta = problem("ridge")
    w_star = solve(inner, w0, theta)
    damped_inner = lambda w, th: inner(w, th) + 0.5 * 0.3 * jnp.sum(w**2)
    with_damping = hypergrad(IFT(**CONVERGED, cg_iters=50, cg_tol=1e-12, damping=0.3), inner, outer, w0, theta).grad
    # Damping adds 0.3·I to the Hessian only, not to the mixed derivative.
    _, g_w = jax.value_and_grad(outer)(w_star, theta)
    v = jnp.linalg.solve(jax.hessian(damped_inner)(w_star, theta), g_w)
    _, vjp = jax.vjp(lambda th: jax.grad(inner)(w_star, th), theta)
    assert rel_err(with_damping, jax.tree_util.tree_map(jnp.negative, vjp(v)[0])) < 1e-10
    dense = hypergrad(Method(GradientDescent(**CONVERGED), Dense(damping=0.3)), inner, outer, w0, theta).grad
    assert rel_err(dense, with_damping) < 1e-10


@pytest.mark.parametrize("checkpoint", [1, 3, 7, True, 50])
@pytest.mark.parametrize("name", ["logistic", "two_block"])
def test_checkpointed_rmd_equals_plain(x64, name, checkpoint):
    inner, outer, w0, theta = problem(name)
    plain = hypergrad(RMD(steps=40, lr=0.5), inner, outer, w0, theta)
    ckpt = hypergrad(RMD(steps=40, lr=0.5, checkpoint=checkpoint), inner, outer, w0, theta)
    assert abs(float(plain.value - ckpt.value)) < 1e-10
    assert float(jnp.max(jnp.abs(ravel_pytree(plain.grad)[0] - ravel_pytree(ckpt.grad)[0]))) < 1e-10


def test_named_combinations_are_their_methods(x64):
    inner, outer, w0, theta = problem("logistic")
    pairs = [
        (RMD(steps=30, lr=0.5, checkpoint=5), Method(GradientDescent(30, 0.5), Unrolled(5))),
        (IFT(steps=30, lr=0.5, cg_iters=40, cg_tol=1e-12), Method(GradientDescent(30, 0.5), ImplicitCG(40, 1e-12))),
        (engine.Implicit(), Method(NewtonCG(), ImplicitCG(100, 1e-5), warm_start=True)),
        (engine.ImplicitDense(damping=1e-4), Method(engine.DenseNewton(damping=1e-4), Dense(1e-4), warm_start=True)),
    ]
    for named, method in pairs:
        assert (named.solver, named.adjoint, named.warm_start) == (method.solver, method.adjoint, method.warm_start)
        a, b = hypergrad(named, inner, outer, w0, theta), hypergrad(method, inner, outer, w0, theta)
        assert rel_err(a.grad, b.grad) < 1e-12 and abs(float(a.value - b.value)) < 1e-12


# -- jit, vmap and pytrees -------------------------------------------------------------------


def _batched_data(batch):
    datas = [make_data(seed)[0] for seed in range(batch)]
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *datas)


def _all_methods(data, theta):
    """Every way of the engine on the logistic problem of ``data`` (value, grad and stats)."""
    inner, outer, w0 = logistic_losses(data)
    methods = {
        "rmd": RMD(steps=30, lr=0.5),
        "rmd_ckpt": RMD(steps=30, lr=0.5, checkpoint=4),
        "ift": IFT(steps=30, lr=0.5, cg_iters=20, cg_tol=1e-8),
        "dense": Method(GradientDescent(30, 0.5), Dense()),
        "newton": engine.Implicit(NewtonCG(tol=1e-8)),
        "heavy_ball": Method(HeavyBall(30, 0.3), Unrolled()),
    }
    out = {name: hypergrad(m, inner, outer, w0, theta)[:4] for name, m in methods.items()}
    w_t = solve(inner, w0, theta, GradientDescent(30, 0.5))
    out["hvp"] = engine.hvp(lambda w: inner(w, theta), w_t, jax.tree_util.tree_map(jnp.ones_like, w_t))
    return out


@pytest.mark.slow
def test_every_method_under_jit_and_vmap(x64):
    """jit per seed, vmap and jit-of-vmap over a leading data axis give the same results."""
    batch = 3
    data = _batched_data(batch)
    theta = make_data(0)[1]
    take = lambda i: jax.tree_util.tree_map(lambda a: a[i], data)
    stack = lambda trees: jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)

    per_seed = stack([jax.jit(_all_methods)(take(i), theta) for i in range(batch)])
    results = {
        "vmap": jax.vmap(_all_methods, in_axes=(0, None))(data, theta),
        "jit_of_vmap": jax.jit(jax.vmap(_all_methods, in_axes=(0, None)))(data, theta),
    }
    for name, got in results.items():
        assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(per_seed), name
        for g, e in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(per_seed), strict=False):
            np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-12, err_msg=name)


def test_vmap_over_theta_batch(x64):
    """A batch of hyperparameters (e.g. several poison sets) through one vmapped call."""
    inner, outer, w0, theta = problem("two_block")
    thetas = jax.tree_util.tree_map(lambda a: jnp.stack([a, a + 0.1]), theta)
    method = RMD(steps=20, lr=0.5)
    batched = jax.vmap(lambda th: hypergrad(method, inner, outer, w0, th)[:2])(thetas)
    for i in range(2):
        single = hypergrad(method, inner, outer, w0, jax.tree_util.tree_map(lambda a: a[i], thetas))[:2]
        for b, s in zip(jax.tree_util.tree_leaves(batched), jax.tree_util.tree_leaves(single), strict=False):
            np.testing.assert_allclose(b[i], s, rtol=1e-10, atol=1e-13)


def test_repeated_calls_do_not_retrace(trace_counter):
    data, theta = make_data(0, dtype=jnp.float32)
    inner, outer, w0 = logistic_losses(data)
    inner, outer = trace_counter(inner), trace_counter(outer)
    methods = [
        RMD(steps=20, lr=0.5),
        RMD(steps=20, lr=0.5, checkpoint=True),
        IFT(steps=20, lr=0.5, cg_iters=10),
        Method(GradientDescent(20, 0.5), Dense()),
        engine.Implicit(NewtonCG(tol=1e-4)),
        engine.ImplicitDense(tol=1e-4),
    ]
    for method in methods:
        hypergrad(method, inner, outer, w0, theta)  # compiles
    counts = (inner.count, outer.count)
    for k in range(1, 4):
        new_theta = {"xp": theta["xp"] + 0.01 * k, "log_lam": theta["log_lam"] - 0.1 * k}
        for method in methods:  # new values, equal (not identical) method values: same program
            jax.block_until_ready(hypergrad(dataclasses.replace(method) if type(method) is Method else method,
                                            inner, outer, w0, new_theta))  # fmt: skip
    assert (inner.count, outer.count) == counts


def test_hvp_matches_dense_hessian(x64):
    inner, _, w0, theta = problem("two_block")
    w = solve(inner, w0, theta)
    v = jax.tree_util.tree_map(lambda a: jnp.linspace(-1.0, 1.0, a.size).reshape(a.shape), w)
    flat_w, unravel = ravel_pytree(w)
    H = jax.hessian(lambda fw: inner(unravel(fw), theta))(flat_w)
    got = ravel_pytree(engine.hvp(lambda w_: inner(w_, theta), w, v))[0]
    np.testing.assert_allclose(got, H @ ravel_pytree(v)[0], rtol=1e-10, atol=1e-12)


def test_checkpoint_reduces_stored_residuals():
    """Segment remat keeps ~steps/k + k carries instead of steps: count what the VJP stores."""
    data, theta = make_data(0, dtype=jnp.float32)
    inner, outer, w0 = logistic_losses(data)

    def saved_bytes(checkpoint):
        gd = GradientDescent(steps=400, lr=0.5)
        f = lambda th: outer(gd.solve(lambda w: inner(w, th), w0, checkpoint=checkpoint).w, th)
        _, pullback = jax.vjp(f, theta)
        return sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(pullback))

    assert saved_bytes(20) < 0.25 * saved_bytes(None)


# -- bad input -------------------------------------------------------------------------------


@pytest.fixture
def lr_problem():
    data, theta = make_data(0, dtype=jnp.float32)
    inner, outer, w0 = logistic_losses(data)
    return inner, outer, w0, theta


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_bad_steps(steps):
    with pytest.raises(ValueError, match=rf"steps must be a positive integer, got {steps!r}"):
        RMD(steps=steps, lr=0.1)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        GradientDescent(steps=steps, lr=0.1)


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_lr(lr):
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got"):
        IFT(steps=5, lr=lr)


@pytest.mark.parametrize("iters", [0, -1])
def test_bad_cg_iters(iters):
    with pytest.raises(ValueError, match=rf"^iters must be a positive integer, got {iters}"):
        ImplicitCG(iters=iters)
    with pytest.raises(ValueError, match=rf"^cg_iters must be a positive integer, got {iters}"):
        IFT(steps=5, lr=0.1, cg_iters=iters)  # the name the user wrote


def test_bad_checkpoint():
    with pytest.raises(ValueError, match=r"checkpoint must be a positive integer, got 0"):
        RMD(steps=5, lr=0.1, checkpoint=0)
    with pytest.raises(TypeError, match=r"Unrolled\(checkpoint=3\) needs a solver with a fixed number of steps"):
        Method(NewtonCG(), Unrolled(checkpoint=3))


def test_negative_cg_tol_and_damping():
    with pytest.raises(ValueError, match=r"tol must be a finite number >= 0, got -1"):
        ImplicitCG(tol=-1)
    with pytest.raises(ValueError, match=r"damping must be a finite number >= 0, got nan"):
        Dense(damping=float("nan"))


def test_a_method_needs_a_solver_and_a_way_to_differentiate():
    with pytest.raises(TypeError, match=r"solver must have a solve\(f, w0\) method .* got 'newton'"):
        Method("newton", ImplicitCG())
    with pytest.raises(TypeError, match=r"adjoint must be a way to differentiate .* got 'cg'"):
        Method(NewtonCG(), "cg")


def test_w0_structure_that_the_loss_cannot_use(lr_problem):
    inner, outer, w0, theta = lr_problem
    with pytest.raises(ValueError, match=r"inner_loss\(w, theta\) failed for w with structure"):
        hypergrad(RMD(steps=5, lr=0.1), inner, outer, w0["w"], theta)


def test_gradient_structure_differs_from_w0(lr_problem):
    """A custom rule whose gradient pytree differs from w0's is refused with both structures named."""
    inner, outer, w0, theta = lr_problem

    @jax.custom_vjp
    def squash(w):
        return w["w"]

    squash.defvjp(lambda w: (w["w"], None), lambda _, g: ({"w": g},))
    bad_inner = lambda w, th: inner({"w": squash(w), "b": w["b"]}, th)
    with pytest.raises(
        ValueError, match=r"grad_w inner_loss\(w0, theta\) failed; its gradient must have the pytree structure"
    ):
        hypergrad(RMD(steps=5, lr=0.1), bad_inner, outer, w0, theta)


def test_hvp_direction_must_match_point(lr_problem):
    inner, _, w0, theta = lr_problem
    with pytest.raises(ValueError, match=r"v has pytree structure .* but w has"):
        engine.hvp(lambda w: inner(w, theta), w0, w0["w"])


def test_non_scalar_loss(lr_problem):
    inner, outer, w0, theta = lr_problem
    vector_outer = lambda w, th: jnp.stack([outer(w, th), outer(w, th)])
    for method in (RMD(steps=5, lr=0.1), IFT(steps=5, lr=0.1, cg_iters=3)):
        with pytest.raises(ValueError, match=r"outer_loss must return a scalar \(shape \(\)\), got \(2,\)"):
            hypergrad(method, inner, vector_outer, w0, theta)


def test_integer_weights_are_refused(lr_problem):
    inner, outer, w0, theta = lr_problem
    int_w0 = {"w": jnp.zeros(D, jnp.int32), "b": jnp.zeros((), jnp.float32)}
    with pytest.raises(TypeError, match=r"w0\['w'\] must have a floating dtype, got int32"):
        hypergrad(RMD(steps=5, lr=0.1), inner, outer, int_w0, theta)


def test_unknown_method(lr_problem):
    inner, outer, w0, theta = lr_problem
    with pytest.raises(TypeError, match=r"method must be an engine.Method .* got 'rmd'"):
        engine.hypergrad("rmd", inner, outer, w0, theta)
