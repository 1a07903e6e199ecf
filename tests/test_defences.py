"""Data-sanitisation defences: the four scores, the two removal rules, oracle and data-dependent
statistics, absent rows, jit and vmap, validation and the removal statistics."""

import fractions
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poison_jax.poisoning import defences
from poison_jax.poisoning.defences import KNN, SVD, Fraction, Percentile, Sanitiser, Slab, Sphere

SCORES = [Sphere(), Slab(), KNN(k=3), SVD(mass=0.95)]
PER_CLASS = 20


def clean_set(seed=0, d=4):
    """Two classes of ``PER_CLASS`` rows around (∓2, 0, ...), spread in the first two features only
    (standard deviation 1; 0.01 in the others): the classes' principal subspace is known."""
    rng = np.random.default_rng(seed)
    scale = np.array([1.0, 1.0] + [0.01] * (d - 2))
    x = rng.normal(size=(2 * PER_CLASS, d)) * scale
    y = np.repeat([0.0, 1.0], PER_CLASS)
    x[:, 0] += np.where(y == 0, -2.0, 2.0)
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)


def with_outlier(x, y):
    """The clean set and one class-0 row far out along the centroids' line and off the subspace."""
    outlier = jnp.zeros((1, x.shape[1])).at[0, 0].set(-14.0).at[0, -1].set(10.0)
    return jnp.concatenate([x, outlier]), jnp.concatenate([y, jnp.zeros(1)]), jnp.ones(len(y) + 1, bool)


# Not SVD with data-dependent statistics: one far outlier is its own class's top singular direction.
@pytest.mark.parametrize(
    ("score", "statistics"),
    [(score, statistics) for score in SCORES for statistics in defences.STATISTICS if not isinstance(score, SVD)]
    + [(SVD(mass=0.95), "oracle")],
    ids=repr,
)
def test_each_score_puts_a_planted_outlier_highest(score, statistics):
    x_clean, y_clean = clean_set()
    x, y, present = with_outlier(x_clean, y_clean)
    ref = (x, y, present) if statistics == "data-dependent" else (x_clean, y_clean, jnp.ones(len(y_clean), bool))
    scores = score.scores(x, y, present, *ref, 2)
    assert scores.shape == (len(y),)
    assert int(jnp.argmax(scores)) == len(y) - 1
    assert jnp.all(jnp.isfinite(scores))


@pytest.mark.parametrize("f", [0.0, 0.05, 0.07, 0.25, 0.5, 0.99])
def test_fraction_removes_ceil_f_n_c_highest_present_rows_per_class(f):
    rng = np.random.default_rng(1)
    y = jnp.asarray(np.repeat([0, 1, 2], [110, 45, 30]))
    present = jnp.asarray(rng.random(len(y)) > 0.1).at[:100].set(True).at[100:110].set(False)  # class 0: 100
    scores = jnp.asarray(rng.normal(size=len(y)), jnp.float32)
    removed = Fraction(f).removed(scores, y, present, scores, y, present, 3)
    assert not jnp.any(removed & ~present)
    for c in range(3):
        members = np.asarray(present & (y == c))
        gone = np.asarray(removed) & members
        assert gone.sum() == math.ceil(fractions.Fraction(str(f)) * int(members.sum()))  # 0.07 · 100: 7
        if 0 < gone.sum() < members.sum():
            assert np.asarray(scores)[gone].min() > np.asarray(scores)[members & ~gone].max()


@pytest.mark.parametrize("q", [95.0, 100.0])
@pytest.mark.parametrize("score", SCORES, ids=repr)
def test_percentile_with_oracle_statistics_removes_the_outlier_and_keeps_the_clean_rows(score, q):
    x_clean, y_clean = clean_set()
    x, y, present = with_outlier(x_clean, y_clean)
    keep = Sanitiser(score, Percentile(q), "oracle").keep(x, y, present, x_clean, y_clean)
    assert not keep[-1]
    assert int(keep[:-1].sum()) >= (len(y_clean) if q == 100 else 0.9 * len(y_clean))


def pad(x, y, present, x_fill, y_fill, rows=7):
    """The set with ``rows`` absent rows appended, holding ``x_fill`` and labels ``y_fill``."""
    return (
        jnp.concatenate([x, jnp.full((rows, x.shape[1]), x_fill, x.dtype)]),
        jnp.concatenate([y, jnp.full(rows, y_fill, y.dtype)]),
        jnp.concatenate([present, jnp.zeros(rows, bool)]),
    )


@pytest.mark.parametrize("rule", [Fraction(0.1), Percentile(80.0)], ids=repr)
@pytest.mark.parametrize("statistics", defences.STATISTICS)
@pytest.mark.parametrize("score", SCORES, ids=repr)
def test_absent_rows_change_nothing(score, statistics, rule):
    x_clean, y_clean = clean_set()
    x, y, present = with_outlier(x_clean, y_clean)
    n = len(y)
    sanitiser = Sanitiser(score, rule, statistics)
    keep = sanitiser.keep(x, y, present, x_clean, y_clean)
    scores = score.scores(x, y, present, x, y, present, 2)
    for x_fill, y_fill in [(jnp.nan, 0.0), (1e30, 1.0), (-3.0, 7.0)]:
        xp, yp, pp = pad(x, y, present, x_fill, y_fill)
        assert np.array_equal(sanitiser.keep(xp, yp, pp, x_clean, y_clean)[:n], keep)
        padded_scores = score.scores(xp, yp, pp, xp, yp, pp, 2)[:n]
        np.testing.assert_allclose(padded_scores, scores, rtol=1e-5, atol=1e-5)


def test_oracle_and_data_dependent_statistics_differ_when_the_poison_shifts_a_class():
    """A third of class 0 moved far away drags the data-dependent centroid and radius with it: the
    oracle (clean centroid, clean radius) removes every poison row, the data-dependent one few."""
    x_clean, y_clean = clean_set()
    poison = jnp.zeros((10, x_clean.shape[1])).at[:, 0].set(6.0)
    x, y = jnp.concatenate([x_clean, poison]), jnp.concatenate([y_clean, jnp.zeros(10)])
    present, is_poison = jnp.ones(len(y), bool), jnp.arange(len(y)) >= len(y_clean)
    recall = {}
    for statistics in defences.STATISTICS:
        keep = Sanitiser(Sphere(), Percentile(90.0), statistics).keep(x, y, present, x_clean, y_clean)
        recall[statistics] = float(defences.removal_stats(keep, present, is_poison)["recall"])
    assert recall["oracle"] == 1.0
    assert recall["data-dependent"] < 0.5


@pytest.mark.parametrize(("statistics", "rule"), [("oracle", Percentile(90.0)), ("data-dependent", Fraction(0.1))])
@pytest.mark.parametrize("score", SCORES, ids=repr)
def test_jit_and_vmap_over_seeds_match_a_python_loop(score, statistics, rule):
    x_clean, y_clean = clean_set()
    sets = [with_outlier(*clean_set(seed)) for seed in (1, 2, 3)]
    xs, ys, ps = (jnp.stack(parts) for parts in zip(*sets, strict=True))
    ps = ps.at[0, -1].set(False).at[2, :3].set(False)  # a different set of rows present each seed
    sanitiser = Sanitiser(score, rule, statistics)

    def keep(x, y, present):
        return sanitiser.keep(x, y, present, x_clean, y_clean, 2)

    loop = jnp.stack([keep(x, y, p) for x, y, p in zip(xs, ys, ps, strict=True)])
    assert np.array_equal(jax.jit(jax.vmap(keep))(xs, ys, ps), loop)
    assert np.array_equal(jax.jit(keep)(xs[1], ys[1], ps[1]), loop[1])


def test_knn_sums_the_k_nearest_present_same_class_distances_excluding_the_row_itself():
    """Against brute force: the row itself is left out when the reference is the scored array (a
    data-dependent sanitiser), and is its own nearest neighbour (distance 0) in a distinct copy."""
    x, y = clean_set(seed=6)
    present = jnp.arange(len(y)) % 7 != 3
    distances = np.linalg.norm(np.asarray(x)[:, None] - np.asarray(x)[None], axis=-1)
    valid = np.asarray(present)[None] & (np.asarray(y)[None] == np.asarray(y)[:, None])
    for ref_x, itself in [(x, False), (x + 0.0, True)]:
        ok = valid if itself else valid & ~np.eye(len(y), dtype=bool)
        expected = np.sort(np.where(ok, distances, np.inf), axis=1)[:, :3].sum(1)
        got = KNN(k=3).scores(x, y, present, ref_x, y, present, 2)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)


def test_svd_with_all_the_mass_on_rank_deficient_data_measures_the_distance_off_the_span():
    """Each class spans a 30-dimensional affine subspace of R⁶⁰ (40 rows); with ``mass=1`` the
    principal subspace is exactly that one: rows in it score 0, a row 3 off it scores 3 wherever it
    sits along it. The singular vectors of rounding-level singular values must stay out: on this
    seed their cumulative mass falls an ulp short of the total, and counting them took the probes'
    scores to 0."""
    rng = np.random.default_rng(5)
    basis = np.linalg.qr(rng.normal(size=(60, 60)))[0]
    span, normal = basis[:, :30], basis[:, -1]
    x = rng.normal(size=(80, 30)) @ span.T + np.repeat([[1.0], [-1.0]], 40, axis=0) / np.sqrt(60)
    probes = x[:2] + np.array([[0.0], [5.0]]) * span[:, 0] + 3.0 * normal  # class 0, 3 off its span
    x_all = jnp.asarray(np.concatenate([x, probes]), jnp.float32)
    y_all = jnp.asarray(np.repeat([0.0, 1.0, 0.0], [40, 40, 2]), jnp.float32)
    present, ref_present = jnp.ones(82, bool), jnp.arange(82) < 80
    scores = SVD(mass=1.0).scores(x_all, y_all, present, x_all, y_all, ref_present, 2)
    np.testing.assert_allclose(scores[:80], 0.0, atol=1e-4)
    np.testing.assert_allclose(scores[80:], 3.0, rtol=1e-4)
    fewer = SVD(mass=0.5).scores(x_all, y_all, present, x_all, y_all, ref_present, 2)
    assert jnp.all(fewer >= scores - 1e-4) and jnp.all(fewer[:80] > 1e-2)  # half the mass: rows stick out


def test_the_public_statistics_are_the_class_means_the_slab_direction_and_per_class_percentiles():
    x, y = clean_set()
    present = jnp.ones(len(y), bool).at[0].set(False)
    x = x.at[0].set(jnp.nan)  # an absent row counts nowhere
    xs, ys = np.asarray(x)[1:], np.asarray(y)[1:]
    mu = defences.centroids(x, y, present, 2)
    np.testing.assert_allclose(mu, [xs[ys == c].mean(0) for c in (0, 1)], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(Slab.direction(mu), (mu[0] - mu[1]) / np.linalg.norm(mu[0] - mu[1]), rtol=1e-6)
    np.testing.assert_array_equal(Slab.direction(jnp.ones((2, 3))), np.zeros(3))
    scores = jnp.asarray(np.random.default_rng(0).normal(size=len(y)), jnp.float32)
    thresholds = Percentile(70.0).thresholds(scores, y, present, 3)  # class 2 has no rows
    expected = [np.percentile(np.asarray(scores)[1:][ys == c], 70.0) for c in (0, 1)]
    np.testing.assert_allclose(thresholds[:2], expected, rtol=1e-6)
    assert thresholds[2] == jnp.inf


@pytest.mark.parametrize(
    ("make", "value"),
    [
        (lambda: KNN(k=0), 0),
        (lambda: KNN(k=2.5), 2.5),
        (lambda: KNN(k=True), True),
        (lambda: SVD(mass=0.0), 0.0),
        (lambda: SVD(mass=1.5), 1.5),
        (lambda: SVD(mass=float("nan")), float("nan")),
        (lambda: Fraction(f=1.0), 1.0),
        (lambda: Fraction(f=-0.1), -0.1),
        (lambda: Percentile(q=0.0), 0.0),
        (lambda: Percentile(q=101.0), 101.0),
        (lambda: Percentile(q="90"), "90"),
        (lambda: Sanitiser(Sphere(), statistics="clean"), "clean"),
        (lambda: Sanitiser("sphere"), "sphere"),
        (lambda: Sanitiser(Sphere(), rule=0.05), 0.05),
        (lambda: Sanitiser(Slab()).keep(*clean_set(), jnp.ones(40, bool), *clean_set(), num_classes=3), 3),
        (lambda: Sanitiser(KNN(k=50)).keep(*clean_set(), jnp.ones(40, bool), *clean_set()), 50),
        (lambda: Sanitiser(Sphere()).keep(*clean_set(), jnp.ones(40, bool), *clean_set(), num_classes=0), 0),
    ],
)
def test_bad_values_raise_naming_the_value(make, value):
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        make()


def test_a_bad_statistics_string_names_the_allowed_ones():
    with pytest.raises(ValueError, match="one of oracle, data-dependent"):
        Sanitiser(Sphere(), statistics="Oracle")


def test_removal_stats_count_present_rows_only():
    keep = jnp.array([True, False, False, True, False, False])
    present = jnp.array([True, True, True, True, True, False])
    is_poison = jnp.array([False, True, True, False, False, True])
    stats = defences.removal_stats(keep, present, is_poison)
    assert {k: float(v) for k, v in stats.items()} == pytest.approx(
        {"poison_removed": 2, "clean_removed": 1, "recall": 1.0, "false_positive_rate": 1 / 3}
    )
    none = defences.removal_stats(keep, present, jnp.zeros(6, bool))
    assert float(none["recall"]) == 0.0 and float(none["poison_removed"]) == 0


def test_the_score_table_names_each_score_class():
    assert defences.SANITISERS == {"sphere": Sphere, "slab": Slab, "knn": KNN, "svd": SVD}
