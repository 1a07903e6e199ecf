"""Floor 1: Algorithm 1, λ learning and victim evaluation on digits 0 v 8 with small settings."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poison_jax.engine import IFT, RMD
from poison_jax.poisoning import attack, data, hyperopt, models, victims

N_TRAIN, N_VAL, BATCH = 120, 60, 12
LAM_BOX = (-8.0, math.log(200.0))


@pytest.fixture(scope="module")
def digits():
    return data.load_dataset("digits")


@pytest.fixture(scope="module")
def splits(digits):
    return data.sample_splits(digits, seeds=[0, 1, 2, 3], n_train=N_TRAIN, n_val=N_VAL)


@pytest.fixture(scope="module")
def lr_settings():
    return attack.AttackSettings(
        models.logistic_regression(64), RMD(steps=80, lr=0.5), alpha=0.5, beta=0.5, x_box=(0.0, 1.0), lam_box=LAM_BOX
    )


def keys_for(seeds):
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(0), s))(jnp.asarray(seeds))


def take(tree, i):
    """Seed slice ``i`` (kept as a batch of one) of stacked splits or states; the test set is shared."""
    if isinstance(tree, data.Splits):
        return tree._replace(**{f: getattr(tree, f)[i : i + 1] for f in ("x_train", "y_train", "x_val", "y_val")})
    return jax.tree_util.tree_map(lambda a: a[i : i + 1], tree)


def start(settings, splits, n_poison=3 * BATCH, log_lam=math.log(5.0)):
    return attack.init_attack(settings, keys_for(range(splits.x_train.shape[0])), splits, n_poison, log_lam)


def test_poison_init_clones_validation_points_with_flipped_labels(lr_settings, splits):
    state = start(lr_settings, splits)
    for s in range(4):
        xv, yv = np.asarray(splits.x_val[s]), np.asarray(splits.y_val[s])
        for xp, yp in zip(np.asarray(state.xp[s]), np.asarray(state.yp[s]), strict=False):
            match = np.flatnonzero((xv == xp).all(axis=1))
            assert match.size >= 1 and yp == 1 - yv[match[0]]
        assert len(set(np.asarray(state.replace_idx[s]).tolist())) == 3 * BATCH  # without replacement
    assert not bool(state.active.any())


def test_attack_raises_validation_loss_well_above_cloned_points(lr_settings, splits):
    state = attack.set_poison_count(start(lr_settings, splits), 2 * BATCH, 2 * BATCH)
    before = attack.attack_objective(lr_settings, splits, state)
    state, info = attack.run_attack(lr_settings, splits, state, num_iters=30, update_lam=False)
    after = attack.attack_objective(lr_settings, splits, state)
    assert bool(jnp.all(after > 1.25 * before)), (before, after)
    assert bool(jnp.all(info.finite)) and int(state.nonfinite_steps.sum()) == 0
    # The objective seen during the run climbs too.
    assert bool(jnp.all(info.val_loss[:, -1] > info.val_loss[:, 0]))


def test_boxes_are_respected(splits):
    x_box, lam_box = (0.2, 0.7), (0.5, 1.0)
    settings = attack.AttackSettings(
        models.logistic_regression(64), RMD(steps=40, lr=0.5), alpha=2.0, beta=50.0, x_box=x_box, lam_box=lam_box
    )
    state = attack.set_poison_count(start(settings, splits, log_lam=3.0), BATCH, BATCH)
    assert float(state.log_lam.max()) == lam_box[1]  # the initial log-λ is clipped into the box
    state, _ = attack.run_attack(settings, splits, state, num_iters=10)
    trained = np.asarray(state.xp[:, :BATCH])
    assert trained.min() >= x_box[0] and trained.max() <= x_box[1]
    assert np.isclose(trained, x_box[0]).any() and np.isclose(trained, x_box[1]).any()  # the projection acted
    assert float(state.log_lam.min()) >= lam_box[0] and float(state.log_lam.max()) <= lam_box[1]


def test_cumulative_batches_freeze_earlier_points(lr_settings, splits):
    state = attack.set_poison_count(start(lr_settings, splits), BATCH, BATCH)
    state, _ = attack.run_attack(lr_settings, splits, state, num_iters=5, update_lam=False)
    first_batch, not_yet = state.xp[:, :BATCH], state.xp[:, BATCH:]
    state = attack.set_poison_count(state, 2 * BATCH, BATCH)
    assert bool(state.trainable[:, BATCH : 2 * BATCH].all()) and not bool(state.trainable[:, :BATCH].any())
    state, _ = attack.run_attack(lr_settings, splits, state, num_iters=5, update_lam=False)
    np.testing.assert_array_equal(state.xp[:, :BATCH], first_batch)
    assert not np.array_equal(state.xp[:, BATCH : 2 * BATCH], not_yet[:, :BATCH])
    np.testing.assert_array_equal(state.xp[:, 2 * BATCH :], not_yet[:, BATCH:])


@pytest.mark.slow
def test_multiobjective_ends_with_larger_lambda_than_clean(splits):
    settings = attack.AttackSettings(
        models.logistic_regression(64), RMD(steps=150, lr=0.5), alpha=1.0, beta=1.0, x_box=(0.0, 1.0), lam_box=LAM_BOX
    )
    state = start(settings, splits)
    clean, _ = hyperopt.learn_lambda_clean(settings, splits, state, num_iters=40)
    state = clean
    for batch in range(1, 4):
        state = attack.set_poison_count(state, batch * BATCH, BATCH)
        state, _ = attack.run_attack(settings, splits, state, num_iters=25)
    assert bool(jnp.all(state.log_lam > clean.log_lam)), (clean.log_lam, state.log_lam)


@pytest.mark.parametrize("lanes", [None, 2])  # vmapped, or lanes that loop (the sweep on a CPU)
def test_vmapped_seeds_equal_separate_calls(lr_settings, splits, lanes):
    state = attack.set_poison_count(start(lr_settings, splits), BATCH, BATCH)
    settings = dataclasses.replace(lr_settings, seed_lanes=lanes)
    batched, batched_info = attack.run_attack(settings, splits, state, num_iters=4)
    for s in range(4):
        single, single_info = attack.run_attack(lr_settings, take(splits, s), take(state, s), num_iters=4)
        pairs = zip(jax.tree_util.tree_leaves(take(batched, s)), jax.tree_util.tree_leaves(single), strict=True)
        for got, want in pairs:
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(batched_info.val_loss[s], single_info.val_loss[0], rtol=2e-5)


def test_same_seed_same_result(lr_settings, splits):
    def once():
        state = attack.set_poison_count(start(lr_settings, splits), BATCH, BATCH)
        return attack.run_attack(lr_settings, splits, state, num_iters=3)

    first, second = once(), once()
    for a, b in zip(jax.tree_util.tree_leaves(first), jax.tree_util.tree_leaves(second), strict=False):
        np.testing.assert_array_equal(a, b)


def test_every_fraction_runs_the_same_compiled_step(splits, trace_counter):
    lr = models.logistic_regression(64)
    counting_apply = trace_counter(lr.apply)
    model = models.Model(lr.name, lr.init, counting_apply, lr.layers, lr.random_init)
    settings = attack.AttackSettings(
        model, RMD(steps=10, lr=0.5), alpha=0.5, beta=0.5, x_box=(0.0, 1.0), lam_box=LAM_BOX
    )
    state = start(settings, splits)
    state, _ = attack.run_attack(settings, splits, attack.set_poison_count(state, BATCH, BATCH), num_iters=2)
    traced = counting_apply.count
    for n_active in (0, 2 * BATCH, 3 * BATCH):
        state, _ = attack.run_attack(settings, splits, attack.set_poison_count(state, n_active, BATCH), num_iters=2)
    assert counting_apply.count == traced


def test_active_iters_run_chunks_of_any_length_in_one_program(splits, trace_counter):
    """``run_attack(num_iters=N, active_iters=n)`` is ``run_attack(num_iters=n)`` with zero info after
    the first ``n``, for every ``n`` through one compiled program (what the sweep's chunks use)."""
    lr = models.logistic_regression(64)
    counting_apply = trace_counter(lr.apply)
    model = models.Model(lr.name, lr.init, counting_apply, lr.layers, lr.random_init)
    settings = attack.AttackSettings(
        model, RMD(steps=10, lr=0.5), alpha=0.5, beta=0.5, x_box=(0.0, 1.0), lam_box=LAM_BOX
    )
    state = attack.set_poison_count(start(settings, splits), BATCH, BATCH)
    chunked = {}
    for n in (3, 0, 5):
        chunked[n] = attack.run_attack(settings, splits, state, num_iters=5, active_iters=n, update_lam=True)
        if n == 3:
            traced = counting_apply.count
    assert counting_apply.count == traced  # n = 0 and 5 reuse the program of n = 3
    for n, (got, info) in chunked.items():
        want, want_info = (
            attack.run_attack(settings, splits, state, num_iters=n, update_lam=True) if n else (state, None)
        )
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        if n:
            np.testing.assert_allclose(info.val_loss[:, :n], want_info.val_loss, rtol=1e-6)
        assert not np.any(np.asarray(info.val_loss[:, n:])) and not np.any(np.asarray(info.finite[:, n:]))


def test_ift_hypergradients_drive_the_attack_too(splits):
    settings = attack.AttackSettings(
        models.logistic_regression(64),
        IFT(steps=300, lr=1.0, cg_iters=50),
        alpha=0.5,
        beta=0.5,
        x_box=(0.0, 1.0),
        lam_box=LAM_BOX,
    )
    state = attack.set_poison_count(start(settings, splits), BATCH, BATCH)
    before = attack.attack_objective(settings, splits, state)
    state, info = attack.run_attack(settings, splits, state, num_iters=10, update_lam=False)
    assert bool(jnp.all(attack.attack_objective(settings, splits, state) > before))
    assert float(info.stats["adjoint_residual"].max()) < 1e-3


@pytest.mark.slow
def test_mlp_attack_with_per_layer_lambda(splits):
    settings = attack.AttackSettings(
        models.mlp(64, hidden=(8, 4)), RMD(steps=30, lr=0.5), alpha=0.5, beta=0.5, x_box=(0.0, 1.0), lam_box=LAM_BOX
    )
    state = attack.set_poison_count(start(settings, splits), BATCH, BATCH)
    assert state.log_lam.shape == (4, 3)
    new, info = attack.run_attack(settings, splits, state, num_iters=3)
    assert bool(jnp.all(info.finite)) and not np.array_equal(new.key, state.key)  # keys threaded
    assert not bool(jnp.all(new.log_lam[:, 0] == new.log_lam[:, 2]))  # one λ per layer moves on its own


def test_divergent_inner_training_is_reported_not_applied(splits):
    settings = attack.AttackSettings(
        models.logistic_regression(64), RMD(steps=60, lr=500.0), alpha=0.5, beta=0.5, x_box=(0.0, 1.0), lam_box=LAM_BOX
    )
    state = attack.set_poison_count(start(settings, splits, log_lam=LAM_BOX[1]), BATCH, BATCH)
    new, info = attack.run_attack(settings, splits, state, num_iters=2)
    assert int(new.nonfinite_steps.min()) == 2 and not bool(info.finite.any())
    np.testing.assert_array_equal(new.xp, state.xp)
    np.testing.assert_array_equal(new.log_lam, state.log_lam)


def test_poisoned_training_set_replaces_rows(lr_settings, splits):
    state = attack.set_poison_count(start(lr_settings, splits), BATCH, BATCH)
    x, y, weights = attack.poisoned_training_set(splits, state)
    assert weights is None and x.shape == splits.x_train.shape
    for s in range(4):
        idx = np.asarray(state.replace_idx[s])
        np.testing.assert_array_equal(x[s, idx[:BATCH]], state.xp[s, :BATCH])
        np.testing.assert_array_equal(y[s, idx[:BATCH]], state.yp[s, :BATCH])
        untouched = np.setdiff1d(np.arange(N_TRAIN), idx[:BATCH])
        np.testing.assert_array_equal(x[s, untouched], splits.x_train[s, untouched])


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(alpha=0.0), r"alpha must be a finite number > 0, got 0.0"),
        (dict(beta=float("nan")), r"beta must be a finite number > 0, got nan"),
        (dict(x_box=(1.0, 0.0)), r"x_box must be a pair \(low, high\) .* low < high, got \(1.0, 0.0\)"),
        (dict(lam_box=(-8.0,)), r"lam_box must be a pair"),
        (dict(method="rmd"), r"method must be an engine.Method \(RMD\(...\), IFT\(...\), Implicit\(...\)\), got 'rmd'"),
    ],
)
def test_bad_settings(bad, message):
    kwargs = dict(
        model=models.logistic_regression(4),
        method=RMD(steps=5, lr=0.1),
        alpha=0.5,
        beta=0.5,
        x_box=(0.0, 1.0),
        lam_box=LAM_BOX,
    )
    with pytest.raises((ValueError, TypeError), match=message):
        attack.AttackSettings(**{**kwargs, **bad})


def test_bad_poison_count(lr_settings, splits):
    with pytest.raises(
        ValueError, match=r"n_poison must be an integer in \[0, min\(n_train, n_val\)\] = \[0, 60\], got 61"
    ):
        attack.init_attack(lr_settings, keys_for(range(4)), splits, 61, 0.0)
    with pytest.raises(ValueError, match=r"keys must hold one key per split: 4 splits"):
        attack.init_attack(lr_settings, keys_for(range(3)), splits, 5, 0.0)


# -- λ learning and the victim ---------------------------------------------------------------


def test_cv_curve_matches_a_hand_computed_fold_average(splits):
    model = models.logistic_regression(64)
    grid = jnp.asarray([-4.0, 0.0, 4.0])
    keys = keys_for(range(4))
    best, curve = hyperopt.cv_log_lambda(model, splits.x_train, splits.y_train, keys, grid, folds=3, steps=30, lr=0.5)
    assert curve.shape == (4, 3) and best.shape == (4,)
    np.testing.assert_array_equal(best, grid[jnp.argmin(curve, axis=1)])
    # Seed 0, grid value 0: redo the three folds by hand.
    x, y, n = np.asarray(splits.x_train[0]), np.asarray(splits.y_train[0]), N_TRAIN
    perm_key, _ = jax.random.split(keys[0])
    fold_of = np.zeros(n, int)
    fold_of[np.asarray(jax.random.permutation(perm_key, n))] = np.arange(n) % 3
    losses = []
    for f in range(3):
        tr, ho = fold_of != f, fold_of == f
        w, b = np.zeros(64), 0.0
        for _ in range(30):
            z = x[tr] @ w + b
            r = 1 / (1 + np.exp(-z)) - y[tr]
            w, b = w - 0.5 * (x[tr].T @ r + w) / tr.sum(), b - 0.5 * r.sum() / tr.sum()
        z = x[ho] @ w + b
        losses.append(np.mean(np.logaddexp(0, z) - y[ho] * z))
    np.testing.assert_allclose(curve[0, 1], np.mean(losses), rtol=1e-4)


def test_victim_on_clean_digits_is_accurate(splits):
    model = models.logistic_regression(64)
    m = victims.evaluate_victim(
        model,
        splits.x_train,
        splits.y_train,
        jnp.full((4, 1), -8.0),
        keys_for(range(4)),
        splits.x_test,
        splits.y_test,
        lr=0.5,
        epochs=30,
    )
    assert m.error.shape == (4,) and float(m.error.max()) < 0.1
    assert bool(m.finite.all())
    assert float(m.sq_norm.min()) > 0 and m.sq_norm_per_weight.shape == (4, 1)
    np.testing.assert_allclose(m.sq_norm_per_weight, m.sq_norm / 64, rtol=1e-6)


def test_stronger_lambda_shrinks_victim_weights(splits):
    model = models.mlp(64, hidden=(8, 4))
    run = lambda lam: victims.evaluate_victim(
        model,
        splits.x_train,
        splits.y_train,
        jnp.full((4, 3), lam),
        keys_for(range(4)),
        splits.x_test,
        splits.y_test,
        lr=0.5,
        epochs=20,
    )
    weak, strong = run(-8.0), run(math.log(200.0))
    assert bool(jnp.all(strong.sq_norm < weak.sq_norm))


def test_classification_metrics_by_hand():
    logits = jnp.asarray([2.0, -1.0, 0.5, -3.0, 1.0])
    y = jnp.asarray([1.0, 1.0, 0.0, 0.0, 0.0])  # predictions 1, 0, 1, 0, 1
    error, fpr, fnr = victims.classification_metrics(logits, y)
    assert float(error) == pytest.approx(3 / 5)
    assert float(fpr) == pytest.approx(2 / 3) and float(fnr) == pytest.approx(1 / 2)
