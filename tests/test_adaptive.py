"""The adaptive attacker (``attack.adaptive=project``): its poison points stay inside the sphere ∩ slab ∩
box of the sanitisers, so the oracle sphere and slab sanitisers at the same percentile remove none
of them, where they remove the non-adaptive attack's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poison_jax import engine
from poison_jax.experiments import config, sweep
from poison_jax.experiments.checked import ConfigError
from poison_jax.poisoning import attack, data, defences, feasible, models, outer
from tests.tiny import tiny

ONE = {"sweep.settings": ("small",), "attack.num_batches": 1, "attack.iters_fixed": 3}
ORACLE = {"defence.statistics": "oracle", "defence.rule": "percentile", "defence.rule.q": 90.0}
PROJECT = {"attack.adaptive": "project", "attack.adaptive.statistics": "oracle", "attack.adaptive.q": 90.0}


def _removed(overrides, tmp_path):
    records = sweep.run_sweep(tiny({**ONE, **overrides}), tmp_path, progress=False, log=lambda _: None)
    poisoned = next(r for r in records if r["cell"] == 1)
    return poisoned["per_seed"]["defence_poison_removed"], poisoned["mean"]["error"]


@pytest.mark.parametrize("defence", ["sphere", "slab"])
def test_the_projected_attack_passes_the_oracle_sanitiser_the_plain_one_does_not(tmp_path, defence):
    plain, _ = _removed({"defence": defence, **ORACLE}, tmp_path / "plain")
    adaptive, _ = _removed({"defence": defence, **ORACLE, **PROJECT}, tmp_path / "adaptive")
    assert adaptive == [0, 0]
    assert sum(plain) > 0  # the non-adaptive poison points (flipped labels) lie outside


def test_data_dependent_bounds_are_those_of_the_poisoned_set_before_the_step():
    c = tiny({**ONE, "attack.adaptive": "project"})
    s = sweep.Sweep(c)
    state = s.placed(attack.set_poison_count(s.fresh_state(jnp.full((len(s.seeds), 1), -8.0)), 7, 7))
    x, y, weights = attack.poisoned_training_set(s.splits, state, s.settings.mode)
    present = jnp.ones(y.shape, bool) if weights is None else weights > 0
    fs = s.settings.feasible
    after, _ = attack.poison_step(s.settings, s.splits, state, update_xp=True, update_lam=False)
    for seed in range(c.sweep.num_seeds):
        bounds = fs.bounds(x[seed], y[seed], present[seed])
        xp, yp = np.asarray(after.xp[seed]), np.asarray(after.yp[seed]).astype(int)
        centred = xp - np.asarray(bounds.centroids)[yp]
        assert np.all(np.linalg.norm(centred, axis=1) <= np.asarray(bounds.radius)[yp] * (1 + 1e-4) + 1e-5)
        slab = np.abs(centred @ np.asarray(bounds.direction))
        assert np.all(slab <= np.asarray(bounds.half_width)[yp] * (1 + 1e-4) + 1e-5)
        assert np.all((xp >= s.x_box[0] - 1e-6) & (xp <= s.x_box[1] + 1e-6))


def test_the_adaptive_attack_is_a_field_of_the_hash_and_refused_where_it_cannot_apply():
    plain = tiny(ONE)
    assert config.override(plain, {"attack.adaptive": "none"}).hash() == plain.hash()
    assert config.override(plain, PROJECT).hash() != plain.hash()
    assert isinstance(
        config.override(plain, PROJECT).attack_settings(plain.model.build(64)).feasible, feasible.FeasibleSet
    )
    with pytest.raises(ConfigError, match="the projection is binary"):
        tiny({"attack.adaptive": "project"}, "digits10-lr")
    with pytest.raises(ConfigError, match="attack.adaptive.q"):
        config.override(plain, {**PROJECT, "attack.adaptive.q": 0.0})


def test_the_sanitiser_keeps_what_the_projection_returns():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(60, 5)), jnp.float32)
    y = jnp.asarray(np.arange(60) % 2, jnp.float32)
    present = jnp.ones(60, bool)
    fs = feasible.FeasibleSet(statistics="oracle", q=80.0)
    xp = jnp.asarray(rng.uniform(-3, 4, size=(8, 5)), jnp.float32)
    yp = jnp.asarray(np.arange(8) % 2, jnp.float32)
    projected = fs.project(xp, yp, fs.bounds(x, y, present), (-1.0, 2.0))
    for score in (defences.Sphere(), defences.Slab()):
        sanitiser = defences.Sanitiser(score, defences.Percentile(80.0), "oracle")
        keep = sanitiser.keep(jnp.concatenate([x, projected]), jnp.concatenate([y, yp]), jnp.ones(68, bool), x, y)
        assert bool(jnp.all(keep[60:]))


def test_a_rejected_step_still_leaves_the_points_feasible():
    # A non-finite hypergradient (here: validation features of NaN) keeps the step's starting point,
    # which the adaptive attacker has projected first, as it does for a line search that accepts no trial.
    c = tiny({**ONE, **PROJECT, "attack.xp_step": "armijo"})
    s = sweep.Sweep(c)
    state = s.placed(attack.set_poison_count(s.fresh_state(jnp.full((len(s.seeds), 1), -8.0)), 7, 7))
    splits = s.splits._replace(x_val=jnp.full_like(s.splits.x_val, jnp.nan))
    after, _ = attack.poison_step(s.settings, splits, state, update_xp=True, update_lam=False)
    assert np.all(np.asarray(after.nonfinite_steps) == 1)
    for seed in range(c.sweep.num_seeds):
        x, y = s.splits.x_train[seed], s.splits.y_train[seed]
        bounds = s.settings.feasible.bounds(x, y, jnp.ones(y.shape, bool))
        xp, yp = np.asarray(after.xp[seed]), np.asarray(after.yp[seed]).astype(int)
        assert not np.array_equal(xp, np.asarray(state.xp[seed]))  # projected, not the start
        distance = np.linalg.norm(xp - np.asarray(bounds.centroids)[yp], axis=1)
        assert np.all(distance <= np.asarray(bounds.radius)[yp] * (1 + 1e-4) + 1e-5)


@pytest.mark.parametrize("k", [1, 2])
def test_concentrated_points_move_as_k_tied_points_per_label(k):
    c = tiny({**ONE, "attack.concentrate": k})
    s = sweep.Sweep(c)
    state = s.placed(attack.set_poison_count(s.fresh_state(jnp.full((len(s.seeds), 1), -8.0)), 7, 4))  # 3 frozen
    after, _ = attack.poison_step(s.settings, s.splits, state, update_xp=True, update_lam=False)
    for seed in range(c.sweep.num_seeds):
        xp, yp = np.asarray(after.xp[seed]), np.asarray(after.yp[seed])
        trainable, frozen = np.asarray(state.trainable[seed]), np.asarray(state.active[seed] & ~state.trainable[seed])
        np.testing.assert_array_equal(xp[frozen], np.asarray(state.xp[seed])[frozen])  # frozen points stay
        for label in np.unique(yp[trainable]):
            rows = xp[trainable & (yp == label)]
            assert len(np.unique(rows, axis=0)) <= k
            assert np.all((rows >= s.x_box[0]) & (rows <= s.x_box[1]))
    assert not np.array_equal(np.asarray(after.xp), np.asarray(state.xp))  # the tied points moved


def test_concentrated_points_slip_past_the_nearest_neighbour_sanitiser(tmp_path):
    knn = {"defence": "knn", "defence.k": 2, "defence.rule": "percentile"}
    plain, _ = _removed(knn, tmp_path / "plain")
    tied, _ = _removed({**knn, "attack.concentrate": 1}, tmp_path / "tied")
    assert sum(tied) < sum(plain)


def test_concentrate_is_a_field_of_the_hash_and_checked():
    plain = tiny(ONE)
    assert config.override(plain, {"attack.concentrate": 0}).hash() == plain.hash()
    assert config.override(plain, {"attack.concentrate": 1}).hash() != plain.hash()
    with pytest.raises(ConfigError, match="attack.concentrate"):
        config.override(plain, {"attack.concentrate": -1})


def _detectability(xp, yp, trainable, x, y):
    """D(Xp) written out: mean over trainable points of ||x_p − μ_y||² / (clean class's mean ||x − μ_y||²)."""
    mu = np.stack([x[y == c].mean(0) for c in (0, 1)])
    spread = np.array([np.mean(np.sum((x[y == c] - mu[c]) ** 2, axis=1)) for c in (0, 1)])
    d = np.sum((xp - mu[yp]) ** 2, axis=1) / spread[yp]
    return np.sum(d * trainable) / max(trainable.sum(), 1)


def test_the_stealthy_step_follows_the_penalised_objective_against_central_differences(x64):
    # SGD ascent x' = x + lr g inside a wide box gives g exactly; g must be ∇(A − γ D) at x, A the
    # validation loss after the RMD training. The model trains in float32 (its init's dtype), so the
    # central differences take eps = 1e-3 (their O(eps²) error is below the tolerance).
    rng = np.random.default_rng(0)
    d, gamma, lr = 3, 0.7, 1e-3
    draw = lambda n: rng.normal(size=(1, n, d))  # noqa: E731
    x_tr, x_val = draw(20), draw(12)
    y_tr, y_val = (x_tr[..., 0] > 0).astype(float), (x_val[..., 0] > 0).astype(float)
    splits = data.Splits(*(jnp.asarray(a) for a in (x_tr, y_tr, x_val, y_val)), None, None)
    settings = attack.AttackSettings(
        models.logistic_regression(d), engine.RMD(steps=30, lr=0.5), alpha=lr, beta=0.1, x_box=(-50.0, 50.0),
        lam_box=(-8.0, 6.0), xp_step=outer.SGD(), stealth=gamma,
    )  # fmt: skip
    state = attack.set_poison_count(
        attack.init_attack(settings, jax.random.split(jax.random.PRNGKey(0), 1), splits, 2, -2.0), 2, 2
    )
    after, _ = attack.poison_step(settings, splits, state, update_xp=True, update_lam=False)
    g = (np.asarray(after.xp[0]) - np.asarray(state.xp[0])) / lr
    yp, trainable = np.asarray(state.yp[0]).astype(int), np.ones(2)

    def objective(xp):
        a = attack.attack_objective(settings, splits, state._replace(xp=jnp.asarray(xp)[None]))[0]
        return float(a) - gamma * _detectability(xp, yp, trainable, x_tr[0], y_tr[0].astype(int))

    x0, eps = np.asarray(state.xp[0]), 1e-3
    fd = np.zeros_like(x0)
    for idx in np.ndindex(x0.shape):
        step = np.zeros_like(x0)
        step[idx] = eps
        fd[idx] = (objective(x0 + step) - objective(x0 - step)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=2e-3, atol=1e-5)


def test_stealth_trades_strength_for_points_the_sphere_keeps(tmp_path):
    sphere = {"defence": "sphere", **ORACLE}
    plain, _ = _removed(sphere, tmp_path / "plain")
    stealthy, _ = _removed({**sphere, "attack.stealth": 20.0}, tmp_path / "stealthy")
    assert sum(stealthy) < sum(plain)
    assert config.override(tiny(ONE), {"attack.stealth": 0.0}).hash() == tiny(ONE).hash()
    with pytest.raises(ConfigError, match="attack.stealth"):
        config.override(tiny(ONE), {"attack.stealth": -1.0})


def test_the_projection_needs_two_classes():
    with pytest.raises(ValueError, match="feasible must be None with 10 classes"):
        attack.AttackSettings(
            models.logistic_regression(4, num_classes=10), engine.RMD(steps=2, lr=0.1), alpha=0.1, beta=0.1,
            x_box=(0.0, 1.0), lam_box=(-8.0, 6.0), feasible=feasible.FeasibleSet(),
        )  # fmt: skip
