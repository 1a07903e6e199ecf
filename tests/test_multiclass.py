"""Multiclass poisoning: softmax logistic regression and the MLP with K outputs, wrong labels,
per-class metrics, the presets, the CLI and the plots."""

import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poison_jax.engine import IFT, RMD
from poison_jax.experiments import config, presets, sweep
from poison_jax.experiments.checked import ConfigError
from poison_jax.face import cli, plots
from poison_jax.poisoning import attack, data, losses, models, penalties, victims
from tests.test_penalties import METHODS, assert_matches_central_difference, random_direction, smoothed_problem
from tests.tiny import tiny, tiny_sets


def test_logistic_on_k_scores_is_the_softmax_cross_entropy():
    scores = jnp.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    y = jnp.array([2.0, 0.0])
    expected = -jax.nn.log_softmax(scores)[jnp.arange(2), jnp.array([2, 0])]
    np.testing.assert_allclose(losses.Logistic()(scores, y), expected, rtol=1e-6)
    # one score per example stays the paper's binary cross-entropy
    np.testing.assert_allclose(losses.Logistic()(scores[:, 0], jnp.array([1.0, 0.0])), [0.31326, 0.69315], atol=1e-5)


@pytest.mark.parametrize("build", [models.logistic_regression, lambda d, **kw: models.mlp(d, hidden=(6, 4), **kw)])
def test_k_outputs_and_the_same_layers(build):
    model = build(5, num_classes=4)
    params = model.init(jax.random.PRNGKey(0))
    assert model.apply(params, jnp.ones((3, 5))).shape == (3, 4)
    assert params[model.layers[-1]]["kernel"].shape[-1] == 4
    assert model.num_classes == 4 and model.num_lams == model.num_layers  # one λ per layer, as for binary
    binary = build(5)
    assert binary.apply(binary.init(jax.random.PRNGKey(0)), jnp.ones((3, 5))).shape == (3,)


@pytest.mark.parametrize("bad", [1, 0, True, 2.5])
def test_num_classes_must_be_at_least_two(bad):
    with pytest.raises(ValueError, match=rf"num_classes must be an integer >= 2, got {bad!r}"):
        models.logistic_regression(3, num_classes=bad)


@pytest.mark.parametrize("loss", [losses.SmoothedHinge(), losses.Squared()])
def test_binary_only_losses_are_refused_for_k_classes(loss):
    with pytest.raises(ValueError, match=r"no multiclass form here: with num_classes=3 use Logistic\(\)"):
        models.logistic_regression(3, loss=loss, num_classes=3)


def test_wrong_labels_are_uniform_over_the_wrong_classes():
    y = jnp.tile(jnp.arange(5.0), 4000)
    wrong = attack.wrong_labels(jax.random.PRNGKey(0), y, 5)
    assert wrong.dtype == y.dtype and not bool(jnp.any(wrong == y))
    counts = np.zeros((5, 5))
    np.add.at(counts, (np.asarray(y, int), np.asarray(wrong, int)), 1)
    off_diagonal = counts[~np.eye(5, dtype=bool)]
    np.testing.assert_allclose(off_diagonal / 1000, 1.0, atol=0.1)  # 4000 per class over 4 wrong ones
    binary = jnp.array([0.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(attack.wrong_labels(jax.random.PRNGKey(1), binary, 2), 1.0 - binary)  # the paper


def test_poison_points_clone_validation_points_with_a_wrong_class():
    ds = data.load_dataset("digits", classes=tuple(range(10)), n_test=397)
    splits = data.sample_splits(ds, seeds=[0, 1], n_train=100, n_val=80)
    model = models.logistic_regression(64, num_classes=10)
    settings = attack.AttackSettings(model, RMD(steps=5, lr=0.5), alpha=0.5, beta=0.5, x_box=(0, 1), lam_box=(-8, 5))
    state = attack.init_attack(settings, jax.random.split(jax.random.PRNGKey(0), 2), splits, 40, log_lam=0.0)
    for s in range(2):
        x_val, y_val = np.asarray(splits.x_val[s]), np.asarray(splits.y_val[s])
        rows = [int(np.flatnonzero((x_val == xp).all(axis=1))[0]) for xp in np.asarray(state.xp[s])]
        assert len(set(rows)) == 40  # drawn without replacement
        assert np.all(np.asarray(state.yp[s]) != y_val[rows])
        assert set(np.asarray(state.yp[s]).tolist()) <= set(range(10)) and len(set(state.yp[s].tolist())) > 3


@pytest.mark.parametrize("method", list(METHODS), ids=list(METHODS))
def test_softmax_hypergradient_matches_central_differences(x64, method):
    objective, theta, dtheta, result = smoothed_problem(penalties.L2(), method, num_classes=4)
    assert int(result.status) == 0
    lam_dir = {"xp": jnp.zeros_like(theta["xp"]), "log_lam": jnp.ones_like(theta["log_lam"])}
    for direction in (lam_dir, random_direction(theta, 7)):
        assert_matches_central_difference(objective, theta, dtheta, direction, 1e-4, abs=1e-10)


def test_confusion_matrix_and_per_class_error_by_hand():
    scores = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [0.0, 5.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    y = jnp.array([0.0, 1.0, 1.0, 2.0, 2.0])
    confusion = victims.confusion_matrix(scores, y, 3)
    np.testing.assert_array_equal(confusion, [[1, 0, 0], [0, 1, 1], [1, 0, 1]])
    # binary: one score, class 1 where it is > 0
    np.testing.assert_array_equal(
        victims.confusion_matrix(jnp.array([-1.0, 2.0, 0.5]), jnp.array([0.0, 0.0, 1.0]), 2), [[1, 1], [0, 1]]
    )


@pytest.mark.parametrize("num_classes", [2, 10])
def test_victim_metrics_per_class(num_classes):
    classes = tuple(range(num_classes)) if num_classes > 2 else None
    ds = data.load_dataset("digits", classes=classes, n_test=300 if classes else None)
    splits = data.sample_splits(ds, seeds=[0, 1], n_train=200, n_val=20)
    model = models.logistic_regression(64, num_classes=num_classes)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    m = victims.evaluate_victim(
        model, splits.x_train, splits.y_train, jnp.full((2, 1), -4.0), keys, splits.x_test, splits.y_test,
        lr=0.5, epochs=20,
    )  # fmt: skip
    k = num_classes
    assert m.confusion.shape == (2, k, k) and m.per_class_error.shape == (2, k)
    counts = np.bincount(np.asarray(splits.y_test, int), minlength=k)
    np.testing.assert_array_equal(m.confusion.sum(axis=2), np.tile(counts, (2, 1)))
    np.testing.assert_allclose(m.error, 1 - np.trace(m.confusion, axis1=1, axis2=2) / counts.sum(), rtol=1e-6)
    np.testing.assert_allclose(m.per_class_error, 1 - np.diagonal(m.confusion, axis1=1, axis2=2) / counts, rtol=1e-6)
    assert float(m.error.max()) < 0.15  # the victim learned all classes
    if k == 2:
        np.testing.assert_allclose(m.per_class_error, np.stack([m.fpr, m.fnr], axis=1), rtol=1e-6)
    else:
        assert np.isnan(np.asarray(m.fpr)).all() and np.isnan(np.asarray(m.fnr)).all()


def test_config_refuses_repeated_classes_and_binary_losses():
    with pytest.raises(ConfigError, match=r"data.classes must be distinct .*\(1 appear twice\), got \(0, 1, 2, 1\)"):
        presets.preset("digits10-lr", {"data.classes": (0, 1, 2, 1)})
    with pytest.raises(ConfigError, match=r"loss must be logistic .* with 10 classes .* got 'smoothed-hinge'"):
        presets.preset("digits10-lr", {"loss": "smoothed-hinge"})
    with pytest.raises(ConfigError, match=r"data.classes must be a tuple of two or more .* got \(3,\)"):
        presets.preset("digits10-lr", {"data.classes": (3,)})
    with pytest.raises(ValueError, match=r"class 12 is outside the range 0\.\.9"):
        sweep.load_splits(presets.preset("digits10-lr", {"data.classes": (0, 1, 12)}))
    c = presets.preset("mnist5k10-lr")
    assert c.num_classes == 10 and presets.preset("mnist5k-lr").num_classes == 2


@pytest.mark.parametrize("method", ["rmd", "ift"])
def test_a_multiclass_sweep_records_per_class_metrics_and_resumes(tmp_path, method):
    # The tiny sweep, trained longer (three hyperiterations, 40 inner steps, 20 victim epochs): each
    # batch of poison must raise the attacker's objective.
    longer = {"attack.iters_fixed": 3, "attack.iters_clean": 3, "attack.iters_multi": 3, "method.steps": 40}
    c = tiny({"method": method, **longer, "victim.epochs": 20, "sweep.settings": ("small", "learned")}, "digits10-lr")
    # Interrupted after the first setting's cells: resuming runs the learned setting's cells only.
    first = config.override(c, {"sweep.settings": ("small",)})
    sweep.run_sweep(first, tmp_path, progress=False, log=lambda _: None)
    said = []
    records = sweep.run_sweep(c, tmp_path, resume=True, progress=False, log=said.append)
    assert any("3 of 6" in line for line in said), said
    assert len(records) == 6 and not any(r["failures"] for r in records)
    for r in records:
        assert "fpr" not in r["per_seed"] and len(r["mean"]["per_class_error"]) == 10
        confusion = np.asarray(r["per_seed"]["confusion"])
        assert confusion.shape == (2, 10, 10) and confusion.sum() == 2 * 397
        np.testing.assert_allclose(r["per_seed"]["error"], 1 - np.trace(confusion, axis1=1, axis2=2) / 397, rtol=1e-6)
    small = [r["mean"]["val_loss"] for r in records if r["setting"] == "small"]
    assert small[0] < small[1] < small[2]  # each batch of poison raises the attacker's objective


@pytest.mark.slow
def test_cli_runs_and_plots_a_multiclass_preset_without_flags(tmp_path):
    out = tmp_path / "d10"
    run = [
        sys.executable,
        "-m",
        "poison_jax.face.cli",
        "run",
        "--preset",
        "digits10-lr",
        "--out",
        str(out),
        "--no-progress",
        *tiny_sets({"attack.num_batches": 1, "victim.epochs": 5}),
    ]
    done = subprocess.run(run, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (out / "figures" / "per_class.png").stat().st_size > 10_000
    # Plotting the folder again: in this process (a second interpreter only repeated the imports;
    # tests/test_face.py runs `poison-jax plot` in a fresh process).
    assert cli.main(["plot", str(out), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "figures" / "per_class.pdf").exists()
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    fig = plots.class_figure(records)
    assert len(fig.axes) == 3 * 4  # bars and confusion (with its colour bar) per setting
    plots.plt.close(fig)


def test_the_mlp_with_k_outputs_trains_through_ift():
    ds = data.load_dataset("digits", classes=(0, 1, 2), n_test=60)
    splits = data.sample_splits(ds, seeds=[0], n_train=120, n_val=40)
    model = models.mlp(64, hidden=(16,), num_classes=3)
    settings = attack.AttackSettings(
        model, IFT(steps=100, lr=0.3, cg_iters=50), alpha=0.5, beta=0.5, x_box=(0, 1), lam_box=(-8, 5)
    )
    state = attack.init_attack(settings, jax.random.split(jax.random.PRNGKey(0), 1), splits, 6, log_lam=-2.0)
    state = attack.set_poison_count(state, 6, 6)
    before = attack.attack_objective(settings, splits, state)
    state, info = attack.run_attack(settings, splits, state, num_iters=4, update_xp=True, update_lam=False)
    after = attack.attack_objective(settings, splits, state)
    assert bool(jnp.all(info.finite)) and float(after[0]) > float(before[0])


def test_every_multiclass_fraction_runs_the_same_compiled_step(trace_counter):
    ds = data.load_dataset("digits", classes=tuple(range(10)), n_test=397)
    splits = data.sample_splits(ds, seeds=[0, 1], n_train=100, n_val=60)
    softmax = models.logistic_regression(64, num_classes=10)
    counting_apply = trace_counter(softmax.apply)
    model = dataclasses.replace(softmax, apply=counting_apply)
    settings = attack.AttackSettings(model, RMD(steps=5, lr=0.5), alpha=0.5, beta=0.5, x_box=(0, 1), lam_box=(-8, 5))
    state = attack.init_attack(settings, jax.random.split(jax.random.PRNGKey(0), 2), splits, 12, log_lam=0.0)
    state, _ = attack.run_attack(settings, splits, attack.set_poison_count(state, 4, 4), num_iters=2)
    traced = counting_apply.count
    for n_active in (0, 8, 12):
        state, _ = attack.run_attack(settings, splits, attack.set_poison_count(state, n_active, 4), num_iters=2)
    assert counting_apply.count == traced > 0
