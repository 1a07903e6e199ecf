"""Losses as values: the paper's logistic loss and a linear SVM's smoothed hinge."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poison_jax.engine import RMD, NewtonCG
from poison_jax.experiments import presets, sweep
from poison_jax.experiments.checked import ConfigError
from poison_jax.poisoning import attack, data, losses, models, penalties, victims
from tests.test_penalties import METHODS, assert_matches_central_difference, random_direction, smoothed_problem
from tests.tiny import tiny


def test_logistic_is_the_papers_cross_entropy():
    s, y = jnp.array([-2.0, 0.0, 3.0]), jnp.array([1.0, 0.0, 1.0])
    np.testing.assert_allclose(losses.Logistic()(s, y), jnp.log1p(jnp.exp(-(2 * y - 1) * s)), rtol=1e-6)
    assert models.logistic_regression(3).loss == losses.Logistic()


def test_smoothed_hinge_has_three_pieces_joined_smoothly(x64):
    h = 0.5
    hinge = losses.SmoothedHinge(smoothing=h)
    y = jnp.ones(())
    assert float(hinge(jnp.asarray(1.5), y)) == 0.0  # margin >= 1
    assert float(hinge(jnp.asarray(0.8), y)) == pytest.approx(0.2**2 / (2 * h))  # in the band
    assert float(hinge(jnp.asarray(-2.0), y)) == pytest.approx(3.0 - h / 2)  # linear below
    assert float(hinge(jnp.asarray(2.0), jnp.zeros(()))) == pytest.approx(3.0 - h / 2)  # label 0: margin -s
    grad = jax.grad(lambda s: hinge(s, y))
    for edge in (1.0, 1.0 - h):  # value and slope continuous at both band edges
        below, above = edge - 1e-9, edge + 1e-9
        assert float(hinge(jnp.asarray(below), y)) == pytest.approx(float(hinge(jnp.asarray(above), y)), abs=1e-8)
        assert float(grad(jnp.asarray(below))) == pytest.approx(float(grad(jnp.asarray(above))), abs=1e-7)
    # Within h/2 of the hinge everywhere.
    s = jnp.linspace(-3, 3, 601)
    assert float(jnp.max(jnp.maximum(0, 1 - s) - hinge(s, y))) <= h / 2 + 1e-12


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), True])
def test_bad_hinge_smoothing_is_refused(bad):
    with pytest.raises(ValueError, match="SmoothedHinge smoothing must be a finite number > 0"):
        losses.SmoothedHinge(smoothing=bad)
    with pytest.raises(TypeError, match="loss must be a poison_jax.poisoning.losses value"):
        models.logistic_regression(3, loss="hinge")


@pytest.mark.parametrize("method", list(METHODS), ids=list(METHODS))
def test_svm_hypergradient_matches_central_differences(x64, method):
    # The hypergradient is exact where no margin sits on a band edge (a kink of the curvature). At
    # smoothing 0.5 one margin of the converged fit lies within 1e-4 of an edge along log λ, and central
    # differences there miss by 4e-5; at 0.25 every margin, of both fits, is clear of the edges at 1e-4.
    objective, theta, dtheta, _ = smoothed_problem(penalties.L2(), method, loss=losses.SmoothedHinge(smoothing=0.25))
    lam_dir = {"xp": jnp.zeros_like(theta["xp"]), "log_lam": jnp.ones_like(theta["log_lam"])}
    for d in (lam_dir, random_direction(theta, 5)):
        assert_matches_central_difference(objective, theta, dtheta, d, 1e-4, abs=1e-10)


def test_the_attack_raises_the_svms_validation_hinge_loss_and_the_victim_learns():
    ds = data.load_dataset("digits")
    splits = data.sample_splits(ds, seeds=[0, 1], n_train=100, n_val=50)
    model = models.logistic_regression(64, loss=losses.SmoothedHinge())
    settings = attack.AttackSettings(model, RMD(steps=60, lr=0.5), alpha=0.5, beta=0.5, x_box=(0, 1), lam_box=(-8, 6))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    state = attack.set_poison_count(attack.init_attack(settings, keys, splits, 8, log_lam=-2.0), 8, 8)
    before = attack.attack_objective(settings, splits, state)
    state, _ = attack.run_attack(settings, splits, state, num_iters=10, update_lam=False)
    assert np.all(np.asarray(attack.attack_objective(settings, splits, state)) > 1.1 * np.asarray(before))
    clean = victims.evaluate_victim(
        model,
        splits.x_train,
        splits.y_train,
        jnp.full((2, 1), -2.0),
        keys,
        splits.x_test,
        splits.y_test,
        victim=victims.ConvergedVictim(NewtonCG(tol=1e-4)),
    )
    assert np.all(np.asarray(clean.converged)) and float(np.max(clean.error)) < 0.05


def test_config_loss_builds_the_svm_and_refuses_bad_values():
    from poison_jax.experiments.sweep import build_model

    model = build_model(presets.preset("digits-lr", {"loss": "smoothed-hinge", "loss.smoothing": 0.25}), 64)
    assert model.loss == losses.SmoothedHinge(smoothing=0.25) and model.penalty == penalties.L2()
    refused = {
        "loss must be one of logistic, smoothed-hinge, squared, got 'hinge'": {"loss": "hinge"},
        "loss.smoothing must be a finite number > 0, got 0": {"loss": "smoothed-hinge", "loss.smoothing": 0},
        # the logistic loss has no smoothing to set (0.1.0 ignored it with an error; 0.2.0 has no such field)
        "config path 'loss.smoothing': loss 'logistic' has no field 'smoothing'": {"loss.smoothing": 0.1},
    }
    for message, overrides in refused.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            presets.preset("digits-lr", overrides)
    assert presets.preset("digits-lr").hash() == presets.preset("digits-lr", {"loss": "logistic"}).hash()


# -- ridge regression: the squared loss on the diabetes regression -------------------------------


def test_diabetes_is_a_regression_with_targets_in_the_unit_interval():
    ds = data.load_dataset("diabetes")
    assert ds.x_pool.shape == (350, 10) and ds.x_test.shape == (92, 10)
    for a in (ds.x_pool, ds.y_pool, ds.x_test, ds.y_test):
        assert a.min() >= 0 and a.max() <= 1
    assert len(np.unique(ds.y_pool)) > 100  # real-valued targets, not labels
    with pytest.raises(ValueError, match=r"diabetes: n_test must be an integer in 1..441, got 442"):
        data.load_dataset("diabetes", n_test=442)
    assert losses.Squared().task == "regression" and losses.Logistic().task == "classification"


@pytest.mark.parametrize("method", list(METHODS), ids=list(METHODS))
def test_ridge_hypergradient_matches_central_differences(x64, method):
    objective, theta, dtheta, _ = smoothed_problem(penalties.L2(), method, loss=losses.Squared())
    assert_matches_central_difference(objective, theta, dtheta, random_direction(theta, 7), 1e-5)


def test_a_regression_victim_is_judged_by_test_mse():
    ds = data.load_dataset("diabetes")
    splits = data.sample_splits(ds, seeds=[0, 1], n_train=200, n_val=100)
    model = models.logistic_regression(10, loss=losses.Squared())
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    victim = victims.ConvergedVictim(NewtonCG(tol=1e-5))
    m = victims.evaluate_victim(
        model, splits.x_train, splits.y_train, jnp.full((2, 1), -2.0), keys, splits.x_test, splits.y_test, victim=victim
    )
    params, _ = victim.train(model, splits.x_train[0], splits.y_train[0], None, jnp.array([-2.0]), keys[0])
    by_hand = jnp.mean((model.apply(params, splits.x_test) - splits.y_test) ** 2)
    assert float(m.error[0]) == pytest.approx(float(by_hand), rel=1e-5)
    assert float(m.error[0]) < float(jnp.var(splits.y_test))  # better than predicting the mean
    assert np.all(np.isnan(np.asarray(m.fpr))) and np.all(np.isnan(np.asarray(m.fnr)))


@pytest.mark.slow
def test_the_ridge_preset_sweeps_and_reports_test_mse(tmp_path):
    longer = {"attack.iters_fixed": 3, "attack.iters_clean": 3, "attack.iters_multi": 3, "victim.epochs": 5}
    config = tiny(longer, "diabetes-ridge")
    records = sweep.run_sweep(config, tmp_path, progress=False, log=lambda _: None)
    assert len(records) == 12 and all(r["metric"] == "test_mse" and not r["failures"] for r in records)
    assert all(r["per_seed"]["fpr"] == [None, None] and r["mean"]["error"] > 0 for r in records)
    small = [r["mean"]["error"] for r in records if r["setting"] == "small"]
    assert small[-1] > small[0]  # the poison raises the test MSE
    from poison_jax.face import plots

    table = plots.summary_table(records)
    assert "log λ = -8: test MSE | log λ" in table and "%" not in table.splitlines()[2]
    fig = plots.error_figure(records)
    assert fig.axes[0].get_ylabel() == "test MSE"
    plots.plt.close(fig)
