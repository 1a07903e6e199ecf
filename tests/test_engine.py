"""Floor 0: hypergradients against finite differences, the dense reference and each other."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from poison_jax import engine
from poison_jax.engine import IFT, RMD

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


def converged_w(inner, w0, theta):
    return engine.unroll(inner, w0, theta, **CONVERGED)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_all_hypergradients_match_finite_differences(x64, name):
    inner, outer, w0, theta = problem(name)
    objective = lambda th: outer(converged_w(inner, w0, th), th)
    fd = central_differences(objective, theta)
    w_star = converged_w(inner, w0, theta)

    _, g_rmd, _ = engine.rmd_hypergrad(inner, outer, w0, theta, **CONVERGED)
    _, g_ift, info = engine.ift_hypergrad(inner, outer, w_star, theta, cg_iters=50, cg_tol=1e-12)
    _, g_exact, _ = engine.exact_hypergrad(inner, outer, w_star, theta)

    assert bool(info.cg.converged) and float(info.inner_grad_norm) < 1e-10
    for g in (g_rmd, g_ift, g_exact):
        assert jax.tree_util.tree_structure(g) == jax.tree_util.tree_structure(theta)
        assert rel_err(g, fd) < 1e-4


@pytest.mark.parametrize("name", ["ridge", "logistic"])
def test_rmd_error_falls_with_steps(x64, name):
    inner, outer, w0, theta = problem(name)
    _, exact, _ = engine.exact_hypergrad(inner, outer, converged_w(inner, w0, theta), theta)
    errors = [
        rel_err(engine.rmd_hypergrad(inner, outer, w0, theta, steps=t, lr=0.5)[1], exact) for t in (5, 20, 80, 320)
    ]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 1e-3 * errors[0]


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_ift_matches_exact_and_reports_unconverged_cg(x64, name):
    inner, outer, w0, theta = problem(name)
    w_star = converged_w(inner, w0, theta)
    _, exact, _ = engine.exact_hypergrad(inner, outer, w_star, theta)

    _, tight, info = engine.ift_hypergrad(inner, outer, w_star, theta, cg_iters=100, cg_tol=1e-10)
    assert cosine(tight, exact) > 0.99999
    assert bool(info.cg.converged) and float(info.cg.residual) <= 1e-10

    _, loose, info = engine.ift_hypergrad(inner, outer, w_star, theta, cg_iters=1, cg_tol=1e-10)
    assert int(info.cg.iterations) == 1
    assert not bool(info.cg.converged) and float(info.cg.residual) > 1e-3


def test_ift_damping_solves_the_damped_system(x64):
    inner, outer, w0, theta = problem("ridge")
    w_star = converged_w(inner, w0, theta)
    damped_inner = lambda w, th: inner(w, th) + 0.5 * 0.3 * jnp.sum(w**2)
    _, with_damping, _ = engine.ift_hypergrad(inner, outer, w_star, theta, cg_iters=50, cg_tol=1e-12, damping=0.3)
    # Damping adds 0.3·I to the Hessian only, not to the mixed derivative.
    _, g_w = jax.value_and_grad(outer)(w_star, theta)
    H = jax.hessian(damped_inner)(w_star, theta)
    v = jnp.linalg.solve(H, g_w)
    _, vjp = jax.vjp(lambda th: jax.grad(inner)(w_star, th), theta)
    expected = jax.tree_util.tree_map(jnp.negative, vjp(v)[0])
    assert rel_err(with_damping, expected) < 1e-10


@pytest.mark.parametrize("checkpoint", [1, 3, 7, True, 50])
@pytest.mark.parametrize("name", ["logistic", "two_block"])
def test_checkpointed_rmd_equals_plain(x64, name, checkpoint):
    inner, outer, w0, theta = problem(name)
    v_plain, g_plain, _ = engine.rmd_hypergrad(inner, outer, w0, theta, steps=40, lr=0.5)
    v_ckpt, g_ckpt, _ = engine.rmd_hypergrad(inner, outer, w0, theta, steps=40, lr=0.5, checkpoint=checkpoint)
    assert abs(float(v_plain - v_ckpt)) < 1e-10
    diff = ravel_pytree(g_plain)[0] - ravel_pytree(g_ckpt)[0]
    assert float(jnp.max(jnp.abs(diff))) < 1e-10


def test_strategies_dispatch_to_the_functions(x64):
    inner, outer, w0, theta = problem("logistic")
    v1, g1, _ = engine.hypergrad(RMD(steps=30, lr=0.5, checkpoint=5), inner, outer, w0, theta)
    v2, g2, _ = engine.rmd_hypergrad(inner, outer, w0, theta, steps=30, lr=0.5)
    assert rel_err(g1, g2) < 1e-12 and abs(float(v1 - v2)) < 1e-12

    method = IFT(steps=30, lr=0.5, cg_iters=40, cg_tol=1e-12)
    v3, g3, info = engine.hypergrad(method, inner, outer, w0, theta)
    w_t = engine.unroll(inner, w0, theta, steps=30, lr=0.5)
    v4, g4, _ = engine.ift_hypergrad(inner, outer, w_t, theta, cg_iters=40, cg_tol=1e-12)
    assert rel_err(g3, g4) < 1e-10 and abs(float(v3 - v4)) < 1e-12
    # 30 steps are far from converged: the diagnostics say so.
    assert float(info.inner_grad_norm) > 1e-4


# -- jit, vmap and pytrees -------------------------------------------------------------------


def _batched_data(batch):
    datas = [make_data(seed)[0] for seed in range(batch)]
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *datas)


def _all_functions(data, theta):
    """Every public function of the engine on the logistic problem of ``data``."""
    inner, outer, w0 = logistic_losses(data)
    w_t = engine.unroll(inner, w0, theta, steps=30, lr=0.5)
    return {
        "unroll": w_t,
        "rmd": engine.rmd_hypergrad(inner, outer, w0, theta, steps=30, lr=0.5)[:2],
        "rmd_ckpt": engine.rmd_hypergrad(inner, outer, w0, theta, steps=30, lr=0.5, checkpoint=4)[:2],
        "ift": engine.ift_hypergrad(inner, outer, w_t, theta, cg_iters=20, cg_tol=1e-8)[:2],
        "exact": engine.exact_hypergrad(inner, outer, w_t, theta)[:2],
        "hvp": engine.hvp(lambda w: inner(w, theta), w_t, jax.tree_util.tree_map(jnp.ones_like, w_t)),
        "strategy": engine.hypergrad(IFT(steps=30, lr=0.5, cg_iters=20, cg_tol=1e-8), inner, outer, w0, theta)[:2],
    }


@pytest.mark.slow
def test_every_function_under_jit_and_vmap(x64):
    """jit per seed, vmap and jit-of-vmap over a leading data axis give the same results.

    (Eager calls are what every other test makes.)"""
    batch = 3
    data = _batched_data(batch)
    theta = make_data(0)[1]
    take = lambda i: jax.tree_util.tree_map(lambda a: a[i], data)
    stack = lambda trees: jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)

    jitted = jax.jit(_all_functions)
    per_seed = stack([jitted(take(i), theta) for i in range(batch)])
    results = {
        "vmap": jax.vmap(_all_functions, in_axes=(0, None))(data, theta),
        "jit_of_vmap": jax.jit(jax.vmap(_all_functions, in_axes=(0, None)))(data, theta),
    }
    for name, got in results.items():
        assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(per_seed), name
        for g, e in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(per_seed), strict=False):
            np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-12, err_msg=name)


def test_vmap_over_theta_batch(x64):
    """A batch of hyperparameters (e.g. several poison sets) through one vmapped call."""
    inner, outer, w0, theta = problem("two_block")
    thetas = jax.tree_util.tree_map(lambda a: jnp.stack([a, a + 0.1]), theta)
    batched = jax.vmap(lambda th: engine.rmd_hypergrad(inner, outer, w0, th, steps=20, lr=0.5)[:2])(thetas)
    for i in range(2):
        single = engine.rmd_hypergrad(
            inner, outer, w0, jax.tree_util.tree_map(lambda a: a[i], thetas), steps=20, lr=0.5
        )[:2]
        for b, s in zip(jax.tree_util.tree_leaves(batched), jax.tree_util.tree_leaves(single), strict=False):
            np.testing.assert_allclose(b[i], s, rtol=1e-10, atol=1e-13)


def test_repeated_calls_do_not_retrace(trace_counter):
    data, theta = make_data(0, dtype=jnp.float32)
    inner, outer, w0 = logistic_losses(data)
    inner, outer = trace_counter(inner), trace_counter(outer)
    w_t = engine.unroll(inner, w0, theta, steps=20, lr=0.5)
    calls = [
        lambda th, lr: engine.unroll(inner, w0, th, steps=20, lr=lr),
        lambda th, lr: engine.rmd_hypergrad(inner, outer, w0, th, steps=20, lr=lr),
        lambda th, lr: engine.rmd_hypergrad(inner, outer, w0, th, steps=20, lr=lr, checkpoint=True),
        lambda th, lr: engine.ift_hypergrad(inner, outer, w_t, th, cg_iters=10, cg_tol=1e-6),
        lambda th, lr: engine.exact_hypergrad(inner, outer, w_t, th),
        lambda th, lr: engine.hypergrad(RMD(steps=20, lr=lr), inner, outer, w0, th),
        lambda th, lr: engine.hypergrad(IFT(steps=20, lr=lr, cg_iters=10), inner, outer, w0, th),
    ]
    for call in calls:
        call(theta, 0.5)  # compiles
    counts = (inner.count, outer.count)
    for k in range(1, 4):
        new_theta = {"xp": theta["xp"] + 0.01 * k, "log_lam": theta["log_lam"] - 0.1 * k}
        for call in calls:
            jax.block_until_ready(call(new_theta, 0.5 / k))  # new values, new lr: same shapes
    assert (inner.count, outer.count) == counts


def test_hvp_matches_dense_hessian(x64):
    inner, _, w0, theta = problem("two_block")
    w = converged_w(inner, w0, theta)
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
        f = lambda th: outer(engine.unroll(inner, w0, th, steps=400, lr=0.5, checkpoint=checkpoint), th)
        _, pullback = jax.vjp(f, theta)
        return sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(pullback))

    assert saved_bytes(True) < 0.25 * saved_bytes(None)


# -- bad input -------------------------------------------------------------------------------


@pytest.fixture
def lr_problem():
    data, theta = make_data(0, dtype=jnp.float32)
    inner, outer, w0 = logistic_losses(data)
    return inner, outer, w0, theta


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_bad_steps(lr_problem, steps):
    inner, outer, w0, theta = lr_problem
    with pytest.raises(ValueError, match=rf"steps must be a positive integer, got {steps!r}"):
        engine.rmd_hypergrad(inner, outer, w0, theta, steps=steps, lr=0.1)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        RMD(steps=steps, lr=0.1)


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_lr(lr_problem, lr):
    inner, outer, w0, theta = lr_problem
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got"):
        engine.unroll(inner, w0, theta, steps=5, lr=lr)
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0"):
        IFT(steps=5, lr=lr)


@pytest.mark.parametrize("cg_iters", [0, -1])
def test_bad_cg_iters(lr_problem, cg_iters):
    inner, outer, w0, theta = lr_problem
    with pytest.raises(ValueError, match=rf"cg_iters must be a positive integer, got {cg_iters}"):
        engine.ift_hypergrad(inner, outer, w0, theta, cg_iters=cg_iters)
    with pytest.raises(ValueError, match="cg_iters must be a positive integer"):
        IFT(steps=5, lr=0.1, cg_iters=cg_iters)


def test_bad_checkpoint(lr_problem):
    inner, outer, w0, theta = lr_problem
    with pytest.raises(ValueError, match=r"checkpoint must be a positive integer, got 0"):
        engine.rmd_hypergrad(inner, outer, w0, theta, steps=5, lr=0.1, checkpoint=0)


def test_negative_cg_tol_and_damping(lr_problem):
    inner, outer, w0, theta = lr_problem
    with pytest.raises(ValueError, match=r"cg_tol must be a finite number >= 0, got -1"):
        engine.ift_hypergrad(inner, outer, w0, theta, cg_iters=3, cg_tol=-1)
    with pytest.raises(ValueError, match=r"damping must be a finite number >= 0, got nan"):
        engine.ift_hypergrad(inner, outer, w0, theta, cg_iters=3, damping=float("nan"))


def test_w0_structure_that_the_loss_cannot_use(lr_problem):
    inner, outer, w0, theta = lr_problem
    with pytest.raises(ValueError, match=r"inner_loss\(w, theta\) failed for w with structure"):
        engine.rmd_hypergrad(inner, outer, w0["w"], theta, steps=5, lr=0.1)


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
        engine.rmd_hypergrad(bad_inner, outer, w0, theta, steps=5, lr=0.1)


def test_hvp_direction_must_match_point(lr_problem):
    inner, _, w0, theta = lr_problem
    with pytest.raises(ValueError, match=r"v has pytree structure .* but w has"):
        engine.hvp(lambda w: inner(w, theta), w0, w0["w"])


def test_non_scalar_loss(lr_problem):
    inner, outer, w0, theta = lr_problem
    vector_outer = lambda w, th: jnp.stack([outer(w, th), outer(w, th)])
    with pytest.raises(ValueError, match=r"outer_loss must return a scalar \(shape \(\)\), got \(2,\)"):
        engine.rmd_hypergrad(inner, vector_outer, w0, theta, steps=5, lr=0.1)
    with pytest.raises(ValueError, match=r"outer_loss must return a scalar"):
        engine.ift_hypergrad(inner, vector_outer, w0, theta, cg_iters=3)


def test_integer_weights_are_refused(lr_problem):
    inner, outer, w0, theta = lr_problem
    int_w0 = {"w": jnp.zeros(D, jnp.int32), "b": jnp.zeros((), jnp.float32)}
    with pytest.raises(TypeError, match=r"w0\['w'\] must have a floating dtype, got int32"):
        engine.rmd_hypergrad(inner, outer, int_w0, theta, steps=5, lr=0.1)


def test_unknown_method(lr_problem):
    inner, outer, w0, theta = lr_problem
    with pytest.raises(TypeError, match=r"method must be RMD\(...\), IFT\(...\) or Implicit\(...\), got 'rmd'"):
        engine.hypergrad("rmd", inner, outer, w0, theta)
