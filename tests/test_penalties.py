"""Penalties as values: L2 (the paper), smoothed L1 and elastic-net, each with its own log-λ per layer."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poison_jax import engine
from poison_jax.engine import RMD, Implicit, NewtonCG
from poison_jax.experiments import presets
from poison_jax.experiments.checked import ConfigError
from poison_jax.poisoning import attack, data, losses, models, penalties
from tests.test_engine import rel_err

KERNELS = [jnp.array([[0.5, -2.0], [0.0, 1e-4]]), jnp.array([[3.0], [-1.0]])]


def test_l2_is_the_papers_penalty():
    model = models.mlp(2, hidden=(2,))
    params = model.init(jax.random.PRNGKey(0))
    log_lam = jnp.array([0.3, -1.0])
    kernels = [params["layer_0"]["kernel"], params["layer_1"]["kernel"]]
    l2 = 0.5 * sum(jnp.exp(lam) * jnp.sum(k**2) for lam, k in zip(log_lam, kernels, strict=True))
    assert float(models.penalty(model, params, log_lam)) == pytest.approx(float(l2), rel=1e-6)
    assert float(penalties.L2()(KERNELS, log_lam)) == pytest.approx(
        0.5 * (math.exp(0.3) * (0.25 + 4 + 1e-8) + math.exp(-1.0) * 10)
    )


@pytest.mark.parametrize("eps", [1e-1, 1e-3, 1e-6])
def test_smoothed_l1_is_within_eps_of_the_l1_norm_per_weight(x64, eps):
    kernels = [k.astype(jnp.float64) for k in KERNELS]
    got = float(penalties.L1(smoothing=eps)(kernels, jnp.zeros(2)))
    l1 = sum(float(jnp.sum(jnp.abs(k))) for k in kernels)
    assert l1 - 6 * eps <= got <= l1  # 6 weights, each within eps below |w|


def test_elastic_net_is_l1_with_the_first_lambdas_plus_l2_with_the_last(x64):
    kernels = [k.astype(jnp.float64) for k in KERNELS]
    log_lam = jnp.array([0.1, 0.2, -0.3, 0.4])
    net = penalties.ElasticNet(smoothing=1e-2)
    expected = penalties.L1(1e-2)(kernels, log_lam[:2]) + penalties.L2()(kernels, log_lam[2:])
    assert float(net(kernels, log_lam)) == pytest.approx(float(expected))
    assert models.mlp(4, hidden=(8, 3), penalty=net).num_lams == 6


@pytest.mark.parametrize("bad", [0.0, -1e-3, float("nan"), float("inf"), True, "1e-3"])
@pytest.mark.parametrize("rule", [penalties.L1, penalties.ElasticNet])
def test_bad_smoothing_is_refused(rule, bad):
    with pytest.raises(ValueError, match=r"smoothing must be a finite number > 0"):
        rule(smoothing=bad)


def test_a_model_refuses_what_is_not_a_penalty():
    with pytest.raises(TypeError, match="penalty must be a poison_jax.poisoning.penalties value"):
        models.logistic_regression(3, penalty="l1")


# -- hypergradients of the smoothed problems against central differences (float64) -----------


def _digits_problem(penalty, n_poison=3, loss=losses.Logistic(), num_classes=2):
    """The float64 poisoning problem of one digits split (0 v 8, or classes 0..K-1 for K > 2)."""
    ds = data.load_dataset("digits", classes=tuple(range(num_classes)) if num_classes > 2 else None)
    splits = data.sample_splits(ds, seeds=[0], n_train=60, n_val=40)
    model = models.logistic_regression(64, penalty=penalty, loss=loss, num_classes=num_classes)
    settings = attack.AttackSettings(
        model, RMD(steps=5, lr=0.5), alpha=0.5, beta=0.5, x_box=(0.0, 1.0), lam_box=(-8.0, 6.0)
    )
    keys = jax.random.split(jax.random.PRNGKey(0), 1)
    state = attack.init_attack(settings, keys, splits, n_poison, log_lam=-2.0)
    state = attack.set_poison_count(state, n_poison, n_poison)
    one = jax.tree_util.tree_map(lambda a: a[0], state)
    f64 = lambda a: jnp.asarray(a, jnp.float64)
    inner, outer = attack.poisoning_losses(model)
    pdata = attack.poison_data(*(f64(a[0]) for a in splits[:4]), one, attack.Replace())
    log_lam = jnp.linspace(-3.0, -1.0, model.num_lams)  # distinct λ: each one's derivative is checked
    theta = {"xp": f64(one.xp), "log_lam": log_lam}
    w0 = jax.tree_util.tree_map(f64, model.init(jax.random.PRNGKey(0)))
    return inner, outer, w0, theta, pdata


METHODS = {
    "implicit": Implicit(NewtonCG(tol=1e-12, maxiter=300, cg_iters=200), cg_iters=500, cg_tol=1e-12),
    "rmd": RMD(steps=40, lr=0.5),
}


def smoothed_problem(penalty, method, loss=losses.Logistic(), num_classes=2):
    """``(objective, theta, dtheta, result)``: the attacker's objective through ``method``'s inner
    training (jitted) and its hypergradient at ``theta``, on the float64 digits problem."""
    inner, outer, w0, theta, pdata = _digits_problem(penalty, loss=loss, num_classes=num_classes)
    m = METHODS[method]
    objective = jax.jit(lambda th: outer(m.fit(inner, w0, th, pdata), th, pdata))
    result = engine.hypergrad(m, inner, outer, w0, theta, pdata)
    return objective, theta, result.grad, result


def random_direction(theta, seed):
    return jax.tree_util.tree_map(lambda a: jax.random.normal(jax.random.PRNGKey(seed), a.shape, a.dtype), theta)


def assert_matches_central_difference(objective, theta, dtheta, direction, eps, abs=0.0):
    """``<dtheta, direction>`` equals the central difference of ``objective`` along ``direction``."""
    shifted = lambda s: jax.tree_util.tree_map(lambda a, d: a + s * d, theta, direction)
    fd = (objective(shifted(eps)) - objective(shifted(-eps))) / (2 * eps)
    leaves = zip(jax.tree_util.tree_leaves(dtheta), jax.tree_util.tree_leaves(direction), strict=True)
    assert sum(float(jnp.vdot(a, d)) for a, d in leaves) == pytest.approx(float(fd), rel=1e-5, abs=abs)


@pytest.mark.parametrize("method", list(METHODS), ids=list(METHODS))
@pytest.mark.parametrize(
    "penalty", [penalties.L1(smoothing=0.1), penalties.ElasticNet(smoothing=0.1)], ids=["l1", "elastic-net"]
)
def test_hypergradient_of_the_smoothed_problem_matches_central_differences(x64, penalty, method):
    objective, theta, dtheta, result = smoothed_problem(penalty, method)
    assert int(result.status) == engine.RESULTS.successful
    eps = 1e-4  # the solves' error (tol / smallest curvature) over eps stays far below the tolerance
    # Every log-λ on its own (L1's and L2's), and a random direction through all of theta.
    for i in range(theta["log_lam"].size):
        one_hot = {"xp": jnp.zeros_like(theta["xp"]), "log_lam": jnp.zeros_like(theta["log_lam"]).at[i].set(1.0)}
        assert_matches_central_difference(objective, theta, dtheta, one_hot, eps, abs=1e-9)
    assert_matches_central_difference(objective, theta, dtheta, random_direction(theta, 3), eps)


def test_l1_hypergradient_differs_from_the_l2_one(x64):
    """The penalty really changes what is differentiated (not a relabelled L2)."""
    grads = []
    for penalty in (penalties.L2(), penalties.L1(smoothing=1e-2)):
        inner, outer, w0, theta, pdata = _digits_problem(penalty)
        grads.append(engine.hypergrad(METHODS["implicit"], inner, outer, w0, theta, pdata).grad)
    assert rel_err(grads[0], grads[1]) > 0.1


# -- the attack and the config ------------------------------------------------------------------


def test_the_multiobjective_attack_learns_every_elastic_net_lambda():
    ds = data.load_dataset("digits")
    splits = data.sample_splits(ds, seeds=[0, 1], n_train=80, n_val=40)
    model = models.mlp(64, hidden=(8,), penalty=penalties.ElasticNet())
    settings = attack.AttackSettings(
        model, RMD(steps=20, lr=0.3), alpha=0.5, beta=0.5, x_box=(0.0, 1.0), lam_box=(-8.0, 6.0)
    )
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    state = attack.init_attack(settings, keys, splits, 5, log_lam=-1.0)
    assert state.log_lam.shape == (2, 4)  # 2 layers x (L1, L2)
    state = attack.set_poison_count(state, 5, 5)
    new, info = attack.run_attack(settings, splits, state, num_iters=3)
    assert np.all(np.asarray(new.log_lam) != -1.0) and np.all(np.isfinite(np.asarray(info.val_loss)))


def test_init_attack_refuses_a_log_lambda_of_the_wrong_length():
    ds = data.load_dataset("digits")
    splits = data.sample_splits(ds, seeds=[0], n_train=40, n_val=20)
    model = models.logistic_regression(64, penalty=penalties.ElasticNet())
    settings = attack.AttackSettings(model, RMD(steps=2, lr=0.1), alpha=1.0, beta=1.0, x_box=(0, 1), lam_box=(-8, 6))
    keys = jax.random.split(jax.random.PRNGKey(0), 1)
    with pytest.raises(ValueError, match=r"log_lam has 1 value\(s\) per seed, but .*ElasticNet.* needs 2"):
        attack.init_attack(settings, keys, splits, 3, log_lam=jnp.array([0.5]))
    assert attack.init_attack(settings, keys, splits, 3, log_lam=0.5).log_lam.shape == (1, 2)  # a scalar sets all


def test_config_penalty_builds_the_model_and_refuses_bad_values():
    from poison_jax.experiments.sweep import build_model

    config = presets.preset("digits-lr", {"penalty": "elastic-net", "penalty.smoothing": 0.3})
    model = build_model(config, 64)
    assert model.penalty == penalties.ElasticNet(smoothing=0.3) and model.num_lams == 2
    assert build_model(presets.preset("digits-lr"), 64).penalty == penalties.L2()
    refused = {
        "penalty must be one of l2, l1, elastic-net, got 'l0'": {"penalty": "l0"},
        "penalty.smoothing must be a finite number > 0, got 0.0": {"penalty": "l1", "penalty.smoothing": 0.0},
        # the L2 penalty has no smoothing to set (0.1.0 ignored it with an error; 0.2.0 has no such field)
        "config path 'penalty.smoothing': penalty 'l2' has no field 'smoothing'": {"penalty.smoothing": 1e-2},
    }
    for message, overrides in refused.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            presets.preset("digits-lr", overrides)
    assert presets.preset("digits-lr").hash() == presets.preset("digits-lr", {"penalty": "l2"}).hash()


def test_a_smoothing_too_stiff_for_the_gradient_steps_is_refused():
    """digits-lr: η = 0.5, log λ up to log 200, 200 rows: ε must exceed 0.5 * 200 / 400 = 0.25."""
    l1 = {"penalty": "l1", "penalty.smoothing": 0.1}
    with pytest.raises(ConfigError, match=r"penalty.smoothing must be > method.lr \* .* = 0.25, .* got 0.1"):
        presets.preset("digits-lr", l1)
    presets.preset("digits-lr", {**l1, "attack.log_lam_box": (-8.0, 3.0)})  # a lower box: stable
    converged = {"method": "implicit", "victim": "converged", "victim.solver.tol": 1e-4}
    assert presets.preset("digits-lr", {"penalty": "l1", **converged}).penalty.smoothing == 1e-3  # no gradient steps


@pytest.mark.slow
def test_an_elastic_net_svm_sweep_runs_resumes_and_plots_from_the_cli(tmp_path):
    """The new values compose with the sweep: CLI --set, seed lanes, resume after an interruption, plots."""
    import json

    from poison_jax.face import cli
    from tests.tiny import tiny_sets

    svm = {"penalty": "elastic-net", "penalty.smoothing": 0.3, "loss": "smoothed-hinge"}
    sets = tiny_sets({**svm, "sweep.settings": ("small", "learned")})
    argv = ["run", "--preset", "digits-lr", "--out", str(tmp_path), "--no-progress", *sets]
    assert cli.main(argv) == 0
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 6 and all(len(r["mean"]["log_lam"]) == 2 for r in records)
    learned = [r for r in records if r["setting"] == "learned"]
    assert learned[-1]["mean"]["log_lam"] != learned[0]["mean"]["log_lam"]  # both λ learned
    (tmp_path / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # killed before the last cell
    assert cli.main([*argv, "--resume"]) == 0
    resumed = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    strip = lambda r: {k: v for k, v in r.items() if k not in ("wall_time_s", "compile_time_s")}
    assert [strip(r) for r in resumed] == [strip(r) for r in records]
    assert (tmp_path / "figures" / "lambda_norm_vs_fraction.png").stat().st_size > 10_000
