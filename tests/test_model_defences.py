"""Model-based defences: the learner's fits and gradients; the loss defence, TRIM, SEVER and kNN label
sanitisation against planted poison; oracle against data-dependent statistics; absent rows; jit and
vmap over seeds; validation."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from poison_jax import engine
from poison_jax.poisoning import defences, losses, model_defences, models, victims
from poison_jax.poisoning.model_defences import LabelSanitiser, Learner, LossSanitiser, Sever, Trim

D = 3
CLASSIFIER = models.logistic_regression(D)
REGRESSION = models.logistic_regression(D, loss=losses.Squared())
VICTIM = victims.ConvergedVictim(engine.NewtonCG(tol=1e-5, maxiter=50))
POISON = 4


def learner(model=CLASSIFIER, log_lam=0.0, seed=0):
    return Learner(model, VICTIM, jnp.array([log_lam], jnp.float32), jax.random.PRNGKey(seed))


def classification(seed=0, per_class=20):
    """Two classes around (∓2, 0, 0) (standard deviation 0.7), then ``POISON`` rows deep inside
    class 0's side (around (−4, 0, 0)) labelled 1. Returns ``x, y, is_poison`` and the clean set."""
    rng = np.random.default_rng(seed)
    y_clean = np.repeat([0.0, 1.0], per_class)
    x_clean = rng.normal(size=(2 * per_class, D)) * 0.7
    x_clean[:, 0] += np.where(y_clean == 0, -2.0, 2.0)
    poison = rng.normal(size=(POISON, D)) * 0.3 + [-4.0, 0.0, 0.0]
    x, y = np.concatenate([x_clean, poison]), np.concatenate([y_clean, np.ones(POISON)])
    is_poison = np.arange(len(y)) >= len(y_clean)
    return *(jnp.asarray(a, jnp.float32) for a in (x, y, x_clean, y_clean)), jnp.asarray(is_poison)


def regression(seed=0, n=40):
    """``y = 2 x_0 − x_1 + 0.5`` plus noise 0.1, then ``POISON`` rows whose targets are 30 too large.
    Returns ``x, y, is_poison`` and the clean set."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + POISON, D))
    y = 2 * x[:, 0] - x[:, 1] + 0.5 + 0.1 * rng.normal(size=n + POISON)
    y[n:] += 30.0
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    return x, y, x[:n], y[:n], jnp.arange(n + POISON) >= n


def label(value):
    """A test id: a function's or model's name, a defence's repr."""
    return getattr(value, "__name__", None) or getattr(value, "name", None) or repr(value)


def run(defence, x, y, x_clean, y_clean, model, present=None):
    present = jnp.ones(len(y), bool) if present is None else present
    return defence.sanitise(x, y, present, x_clean, y_clean, 2, learner(model, -4.0 if model is REGRESSION else 0.0))


# Each removing defence, its data and how many rows it removes (all the poison among them).
REMOVERS = [
    (LossSanitiser(defences.Fraction(0.2)), classification, CLASSIFIER, 5 + 4),  # ceil(0.2·24), ceil(0.2·20)
    (LossSanitiser(defences.Fraction(0.09)), regression, REGRESSION, POISON),  # one group: ceil(0.09·44)
    (LossSanitiser(defences.Percentile(95.0), "oracle"), regression, REGRESSION, None),
    (Trim(f=0.09), regression, REGRESSION, POISON),  # ceil(0.09·44) = 4
    (Trim(f=0.1), classification, CLASSIFIER, 5),  # trimmed loss: ceil(0.1·44)
    (Sever(f=0.1, rounds=2), classification, CLASSIFIER, 2 * 3),  # ceil(0.1·44/2) a round
    (Sever(f=0.1, rounds=2), regression, REGRESSION, 2 * 3),
]


@pytest.mark.parametrize(("defence", "make", "model", "removed"), REMOVERS, ids=label)
def test_each_defence_removes_the_planted_poison(defence, make, model, removed):
    x, y, x_clean, y_clean, is_poison = make()
    keep, labels = run(defence, x, y, x_clean, y_clean, model)
    stats = defences.removal_stats(keep, jnp.ones(len(y), bool), is_poison)
    assert float(stats["recall"]) == 1.0
    if removed is not None:
        assert int((~keep).sum()) == removed
    else:  # the oracle's 95th percentile of the clean losses
        assert int(stats["clean_removed"]) <= 3
    np.testing.assert_array_equal(labels, y)


def test_trim_recovers_the_clean_fit():
    x, y, x_clean, y_clean, is_poison = regression()
    keep, _ = run(Trim(f=0.09), x, y, x_clean, y_clean, REGRESSION)
    np.testing.assert_array_equal(keep, ~is_poison)
    fit = learner(REGRESSION, -4.0)
    trimmed, clean = fit.fit(x, y, keep.astype(x.dtype)), fit.fit(x_clean, y_clean, jnp.ones(len(y_clean)))
    np.testing.assert_allclose(ravel(trimmed), ravel(clean), atol=1e-3)
    assert np.abs(ravel(fit.fit(x, y, jnp.ones(len(y)))) - ravel(clean)).max() > 1.0  # the poison moves it


def ravel(params):
    return np.asarray(ravel_pytree(params)[0])


def test_the_learner_fits_the_weighted_rows_and_gives_each_rows_loss_gradient():
    x, y, *_ = classification()
    fit = learner()
    weights = (jnp.arange(len(y)) % 3 != 0).astype(x.dtype)
    params = fit.fit(x, y, weights)
    subset = fit.fit(x[weights > 0], y[weights > 0], jnp.ones(int(weights.sum())))
    np.testing.assert_allclose(ravel(params), ravel(subset), atol=1e-5)
    scores = CLASSIFIER.apply(params, x)
    np.testing.assert_allclose(fit.losses(params, x, y), losses.Logistic()(scores, y), rtol=1e-6)
    grads = fit.row_grads(params, x, y)
    by_hand = (jax.nn.sigmoid(scores) - y)[:, None] * jnp.concatenate([jnp.ones((len(y), 1)), x], 1)  # (bias, kernel)
    np.testing.assert_allclose(grads, by_hand, rtol=1e-5, atol=1e-6)


def test_sever_scores_the_squared_projection_on_the_top_singular_vector_of_the_kept_rows():
    rng = np.random.default_rng(3)
    grads = jnp.asarray(rng.normal(size=(12, 4)) * [5.0, 1.0, 0.5, 0.1], jnp.float32)
    keep = jnp.arange(12) < 9
    kept = np.asarray(grads)[:9]
    centred = kept - kept.mean(0)
    v = np.linalg.svd(centred)[2][0]
    expected = ((np.asarray(grads) - kept.mean(0)) @ v) ** 2
    np.testing.assert_allclose(Sever.scores(grads, keep), expected, rtol=1e-4)


def test_oracle_and_data_dependent_loss_statistics_differ_when_the_poison_is_many():
    """Fifteen mislabelled rows in class 0: the clean fit's losses put all of them above the clean
    90th percentile, while their own class's 90th percentile is theirs and removes few."""
    x, y, x_clean, y_clean, _ = classification()
    poison = jnp.asarray(np.random.default_rng(4).normal(size=(15, D)) * 0.3 + [2.0, 0.0, 0.0], jnp.float32)
    x, y = jnp.concatenate([x_clean, poison]), jnp.concatenate([y_clean, jnp.zeros(15)])
    present, is_poison = jnp.ones(len(y), bool), jnp.arange(len(y)) >= len(y_clean)
    recall = {}
    for statistics in defences.STATISTICS:
        keep, _ = run(LossSanitiser(defences.Percentile(90.0), statistics), x, y, x_clean, y_clean, CLASSIFIER)
        recall[statistics] = float(defences.removal_stats(keep, present, is_poison)["recall"])
    assert recall["oracle"] == 1.0
    assert recall["data-dependent"] < 0.5


def test_label_sanitiser_relabels_the_flipped_rows_and_leaves_the_clean_ones():
    x, y, x_clean, y_clean, is_poison = classification()
    keep, labels = run(LabelSanitiser(k=10, eta=0.6), x, y, x_clean, y_clean, CLASSIFIER)
    np.testing.assert_array_equal(keep, jnp.ones(len(y), bool))
    np.testing.assert_array_equal(labels, jnp.where(is_poison, 0.0, y))
    stats = model_defences.relabel_stats(y, labels, keep, is_poison)
    assert {k: int(v) for k, v in stats.items()} == {"poison_relabelled": POISON, "clean_relabelled": 0}
    _, strict = run(LabelSanitiser(k=10, eta=1.0), x, y, x_clean, y_clean, CLASSIFIER)
    np.testing.assert_array_equal(strict, y)  # 3 of a poison row's 10 neighbours are the other poison rows


def test_label_sanitiser_votes_of_the_k_nearest_other_present_rows():
    """On a line: rows 0..4 labelled 0 except row 2, row 5 far off; k = 2 present neighbours vote."""
    x = jnp.array([[0.0], [1.0], [2.0], [3.0], [4.0], [100.0]])
    y = jnp.array([0, 0, 1, 0, 0, 1])
    present = jnp.array([True, True, True, True, True, False])
    _, labels = LabelSanitiser(k=2, eta=1.0).sanitise(x, y, present, x, y, 2, learner())
    assert labels.tolist() == [0, 0, 0, 0, 0, 1]  # row 1: rows 0 and 2 vote 0 and 1: half, kept
    assert labels.dtype == y.dtype


def pad(x, y, present, x_fill, y_fill, rows=5):
    return (
        jnp.concatenate([x, jnp.full((rows, x.shape[1]), x_fill, x.dtype)]),
        jnp.concatenate([y, jnp.full(rows, y_fill, y.dtype)]),
        jnp.concatenate([present, jnp.zeros(rows, bool)]),
    )


EVERY = [(defence, make, model) for defence, make, model, _ in REMOVERS] + [
    (LabelSanitiser(k=5), classification, CLASSIFIER)
]


@pytest.mark.parametrize(("defence", "make", "model"), EVERY, ids=label)
def test_absent_rows_change_nothing_and_are_never_kept(defence, make, model):
    x, y, x_clean, y_clean, _ = make()
    present = jnp.ones(len(y), bool).at[3].set(False)
    x = x.at[3].set(jnp.nan)
    keep, labels = run(defence, x, y, x_clean, y_clean, model, present)
    assert not keep[3]
    for x_fill, y_fill in [(jnp.nan, jnp.nan), (1e30, 7.0)]:
        xp, yp, pp = pad(x, y, present, x_fill, y_fill)
        padded_keep, padded_labels = run(defence, xp, yp, x_clean, y_clean, model, pp)
        np.testing.assert_array_equal(padded_keep[: len(y)], keep)
        assert not padded_keep[len(y) :].any()
        np.testing.assert_array_equal(padded_labels[: len(y)], labels)


@pytest.mark.parametrize(("defence", "make", "model"), EVERY, ids=label)
def test_jit_and_vmap_over_seeds_match_per_seed_calls(defence, make, model):
    sets = [make(seed) for seed in (1, 2)]
    xs, ys = jnp.stack([s[0] for s in sets]), jnp.stack([s[1] for s in sets])
    x_clean, y_clean = sets[0][2], sets[0][3]
    present = jnp.ones(ys.shape, bool).at[1, :2].set(False)  # different rows present in each seed
    log_lams = jnp.array([[0.0], [-1.0]], jnp.float32) - (4.0 if model is REGRESSION else 0.0)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)

    def one(x, y, p, log_lam, key):
        return defence.sanitise(x, y, p, x_clean, y_clean, 2, Learner(model, VICTIM, log_lam, key))

    batched = jax.jit(jax.vmap(one))(xs, ys, present, log_lams, keys)
    for s in range(2):
        alone = one(xs[s], ys[s], present[s], log_lams[s], keys[s])
        np.testing.assert_array_equal(batched.keep[s], alone.keep)
        np.testing.assert_array_equal(batched.y[s], alone.y)
    assert not batched.keep[1, :2].any()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Trim(f=1.0), "Trim f must be a number in [0, 1), got 1.0"),
        (lambda: Trim(f=-0.1), "got -0.1"),
        (lambda: Trim(iters=0), "Trim iters must be a positive integer, got 0"),
        (lambda: Sever(f=float("nan")), "Sever f must be a number in [0, 1), got nan"),
        (lambda: Sever(rounds=2.0), "Sever rounds must be a positive integer, got 2.0"),
        (lambda: LossSanitiser(rule=0.05), "LossSanitiser rule must be a removal rule"),
        (lambda: LossSanitiser(statistics="clean"), "one of oracle, data-dependent, got 'clean'"),
        (lambda: LabelSanitiser(k=0), "LabelSanitiser k must be a positive integer, got 0"),
        (lambda: LabelSanitiser(eta=0.0), "LabelSanitiser eta must be a number in (0, 1]"),
        (lambda: LabelSanitiser(eta=True), "got True"),
    ],
)
def test_bad_values_raise_naming_the_value(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_label_sanitiser_refuses_a_regression_and_too_many_neighbours():
    x, y, x_clean, y_clean, _ = regression()
    with pytest.raises(ValueError, match="LabelSanitiser learner's task must be classification"):
        run(LabelSanitiser(), x, y, x_clean, y_clean, REGRESSION)
    x, y, x_clean, y_clean, _ = classification()
    with pytest.raises(ValueError, match=re.escape(f"LabelSanitiser k must be below the {len(y)} rows")):
        run(LabelSanitiser(k=len(y)), x, y, x_clean, y_clean, CLASSIFIER)


def test_the_table_names_each_model_defence():
    assert model_defences.MODEL_DEFENCES == {
        "loss": LossSanitiser,
        "trim": Trim,
        "sever": Sever,
        "label": LabelSanitiser,
    }
