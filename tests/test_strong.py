"""The strong attack: converged inner solvers, warm-started implicit hypergradients, outer step rules,
add mode and the converged victim."""

import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax.tree_utils as otu
import pytest
from jax.flatten_util import ravel_pytree

from poison_jax import engine
from poison_jax.engine import LBFGS, Implicit, NewtonCG, Warm
from poison_jax.experiments import presets, sweep
from poison_jax.experiments.checked import ConfigError
from poison_jax.poisoning import attack, data, losses, models, outer, victims
from tests.test_engine import central_differences, logistic_losses, make_data, problem

SOLVERS = [NewtonCG(tol=1e-10, maxiter=100), LBFGS(tol=1e-10, maxiter=2000)]
SOLVER_IDS = ["newton-cg", "lbfgs"]


def zeros_like(tree):
    return jax.tree_util.tree_map(jnp.zeros_like, tree)


# -- floor 0: solvers ----------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS, ids=SOLVER_IDS)
@pytest.mark.parametrize("name", ["logistic", "two_block"])
def test_solver_reaches_its_tolerance_on_pytrees(x64, solver, name):
    inner, _, w0, theta = problem(name)
    info = jax.jit(lambda w0: solver.solve(lambda w: inner(w, theta), w0))(w0)
    w = info.w
    grad_norm = float(jnp.linalg.norm(ravel_pytree(jax.grad(inner)(w, theta))[0]))
    assert (
        bool(info.status == 0)
        and grad_norm <= 1e-10
        and float(info.stats["inner_grad_norm"]) == pytest.approx(grad_norm, rel=1e-6)
    )
    assert 0 < int(info.stats["inner_steps"]) < solver.maxiter


def test_newton_converges_where_the_objectives_decrease_is_below_its_noise(x64):
    """Near the minimum a Newton step lowers f by less than f's rounding error, and Armijo's test on
    the values fails; the line search's approximate Wolfe test (on the exact directional derivative)
    still takes the step. Here the noise is explicit: 1e-9 on f's value, none on its gradient."""
    a = jax.random.normal(jax.random.PRNGKey(0), (20, 20))
    b = jax.random.normal(jax.random.PRNGKey(1), (20,))
    quadratic = lambda w: 0.5 * w @ (a @ a.T / 20 + 0.1 * jnp.eye(20)) @ w - b @ w + jnp.sum(jnp.logaddexp(0.0, w))
    noisy = lambda w: quadratic(w) + jax.lax.stop_gradient(1e-9 * jnp.sin(1e7 * jnp.sum(w)))
    info = jax.jit(lambda w0: NewtonCG(tol=1e-10, maxiter=50).solve(noisy, w0))(jnp.zeros(20))
    w = info.w
    assert bool(info.status == 0) and int(info.stats["inner_steps"]) < 20
    assert float(jnp.linalg.norm(jax.grad(quadratic)(w))) <= 1e-10


@pytest.mark.parametrize("solver", [NewtonCG(tol=1e-10, maxiter=2), LBFGS(tol=1e-10, maxiter=2)], ids=SOLVER_IDS)
def test_too_small_iteration_cap_is_reported_unconverged(x64, solver):
    inner, _, w0, theta = problem("logistic", 1)
    info = solver.solve(lambda w: inner(w, theta), w0)
    assert (
        not bool(info.status == 0)
        and int(info.stats["inner_steps"]) == 2
        and float(info.stats["inner_grad_norm"]) > 1e-10
    )


@pytest.mark.slow
@pytest.mark.parametrize("solver", SOLVERS, ids=SOLVER_IDS)
def test_solver_under_vmap_solves_each_lane(x64, solver):
    problems = [make_data(s) for s in range(3)]
    thetas = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[t for _, t in problems])
    inner, _, w0 = logistic_losses(problems[0][0])  # same data, three thetas
    infos = jax.vmap(lambda th: solver.solve(lambda w: inner(w, th), w0))(thetas)
    ws = infos.w
    assert np.all(np.asarray(infos.status == 0))
    solve_one = jax.jit(lambda th: solver.solve(lambda w: inner(w, th), w0))  # one compile for the three lanes
    for i in range(3):
        theta_i = jax.tree_util.tree_map(lambda a: a[i], thetas)
        w_i = solve_one(theta_i).w
        np.testing.assert_allclose(
            ravel_pytree(jax.tree_util.tree_map(lambda a: a[i], ws))[0], ravel_pytree(w_i)[0], atol=1e-8
        )


def _tanh_net(x, y):
    """A smooth non-convex loss on a two-layer tanh network (a pytree of four leaves) and its init."""

    def loss(p):
        s = jnp.tanh(x @ p["hidden"]["kernel"] + p["hidden"]["bias"]) @ p["out"]["kernel"] + p["out"]["bias"]
        return jnp.mean(jnp.logaddexp(0.0, s) - y * s) + 1e-3 * otu.tree_sum(jax.tree_util.tree_map(jnp.square, p))

    def init(key):
        k1, k2 = jax.random.split(key)
        return {
            "hidden": {"kernel": jax.random.normal(k1, (x.shape[1], 6)) / 3, "bias": jnp.zeros(6)},
            "out": {"kernel": jax.random.normal(k2, (6,)) / 3, "bias": jnp.zeros(())},
        }

    return loss, init


@pytest.mark.parametrize("solver", [NewtonCG(tol=1e-5, maxiter=200), LBFGS(tol=1e-5, maxiter=2000)], ids=SOLVER_IDS)
def test_solver_finds_local_minima_of_a_non_convex_network(solver):
    """From eight starts at once (vmap), in float32: each lane reaches the tolerance at a point whose
    Hessian is positive definite, a local minimum and not a saddle."""
    x = jax.random.normal(jax.random.PRNGKey(0), (40, 8))
    y = (x[:, 0] * x[:, 1] > 0).astype(jnp.float32)  # XOR-like: no linear model fits it
    loss, init = _tanh_net(x, y)
    starts = jax.vmap(init)(jax.random.split(jax.random.PRNGKey(1), 8))
    info = jax.jit(jax.vmap(lambda w0: solver.solve(loss, w0)))(starts)
    w = info.w
    assert np.all(np.asarray(info.status == 0)) and np.all(np.asarray(info.stats["inner_grad_norm"]) <= 1e-5)
    _, unravel = ravel_pytree(jax.tree_util.tree_map(lambda a: a[0], w))

    def min_eigenvalue(p):  # of the Hessian at one lane's point
        return jnp.linalg.eigvalsh(jax.hessian(lambda v: loss(unravel(v)))(ravel_pytree(p)[0]))[0]

    # Every lane at once, compiled once (eager per-lane Hessians compiled each lane's closure anew).
    min_eig, lane_losses = jax.jit(jax.vmap(min_eigenvalue)), jax.jit(jax.vmap(loss))
    eigs, after, before = np.asarray(min_eig(w)), np.asarray(lane_losses(w)), np.asarray(lane_losses(starts))
    assert eigs.shape == after.shape == before.shape == (8,)
    for lane in range(8):
        assert eigs[lane] > 0
        assert after[lane] < before[lane]


def test_newton_on_the_leaky_relu_mlp_reports_what_it_reached():
    """The paper's MLP: its minima often lie on LeakyReLU's kink, where no gradient tolerance can be
    met. The solve must still lower the loss and report the gradient norm it stopped at, and say
    converged exactly when that norm is within the tolerance."""
    model = models.mlp(8, hidden=(6, 4))
    x = jax.random.normal(jax.random.PRNGKey(0), (40, 8))
    y = (x[:, 0] > 0).astype(jnp.float32)
    f = lambda p: (jnp.sum(losses.bce(model.apply(p, x), y)) + models.penalty(model, p, jnp.zeros(3))) / 40
    solver = NewtonCG(tol=1e-4, maxiter=60)
    solve = jax.jit(lambda w0: solver.solve(f, w0))
    value, grad = jax.jit(f), jax.jit(jax.grad(f))  # compiled once for the three seeds
    for seed in range(3):
        w0 = model.init(jax.random.PRNGKey(seed))
        info = solve(w0)
        w = info.w
        grad_norm = float(jnp.linalg.norm(ravel_pytree(grad(w))[0]))
        assert float(value(w)) < 0.5 * float(value(w0))
        assert float(info.stats["inner_grad_norm"]) == pytest.approx(grad_norm, rel=1e-3)  # float32, jit against eager
        assert bool(info.status == 0) == (grad_norm <= solver.tol)
        assert bool(info.status == 0) or int(info.stats["inner_steps"]) == solver.maxiter


def test_cg_warm_start_from_the_solution_needs_no_iteration(x64):
    a = jnp.array([[4.0, 1.0], [1.0, 3.0]])
    b = jnp.array([1.0, 2.0])
    x_star = jnp.linalg.solve(a, b)
    _, cold = engine.conjugate_gradient(lambda v: a @ v, b, maxiter=10, tol=1e-12)
    x, warm = engine.conjugate_gradient(lambda v: a @ v, b, maxiter=10, tol=1e-12, x0=x_star)
    assert int(cold.iterations) == 2 and int(warm.iterations) == 0
    np.testing.assert_allclose(x, x_star, rtol=1e-12)


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda: NewtonCG(tol=0.0), r"tol must be a finite number > 0, got 0.0"),
        (lambda: NewtonCG(maxiter=0), r"maxiter must be a positive integer, got 0"),
        (lambda: LBFGS(memory=-1), r"memory must be a positive integer, got -1"),
        (
            lambda: Implicit(solver="newton"),
            r"solver must have a solve\(f, w0\) method \(e.g. engine.NewtonCG\(\)\), got 'newton'",
        ),
        # ImplicitCG(tol=cg_tol) checks it under its own name
        (lambda: Implicit(cg_tol=-1.0), r"cg_tol must be a finite number >= 0, got -1.0"),
    ],
)
def test_bad_solver_settings(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        bad()


# -- floor 0: the implicit hypergradient ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("solver", SOLVERS, ids=SOLVER_IDS)
@pytest.mark.parametrize("name", ["logistic", "two_block"])
def test_implicit_hypergradient_against_exact_and_finite_differences(x64, solver, name):
    inner, outer_loss, w0, theta = problem(name, 2)
    method = Implicit(solver, cg_iters=100, cg_tol=1e-12)
    result = engine.hypergrad(method, inner, outer_loss, w0, theta)
    dtheta = result.grad
    assert int(result.status) == engine.RESULTS.successful
    exact = engine.hypergrad(engine.Method(method.solver, engine.Dense()), inner, outer_loss, w0, theta).grad
    np.testing.assert_allclose(ravel_pytree(dtheta)[0], ravel_pytree(exact)[0], rtol=1e-7, atol=1e-10)
    objective = jax.jit(lambda th: outer_loss(method.fit(inner, w0, th), th))  # one compile for every difference
    fd = central_differences(objective, theta)
    np.testing.assert_allclose(ravel_pytree(dtheta)[0], ravel_pytree(fd)[0], rtol=1e-4, atol=1e-8)
    assert float(result.value) == pytest.approx(float(objective(theta)), rel=1e-10)


def test_warm_and_cold_started_hypergradients_agree(x64):
    data_, theta = make_data(3)
    inner, outer_loss, w0 = logistic_losses(data_)
    method = Implicit(NewtonCG(tol=1e-11, maxiter=100), cg_iters=100, cg_tol=1e-11)
    moved = {"xp": theta["xp"] + 0.05, "log_lam": theta["log_lam"]}
    warm = engine.hypergrad(method, inner, outer_loss, w0, theta, warm=Warm(w0, zeros_like(w0))).warm
    warm_grad, warm_stats = engine.hypergrad(method, inner, outer_loss, w0, moved, warm=warm)[1:4:2]
    cold_grad, cold_stats = engine.hypergrad(method, inner, outer_loss, w0, moved)[1:4:2]
    np.testing.assert_allclose(ravel_pytree(warm_grad)[0], ravel_pytree(cold_grad)[0], rtol=1e-8, atol=1e-12)
    # The warm start pays: fewer solver and CG iterations than from zero.
    assert int(warm_stats["inner_steps"]) < int(cold_stats["inner_steps"])
    assert int(warm_stats["adjoint_steps"]) <= int(cold_stats["adjoint_steps"])  # CG needs <= 5 here either way


def test_implicit_compiles_once_over_repeated_calls(trace_counter):
    data_, theta = make_data(4, jnp.float32)
    inner, outer_loss, w0 = logistic_losses(data_)
    counting_inner = trace_counter(inner)
    method = Implicit(NewtonCG(tol=1e-5))
    warm = Warm(w0, zeros_like(w0))
    warm = engine.hypergrad(method, counting_inner, outer_loss, w0, theta, warm=warm).warm
    traced = counting_inner.count
    for shift in (0.1, 0.2, 0.3):
        moved = {"xp": theta["xp"] + shift, "log_lam": theta["log_lam"]}
        warm = engine.hypergrad(method, counting_inner, outer_loss, w0, moved, warm=warm).warm
    assert counting_inner.count == traced


# -- floor 1: the attack -------------------------------------------------------------------------

N_TRAIN, N_VAL, BATCH = 100, 50, 6
STRONG = Implicit(NewtonCG(tol=1e-5, maxiter=100), cg_iters=100, cg_tol=1e-5, damping=1e-4)
# One model for every test's settings: models compare by identity, so equal settings are one static
# argument of the compiled attack and tests with the same settings, steps and modes share its program.
LR = models.logistic_regression(64)


@pytest.fixture(scope="module")
def splits():
    return data.sample_splits(data.load_dataset("digits"), seeds=[0, 1, 2], n_train=N_TRAIN, n_val=N_VAL)


def strong_settings(**changes):
    base = attack.AttackSettings(
        LR,
        STRONG,
        alpha=0.5,
        beta=0.5,
        x_box=(0.0, 1.0),
        lam_box=(-8.0, 6.0),
        xp_step=outer.Armijo(),
        mode=attack.Add(),
    )
    return dataclasses.replace(base, **changes)


def started(settings, splits, n_active=BATCH, log_lam=math.log(0.01)):
    keys = jax.random.split(jax.random.PRNGKey(0), splits.x_train.shape[0])
    state = attack.init_attack(settings, keys, splits, 2 * BATCH, log_lam)
    return attack.set_poison_count(state, n_active, BATCH)


# Step sizes for this problem (λ = log 0.01, digits): raw-gradient rules overshoot above ~0.1.
@pytest.mark.slow
@pytest.mark.parametrize(
    "rule, alpha",
    [
        (outer.Normalised(), 0.5),
        (outer.Adam(), 0.05),
        (outer.Optimistic(), 0.03),
        (outer.Armijo(), 0.5),
        (outer.SGD(), 0.1),
    ],
    ids=["normalised", "adam", "optimistic", "armijo", "sgd"],
)
def test_each_outer_rule_raises_the_attackers_objective(splits, rule, alpha):
    settings = strong_settings(xp_step=rule, alpha=alpha)
    state = started(settings, splits)
    before = attack.attack_objective(settings, splits, state)
    state, info = attack.run_attack(settings, splits, state, num_iters=20, update_lam=False)
    after = attack.attack_objective(settings, splits, state)
    assert np.all(np.asarray(after) > 1.2 * np.asarray(before)), (before, after)
    assert np.all(np.asarray(info.finite)) and np.all(np.asarray(state.xp) >= 0) and np.all(np.asarray(state.xp) <= 1)


_LAMBDA_RULES_SCRIPT = """
import json, sys
import numpy as np
from poison_jax.poisoning import attack, data, outer
from tests.test_strong import started, strong_settings
splits = data.sample_splits(data.load_dataset("digits"), seeds=[0, 1, 2], n_train=100, n_val=50)
out = {}
for name in ("sgd", "armijo", "adam", "optimistic"):
    settings = strong_settings(lam_step=outer.OUTER_STEPS[name](), beta=0.3)
    state = started(settings, splits, n_active=0, log_lam=5.0)  # far too strong: λ should fall
    before = attack.attack_objective(settings, splits, state)
    state, _ = attack.run_attack(settings, splits, state, num_iters=20, update_xp=False)
    after = attack.attack_objective(settings, splits, state)
    out[name] = [np.asarray(before).tolist(), np.asarray(after).tolist(), np.asarray(state.log_lam).ravel().tolist()]
json.dump(out, sys.stdout)
"""


@pytest.mark.slow
def test_each_outer_rule_lowers_the_validation_loss_by_learning_lambda():
    # In a process of its own: late in a long test session XLA's CPU compiler once crashed
    # (SIGSEGV) compiling these λ-only steps, which compile and run fine on their own.
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", _LAMBDA_RULES_SCRIPT],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)
    assert set(results) == {"sgd", "armijo", "adam", "optimistic"}
    for name, (before, after, log_lam) in results.items():
        assert np.all(np.asarray(after) < 0.9 * np.asarray(before)), name
        assert np.all(np.asarray(log_lam) < 5.0), name


@pytest.mark.slow
def test_optimistic_gda_moves_both_players(splits):
    settings = strong_settings(xp_step=outer.Optimistic(), lam_step=outer.Optimistic(), alpha=0.03, beta=0.3)
    state = started(settings, splits, log_lam=-2.0)
    new, info = attack.run_attack(settings, splits, state, num_iters=10)
    assert np.all(np.asarray(new.log_lam) != -2.0) and not np.allclose(new.xp, state.xp)
    assert np.all(np.asarray(info.val_loss[:, -1]) > np.asarray(info.val_loss[:, 0]))


@pytest.mark.slow
def test_attack_state_carries_the_warm_start(splits):
    settings = strong_settings()
    state = started(settings, splits)
    assert state.warm is not None and np.all(np.asarray(state.warm.w["layer_0"]["kernel"]) == 0)
    # One hyperiteration a call: one compiled program serves both.
    before, _ = attack.run_attack(settings, splits, state, num_iters=1, update_lam=False)
    after, info = attack.run_attack(settings, splits, before, num_iters=1, update_lam=False)
    assert np.all(np.asarray(info.inner_converged))
    # The carried w is the line search's solution at the poison points the step took (so the next
    # hypergradient needs no solve), not the solution where the step started.
    sp = [a[0] for a in splits[:4]]
    carried = jax.tree_util.tree_map(lambda a: a[0], after.warm.w)

    @jax.jit  # one compile for both states (eagerly, every operation of the gradient compiled alone)
    def grad_norm(one):
        inner, _ = attack.make_losses(settings.model, *sp, one, settings.mode)
        return jnp.linalg.norm(ravel_pytree(jax.grad(inner)(carried, {"xp": one.xp, "log_lam": one.log_lam}))[0])

    first = lambda state: jax.tree_util.tree_map(lambda a: a[0], state)
    assert not np.allclose(after.xp[0], before.xp[0])  # the step was taken
    assert float(grad_norm(first(after))) <= 1e-5 < float(grad_norm(first(before)))
    # RMD keeps no warm start: the paper restarts from w(0).
    rmd = strong_settings(method=engine.RMD(steps=20, lr=0.5), xp_step=outer.Normalised())
    assert started(rmd, splits).warm is None


def _sphere(x):
    return -jnp.sum((x - 0.7) ** 2)


def test_armijo_returns_what_the_objective_computed_at_the_point_taken():
    rule, x = outer.Armijo(), jnp.zeros(3)
    kwargs = dict(lr=0.5, ascent=True, box=(0.0, 1.0), mask=True, value=_sphere(x))
    x_new, state, aux = rule.step_and_aux(
        x, -2 * (x - 0.7), rule.init(x), value_fn=lambda x: (_sphere(x), 10 * x), aux=jnp.full(3, -1.0), **kwargs
    )
    np.testing.assert_allclose(aux, 10 * x_new)
    assert _sphere(x_new) > _sphere(x)
    x_plain, state_plain = rule.step(x, -2 * (x - 0.7), rule.init(x), value_fn=_sphere, **kwargs)
    np.testing.assert_array_equal(x_plain, x_new)
    np.testing.assert_array_equal(state_plain, state)
    # A claimed gradient that points downhill (inside the box): every trial is rejected, x and aux stay.
    x = jnp.full(3, 0.5)
    kwargs["value"] = _sphere(x)
    x_stay, _, aux_stay = rule.step_and_aux(
        x, 2 * (x - 0.7), rule.init(x), value_fn=lambda x: (_sphere(x), 10 * x), aux=jnp.full(3, -1.0), **kwargs
    )
    np.testing.assert_array_equal(x_stay, x)
    np.testing.assert_array_equal(aux_stay, jnp.full(3, -1.0))


@pytest.mark.parametrize("rule", [outer.Normalised(), outer.SGD(), outer.Adam(), outer.Optimistic()])
def test_rules_that_evaluate_nothing_return_aux_as_given(rule):
    x, g = jnp.zeros(3), jnp.ones(3)
    kwargs = dict(lr=0.1, ascent=True, box=(0.0, 1.0), mask=True)
    x_new, state, aux = rule.step_and_aux(x, g, rule.init(x), aux={"w": jnp.arange(2.0)}, **kwargs)
    x_plain, _ = rule.step(x, g, rule.init(x), **kwargs)
    np.testing.assert_array_equal(x_new, x_plain)
    np.testing.assert_array_equal(aux["w"], jnp.arange(2.0))
    assert float(jnp.min(x_new)) > 0  # it moved


def test_add_mode_appends_and_replace_mode_overwrites(splits):
    settings = strong_settings()
    state = started(settings, splits)
    x, y, weights = attack.poisoned_training_set(splits, state, attack.Add())
    assert x.shape == (3, N_TRAIN + 2 * BATCH, 64)
    np.testing.assert_array_equal(weights[:, :N_TRAIN], 1.0)
    np.testing.assert_array_equal(weights[:, N_TRAIN:], np.repeat(np.asarray(state.active, np.float32), 1, 0))
    np.testing.assert_array_equal(x[:, N_TRAIN:], state.xp)
    # The inner loss is the mean over n_train + n_active rows in add mode, n_train in replace mode.
    one = jax.tree_util.tree_map(lambda a: a[0], state)
    sp = [a[0] for a in splits[:4]]
    w = {"layer_0": {"kernel": jnp.zeros((64, 1)), "bias": jnp.zeros(1)}}
    theta = {"xp": one.xp, "log_lam": one.log_lam}
    add_inner, _ = attack.make_losses(settings.model, *sp, one, attack.Add())
    replace_inner, _ = attack.make_losses(settings.model, *sp, one, attack.Replace())
    assert float(add_inner(w, theta)) == pytest.approx(math.log(2.0), rel=1e-6)  # all logits 0
    assert float(replace_inner(w, theta)) == pytest.approx(math.log(2.0), rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [attack.Replace(), attack.Add()], ids=["replace", "add"])
def test_no_recompilation_across_fractions_and_hyperiterations(splits, mode, trace_counter):
    lr = models.logistic_regression(64)
    counting_apply = trace_counter(lr.apply)
    model = models.Model(lr.name, lr.init, counting_apply, lr.layers, lr.random_init)
    settings = strong_settings(model=model, mode=mode)
    state = started(settings, splits)
    state, _ = attack.run_attack(settings, splits, state, num_iters=2)
    traced = counting_apply.count
    for n_active in (0, BATCH, 2 * BATCH):
        state, _ = attack.run_attack(settings, splits, attack.set_poison_count(state, n_active, BATCH), num_iters=2)
    assert counting_apply.count == traced


@dataclasses.dataclass(frozen=True)
class _CountingNewtonCG(NewtonCG):
    """Newton-CG that counts how often a program traces its solve; each instance its own static
    argument (``tag``), so no test finds another's traces in JAX's caches."""

    traced: list = dataclasses.field(default_factory=list, compare=False, hash=False)
    tag: object = dataclasses.field(default_factory=object)

    def solve(self, f, w0):
        self.traced.append(1)
        return super().solve(f, w0)


@pytest.mark.parametrize("update_lam", [False, True], ids=["xp", "xp-then-lambda"])
def test_attack_program_traces_each_inner_solve_once(splits, update_lam):
    """Trace time is most of a warm-cache run: the hyperiteration is traced once (not once more for
    the shape of its info), and the line search's trials share one trace of their solve: the
    hypergradient's solve once (Λ's move reuses Xp's trace: one jitted function, equal shapes) and
    one solve for each move's trials."""
    solver = _CountingNewtonCG(tol=1e-5, maxiter=100)
    settings = strong_settings(
        method=Implicit(solver, cg_iters=100, cg_tol=1e-5, damping=1e-4), lam_step=outer.Armijo()
    )
    attack.run_attack(settings, splits, started(settings, splits), num_iters=2, update_lam=update_lam)
    assert len(solver.traced) == (3 if update_lam else 2)


def test_converged_victim_reaches_its_tolerance_and_learns(splits):
    settings = strong_settings()
    state = started(settings, splits, n_active=0)
    x, y, weights = attack.poisoned_training_set(splits, state, attack.Add())
    victim = victims.ConvergedVictim(NewtonCG(tol=1e-5, maxiter=200))
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    m = victims.evaluate_victim(
        settings.model, x, y, state.log_lam, keys, splits.x_test, splits.y_test, victim=victim, weights=weights
    )
    assert np.all(np.asarray(m.converged)) and float(np.max(m.error)) < 0.05
    with pytest.raises(ValueError, match="give one or the other"):
        victims.evaluate_victim(
            settings.model, x, y, state.log_lam, keys, splits.x_test, splits.y_test, victim=victim, lr=0.1, epochs=2
        )


def test_sgd_victim_ignores_inactive_added_rows(splits):
    settings = strong_settings()
    state = started(settings, splits, n_active=0)
    state = state._replace(xp=jnp.full_like(state.xp, jnp.nan))  # would poison any step that used them
    x, y, weights = attack.poisoned_training_set(splits, state, attack.Add())
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    m = victims.evaluate_victim(
        settings.model,
        x,
        y,
        state.log_lam,
        keys,
        splits.x_test,
        splits.y_test,
        victim=victims.SGDVictim(lr=0.5, epochs=20, batch_size=32),
        weights=weights,
    )
    assert np.all(np.asarray(m.finite)) and float(np.max(m.error)) < 0.1


# -- floor 2: configs, the sweep and resume ------------------------------------------------------


IMPLICIT, CONVERGED, ARMIJO = {"method": "implicit"}, {"victim": "converged"}, {"attack.xp_step": "armijo"}


# The message names the field by its full path, nested sections too (method.solver.tol, not solver.tol).
@pytest.mark.parametrize(
    "choices, path, value, allowed",
    [
        (IMPLICIT, "method.solver.tol", 0.0, "a finite number > 0"),
        (IMPLICIT, "method.solver.iters", 0, "a positive integer"),
        (CONVERGED, "victim.solver.tol", 0.0, "a finite number > 0"),
        (CONVERGED, "victim.solver.iters", 0, "a positive integer"),
        ({}, "attack.xp_step", "line-search", "one of normalised, sgd, adam, optimistic, armijo"),
        ({}, "attack.lam_step", "momentum", "one of normalised, sgd, adam, optimistic, armijo"),
        ({}, "attack.poison_mode", "append", "one of replace, add"),
        ({}, "victim", "exact", "one of sgd, converged"),
        ({}, "method", "newton", "one of rmd, ift, implicit"),
        (IMPLICIT, "method.solver", "bfgs", "one of newton-cg, lbfgs, dense-newton"),
        (IMPLICIT, "method.damping", -1.0, "a finite number >= 0"),
        (ARMIJO, "attack.xp_step.min_scale", 1.5, r"a number in \[0, 1\]"),
        (ARMIJO, "attack.xp_step.min_scale", float("nan"), r"a number in \[0, 1\]"),
    ],
)
def test_bad_strong_settings_are_refused_naming_the_field(choices, path, value, allowed):
    with pytest.raises(ConfigError) as refused:
        presets.preset("digits-lr", {**choices, path: value})
    named, _, rest = str(refused.value).partition(" must be ")
    assert named == path, (path, str(refused.value))
    assert re.fullmatch(rf"{allowed}, got {re.escape(repr(value))}", rest), str(refused.value)


def test_xp_min_scale_reaches_the_armijo_rule_on_xp_only():
    config = presets.preset(
        "digits-lr", {"attack.xp_step": "armijo", "attack.lam_step": "armijo", "attack.xp_step.min_scale": 0.25}
    )
    settings = config.attack_settings(models.logistic_regression(64))
    assert settings.xp_step == outer.Armijo(min_scale=0.25) and settings.lam_step == outer.Armijo()


def test_new_fields_at_their_defaults_keep_the_config_hash():
    config = presets.preset("digits-lr")
    assert config.hash() == presets.preset("digits-lr", {"attack.poison_mode": "replace", "victim": "sgd"}).hash()
    assert config.hash() != presets.preset("digits-lr", {"attack.poison_mode": "add"}).hash()


@pytest.mark.slow
def test_strong_sweep_records_its_victim_and_resumes_with_warm_states(tmp_path):
    digits = {"data": "digits", "data.classes": (0, 8), "data.x_box": (0.0, 1.0)}  # the strong preset on digits
    small = {"sweep.n_train": 100, "sweep.n_val": 50, "sweep.num_seeds": 2, "attack.poison_batch": 5}
    iters = {"attack.num_batches": 2, "attack.iters_fixed": 3, "attack.iters_clean": 3, "attack.iters_multi": 3}
    config = presets.preset("mnist5k-lr-strong", {**digits, **small, **iters, "sweep.settings": ("small", "learned")})
    full = sweep.run_sweep(config, tmp_path / "full", progress=False, log=lambda _: None)
    assert {r["victim"] for r in full} == {"converged"} and {r["hypergrad"] for r in full} == {"implicit"}
    assert all(all(r["per_seed"]["victim_converged"]) for r in full)
    # Kill after two cells (simulated by removing the later lines of a copy), then resume.
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "full", part)
    lines = (part / "results.jsonl").read_text().splitlines()
    (part / "results.jsonl").write_text("\n".join(lines[:4]) + "\n")
    for name in ("learned-1", "learned-2"):
        (part / "state" / f"{name}.npz").unlink(missing_ok=True)
    resumed = sweep.run_sweep(config, part, resume=True, progress=False, log=lambda _: None)
    for a, b in zip(full, resumed, strict=False):
        assert (a["setting"], a["cell"]) == (b["setting"], b["cell"])
        np.testing.assert_allclose(a["per_seed"]["error"], b["per_seed"]["error"])
        np.testing.assert_allclose(a["per_seed"]["log_lam"], b["per_seed"]["log_lam"], rtol=1e-6)
