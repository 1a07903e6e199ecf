"""The relaxed sanitiser (adaptive attack (d)): soft keep-weights that tend to the hard sanitiser,
stay finite on absent rows, and enter the inner problem so the hypergradient sees them (checked
against central differences in float64)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poison_jax import engine
from poison_jax.poisoning import attack, data, defences, losses, models, outer
from poison_jax.poisoning.relaxed import Relaxed

SCORES = {"sphere": defences.Sphere(), "slab": defences.Slab(), "knn": defences.KNN(3)}
KEY = jax.random.PRNGKey(0)
RELAXABLE = [(s, st) for s in SCORES for st in defences.STATISTICS]


def _blobs(rng, n, d=3):
    """``n`` rows of two Gaussian classes (labels as floats, like the attack's), a few far out."""
    y = np.arange(n) % 2
    x = rng.normal(size=(n, d)) + 3.0 * y[:, None]
    x[::7] += rng.normal(scale=4.0, size=(len(x[::7]), d))
    return jnp.asarray(x), jnp.asarray(y, float)


def test_construction_refuses_what_it_cannot_relax():
    with pytest.raises(ValueError, match=r"Relaxed score must be Sphere\(\), Slab\(\) or KNN\(k\), got SVD"):
        Relaxed(defences.Sanitiser(defences.SVD()))
    for bad in (0.0, -1.0, math.inf, math.nan, True, "0.1"):
        with pytest.raises(ValueError, match="Relaxed temperature must be a finite number > 0"):
            Relaxed(defences.Sanitiser(defences.Sphere()), bad)
    with pytest.raises(TypeError, match="Relaxed sanitiser must be a poison_jax.poisoning.defences.Sanitiser"):
        Relaxed(defences.Sphere())
    common = dict(method=engine.RMD(steps=2, lr=0.1), alpha=0.1, beta=0.1, x_box=(0.0, 1.0), lam_box=(-8.0, 6.0))
    slab = Relaxed(defences.Sanitiser(defences.Slab()))
    with pytest.raises(TypeError, match="relaxed must be None or a poison_jax.poisoning.relaxed.Relaxed"):
        attack.AttackSettings(models.logistic_regression(4), relaxed=slab.sanitiser, **common)
    with pytest.raises(ValueError, match="relaxed must be None or not a slab with 10 classes"):
        attack.AttackSettings(models.logistic_regression(4, num_classes=10), relaxed=slab, **common)
    with pytest.raises(ValueError, match="relaxed must be None with a regression"):
        attack.AttackSettings(models.logistic_regression(4, loss=losses.Squared()), relaxed=slab, **common)


@pytest.mark.parametrize("rule", [defences.Fraction(0.15), defences.Percentile(73.0)], ids=["fraction", "percentile"])
@pytest.mark.parametrize(("score", "statistics"), RELAXABLE)
def test_the_weights_tend_to_the_hard_sanitiser_as_the_temperature_goes_to_zero(score, statistics, rule):
    rng = np.random.default_rng(0)
    x, y = _blobs(rng, 40)
    x_clean, y_clean = _blobs(rng, 30)
    present = jnp.asarray(rng.uniform(size=40) > 0.15)
    sanitiser = defences.Sanitiser(SCORES[score], rule, statistics)
    keep = np.asarray(sanitiser.keep(x, y, present, x_clean, y_clean))
    assert 0 < (~keep & np.asarray(present)).sum()  # the rule removes some rows
    for temperature, atol in ((1e-3, 1e-3), (1e-7, 1e-12)):
        soft = np.asarray(Relaxed(sanitiser, temperature).weights(x, y, present, x_clean, y_clean))
        np.testing.assert_allclose(soft, keep, atol=atol)
    soft = np.asarray(Relaxed(sanitiser, 1.0).weights(x, y, present, x_clean, y_clean))
    assert np.all((soft[present] > 0) & (soft[present] < 1)) and np.all(soft[~np.asarray(present)] == 0)
    assert soft[keep].min() > soft[np.asarray(present) & ~keep].max() - 0.5  # soft, but ordered like the rule


@pytest.mark.parametrize(("score", "statistics"), RELAXABLE)
def test_absent_rows_of_nan_weigh_zero_with_finite_gradients(score, statistics, x64):
    rng = np.random.default_rng(1)
    x, y = _blobs(rng, 24)
    x_clean, y_clean = _blobs(rng, 20)
    present = jnp.arange(24) % 5 != 0
    x = jnp.where(present[:, None], x, jnp.nan)
    relaxed = Relaxed(defences.Sanitiser(SCORES[score], defences.Fraction(0.1), statistics), 0.3)
    signs = jnp.asarray(rng.normal(size=24))

    def total(x):
        return jnp.sum(signs * relaxed.weights(x, y, present, x_clean, y_clean))

    weights = relaxed.weights(x, y, present, x_clean, y_clean)
    grad = jax.grad(total)(x)
    assert bool(jnp.all(jnp.isfinite(weights))) and bool(jnp.all(weights[~present] == 0))
    assert bool(jnp.all(jnp.isfinite(grad))) and bool(jnp.all(grad[~present] == 0))
    assert float(jnp.abs(grad[present]).max()) > 1e-3


def _problem(relaxed, mode=attack.Replace()):
    """One float64 split (20 training rows, 12 validation rows, 3 features) with 2 active poison
    points, as ``(data, theta)``; the points sit where the sanitiser's weights are steep."""
    rng = np.random.default_rng(2)
    x_tr, y_tr = _blobs(rng, 20)
    x_val, y_val = _blobs(rng, 12)
    splits = data.Splits(x_tr[None], y_tr[None], x_val[None], y_val[None], None, None)
    settings = attack.AttackSettings(
        models.logistic_regression(3), engine.RMD(steps=2, lr=0.1), alpha=0.1, beta=0.1, x_box=(-50.0, 50.0),
        lam_box=(-8.0, 6.0), mode=mode, relaxed=relaxed,
    )  # fmt: skip
    state = attack.init_attack(settings, jax.random.split(jax.random.PRNGKey(0), 1), splits, 2, -2.0)
    state = jax.tree_util.tree_map(lambda a: a[0], attack.set_poison_count(state, 2, 2))
    state = state._replace(xp=jnp.asarray([[2.5, 1.0, 2.0], [0.5, 2.0, -0.5]]))
    d = attack.poison_data(x_tr, y_tr, x_val, y_val, state, mode)
    return d, {"xp": state.xp, "log_lam": jnp.asarray([-2.0])}


def _central_differences(f, x, eps):
    fd = np.zeros(x.shape)
    for idx in np.ndindex(x.shape):
        step = jnp.zeros(x.shape).at[idx].set(eps)
        fd[idx] = (f(x + step) - f(x - step)) / (2 * eps)
    return fd


CHECKS = {
    "sphere data-dependent, rmd": ("sphere", "data-dependent", defences.Fraction(0.1), engine.RMD(steps=40, lr=1.0)),
    "slab oracle, rmd": ("slab", "oracle", defences.Percentile(80.0), engine.RMD(steps=40, lr=1.0)),
    "knn oracle, rmd": ("knn", "oracle", defences.Percentile(70.0), engine.RMD(steps=40, lr=1.0)),
    "knn data-dependent, rmd": ("knn", "data-dependent", defences.Percentile(70.0), engine.RMD(steps=40, lr=1.0)),
    "sphere data-dependent, implicit": (
        "sphere",
        "data-dependent",
        defences.Percentile(70.0),
        engine.Implicit(engine.NewtonCG(tol=1e-12), cg_tol=1e-13),
    ),  # fmt: skip
    "slab oracle, implicit": (
        "slab",
        "oracle",
        defences.Fraction(0.1),
        engine.Implicit(engine.NewtonCG(tol=1e-12), cg_tol=1e-13),
    ),
}


@pytest.mark.parametrize("case", CHECKS)
def test_the_hypergradient_through_the_relaxed_inner_problem_matches_central_differences(case, x64):
    # RMD differentiates the unrolled training exactly, Implicit a solve converged to 1e-12: either
    # way dA/dXp, d(weights)/dXp included, is the derivative of the objective differenced here.
    score, statistics, rule, method = CHECKS[case]
    relaxed = Relaxed(defences.Sanitiser(SCORES[score], rule, statistics), temperature=0.5)
    d, theta = _problem(relaxed)
    inner, outer_loss = attack.poisoning_losses(models.logistic_regression(3), relaxed)
    w0 = jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float64), models.logistic_regression(3).init(jax.random.PRNGKey(0))
    )
    result = engine.hypergrad(method, inner, outer_loss, w0, theta, d)
    objective = jax.jit(lambda xp: outer_loss(method.fit(inner, w0, {**theta, "xp": xp}, d), theta, d))
    fd = _central_differences(objective, theta["xp"], 1e-5)
    np.testing.assert_allclose(result.grad["xp"], fd, rtol=1e-6, atol=1e-9)
    plain = engine.hypergrad(method, *attack.poisoning_losses(models.logistic_regression(3)), w0, theta, d)
    assert np.abs(np.asarray(result.grad["xp"] - plain.grad["xp"])).max() > 1e-3  # the weights matter


@pytest.mark.parametrize("mode", [attack.Replace(), attack.Add()], ids=["replace", "add"])
def test_the_relaxed_inner_loss_is_the_mean_over_the_rows_the_sanitiser_keeps(mode, x64):
    model = models.logistic_regression(3)
    assert attack.poisoning_losses(model) is attack.poisoning_losses(model, None)
    assert attack.poisoning_losses(model, relaxed=None) == attack.poisoning_losses(model)
    sanitiser = defences.Sanitiser(defences.Sphere(), defences.Percentile(70.0), "oracle")
    d, theta = _problem(None, mode)
    w = {"layer_0": {"kernel": jnp.asarray([[0.3], [-0.2], [0.1]]), "bias": jnp.asarray([0.05])}}
    plain, _ = attack.poisoning_losses(model)
    x = jnp.concatenate([d.x_train, theta["xp"]])
    y = jnp.concatenate([d.y_train, d.yp])
    presence = jnp.concatenate([d.clean_weight, d.poison_weight])
    rows = model.loss(model.apply(w, x), y)
    penalty = models.penalty(model, w, theta["log_lam"])
    np.testing.assert_allclose(plain(w, theta, d), (jnp.sum(presence * rows) + penalty) / d.size, rtol=1e-12)
    keeps_all, _ = attack.poisoning_losses(
        model, Relaxed(defences.Sanitiser(defences.Sphere(), defences.Fraction(0.0)))
    )
    np.testing.assert_allclose(keeps_all(w, theta, d), plain(w, theta, d), rtol=1e-12)
    keep = sanitiser.keep(x, y, presence > 0, d.x_train, d.y_train)
    assert 0 < int(keep.sum()) < int((presence > 0).sum())
    cold, _ = attack.poisoning_losses(model, Relaxed(sanitiser, 1e-8))
    np.testing.assert_allclose(cold(w, theta, d), (jnp.sum(keep * rows) + penalty) / keep.sum(), rtol=1e-10)


@pytest.fixture(scope="module")
def splits():
    ds = data.load_dataset("digits")
    return data.sample_splits(ds, seeds=[0, 1], n_train=40, n_val=20)


RELAX = Relaxed(defences.Sanitiser(defences.Sphere(), defences.Percentile(90.0), "data-dependent"), 0.2)


def _settings(model, relaxed, **kwargs):
    common = dict(alpha=0.5, beta=0.5, x_box=(0.0, 1.0), lam_box=(-8.0, 6.0), relaxed=relaxed)
    return attack.AttackSettings(model, engine.RMD(steps=10, lr=0.5), **(common | kwargs))


def test_poison_step_ascends_the_relaxed_hypergradient(splits):
    # SGD ascent in a wide box moves Xp by lr · g exactly: g is the relaxed problem's hypergradient.
    model, lr = models.logistic_regression(64), 1.0  # steps of about 1e-3 (float32 Xp)
    settings = _settings(model, RELAX, alpha=lr, x_box=(-50.0, 50.0), xp_step=outer.SGD(), mode=attack.Add())
    state = attack.init_attack(settings, jax.random.split(jax.random.PRNGKey(0), 2), splits, 4, -2.0)
    state = attack.set_poison_count(state, 4, 4)
    after, info = attack.poison_step(settings, splits, state, update_xp=True, update_lam=False)
    assert bool(jnp.all(info.finite))
    inner, outer_loss = attack.poisoning_losses(model, RELAX)
    for seed in range(2):
        one = jax.tree_util.tree_map(lambda a: a[seed], state)
        split = jax.tree_util.tree_map(lambda a: a[seed], splits)
        d = attack.poison_data(split.x_train, split.y_train, split.x_val, split.y_val, one, settings.mode)
        theta = {"xp": one.xp, "log_lam": one.log_lam}
        g = engine.hypergrad(settings.method, inner, outer_loss, model.init(KEY), theta, d).grad["xp"]
        np.testing.assert_allclose((after.xp[seed] - one.xp) / lr, g, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("case", ["knn data-dependent, rmd", "sphere data-dependent, implicit"])
def test_the_attacks_step_follows_the_relaxed_hypergradient(case):
    # The attack hands its solver the weights at theta (one computation a solve) and chains their
    # derivative after the hypergradient: one SGD step in a wide box moves Xp by lr · dA/dXp of the
    # relaxed inner loss differentiated through the weights in every step (float32: the attack's).
    score, statistics, rule, method = CHECKS[case]
    relaxed = Relaxed(defences.Sanitiser(SCORES[score], rule, statistics), temperature=0.5)
    d, theta = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), _problem(relaxed))
    model = models.logistic_regression(3)
    settings = attack.AttackSettings(
        model, method, alpha=1.0, beta=1.0, x_box=(-50.0, 50.0), lam_box=(-8.0, 6.0), xp_step=outer.SGD(),
        relaxed=relaxed,
    )  # fmt: skip
    splits = data.Splits(d.x_train[None], d.y_train[None], d.x_val[None], d.y_val[None], None, None)
    state = attack.init_attack(settings, jax.random.split(jax.random.PRNGKey(0), 1), splits, 2, -2.0)
    state = attack.set_poison_count(state, 2, 2)._replace(xp=theta["xp"][None])
    after, _ = attack.poison_step(settings, splits, state, update_xp=True, update_lam=False)
    one = jax.tree_util.tree_map(lambda a: a[0], state)
    direct = engine.hypergrad(method, *attack.poisoning_losses(model, relaxed), model.init(one.key), theta, d)
    np.testing.assert_allclose(after.xp[0] - theta["xp"], direct.grad["xp"], rtol=1e-3, atol=1e-5)
    assert np.abs(np.asarray(direct.grad["xp"])).max() > 1e-2  # a step that shows


def test_run_attack_jits_and_vmaps_the_relaxed_attack_over_seeds_in_one_program(splits, trace_counter):
    lr = models.logistic_regression(64)
    counting_apply = trace_counter(lr.apply)
    model = models.Model(lr.name, lr.init, counting_apply, lr.layers, lr.random_init)
    settings = _settings(model, RELAX)
    state = attack.init_attack(settings, jax.random.split(jax.random.PRNGKey(0), 2), splits, 6, 0.0)
    state, info = attack.run_attack(settings, splits, attack.set_poison_count(state, 3, 3), num_iters=3)
    traced = counting_apply.count
    same = _settings(model, Relaxed(RELAX.sanitiser, 0.2))  # equal settings, new objects: the same program
    state, info = attack.run_attack(same, splits, attack.set_poison_count(state, 6, 3), num_iters=3)
    assert counting_apply.count == traced
    assert info.val_loss.shape == (2, 3) and bool(jnp.all(jnp.isfinite(info.val_loss)))
    assert bool(jnp.all(info.finite)) and int(jnp.sum(state.nonfinite_steps)) == 0
    assert bool(jnp.all(jnp.isfinite(state.xp))) and bool(jnp.all(jnp.isfinite(state.log_lam)))
