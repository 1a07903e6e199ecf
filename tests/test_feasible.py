"""The adaptive attacker's projection onto sphere ∩ slab ∩ box: each closed-form projection, the
nearest feasible point, feasibility, bounds (oracle vs data-dependent, absent rows), jit and vmap,
validation, and the sanitisers keeping what the projection returns."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poison_jax.poisoning import defences
from poison_jax.poisoning.feasible import Bounds, FeasibleSet

WIDE = (-100.0, 100.0)  # a box that never binds
KEEP = 1 - 64 * np.finfo(np.float32).eps  # the projection's margin inside the bounds


def bounds_2d(mu, v, radius, half_width):
    """Both classes with the same 2-D ball and slab (class 1's centroid is ``mu`` too)."""
    return Bounds(jnp.asarray([mu, mu], jnp.float32), jnp.asarray(v, jnp.float32),
                  jnp.full(2, radius, jnp.float32), jnp.full(2, half_width, jnp.float32))  # fmt: skip


def project_one(z, bounds, box, iters=50):
    return np.asarray(FeasibleSet(iters=iters).project(jnp.asarray([z], jnp.float32), jnp.zeros(1), bounds, box))[0]


def grid(mu, v, radius, half_width, box, n=601):
    """The points of an ``n × n`` grid over the 2-D box inside the ball and the slab."""
    axis = np.linspace(*box, n)
    points = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    offset = points - np.asarray(mu)
    inside = (np.linalg.norm(offset, axis=1) <= radius) & (np.abs(offset @ np.asarray(v)) <= half_width)
    return points[inside]


def reference(seed=0, per_class=50, d=6):
    """Two classes in [0, 1]^d, class 0 around 0.3 and class 1 around 0.7."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0.0, 1.0], per_class)
    x = np.clip(rng.normal(np.where(y == 0, 0.3, 0.7)[:, None], 0.15, size=(2 * per_class, d)), 0, 1)
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), jnp.ones(2 * per_class, bool)


def far_points(seed=1, count=64, d=6):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(0.5, 20.0, size=(count, d)), jnp.float32), jnp.asarray(np.arange(count) % 2)


def assert_feasible(xp, yp, bounds, box, slack=0.0):
    xp, yp = np.asarray(xp), np.asarray(yp).astype(int)
    offset = xp - np.asarray(bounds.centroids)[yp]
    assert np.all(np.linalg.norm(offset, axis=1) <= np.asarray(bounds.radius)[yp] + slack)
    assert np.all(np.abs(offset @ np.asarray(bounds.direction)) <= np.asarray(bounds.half_width)[yp] + slack)
    assert np.all((xp >= box[0]) & (xp <= box[1]))


@pytest.mark.parametrize("which", ["ball", "slab", "box"])
def test_each_closed_form_projection_is_the_nearest_point_of_its_set(which):
    mu, v = np.array([0.5, -0.25]), np.array([0.6, 0.8])
    radius, half_width, box = {
        "ball": (1.5, np.inf, WIDE),
        "slab": (np.inf, 0.4, WIDE),
        "box": (np.inf, np.inf, (-1, 1)),
    }[which]
    for z in np.random.default_rng(2).uniform(-4, 4, size=(8, 2)):
        p = project_one(z, bounds_2d(mu, v, radius, half_width), box)
        if which == "ball":
            offset = z - mu
            expected = mu + offset * min(1, radius * KEEP / np.linalg.norm(offset))
        elif which == "slab":
            along = (z - mu) @ v
            expected = z - (along - np.clip(along, -half_width * KEEP, half_width * KEEP)) * v
        else:
            expected = np.clip(z, *box)
        np.testing.assert_allclose(p, expected, atol=1e-5)
        # brute force: no point of the set (gridded over a box around it) is nearer
        candidates = grid(mu, v, radius, half_width, (-4.0, 4.0) if which != "box" else box)
        assert np.linalg.norm(z - p) <= np.linalg.norm(candidates - z, axis=1).min() + 1e-5


def test_far_points_land_inside_all_three_sets():
    x, y, present = reference()
    fs = FeasibleSet(q=80.0)
    bounds = fs.bounds(x, y, present)
    xp, yp = far_points()
    projected = fs.project(xp, yp, bounds, (0.0, 1.0))
    assert_feasible(projected, yp, bounds, (0.0, 1.0))
    assert not np.allclose(projected, xp)


def test_a_feasible_point_is_unchanged():
    x, y, present = reference()
    fs = FeasibleSet(q=90.0)
    bounds = fs.bounds(x, y, present)
    inside = x[:10] * 0.2 + bounds.centroids[y[:10].astype(int)] * 0.8  # pulled towards its centroid
    assert_feasible(inside, y[:10], bounds, (0.0, 1.0), slack=-1e-3)
    np.testing.assert_array_equal(fs.project(inside, y[:10], bounds, (0.0, 1.0)), inside)


@pytest.mark.parametrize(
    ("z", "box", "expected"),
    [
        ((2.0, 0.0), WIDE, (0.5, 0.0)),  # the slab binds
        ((0.0, 3.0), WIDE, (0.0, 1.0)),  # the ball binds
        ((2.0, 2.0), WIDE, (0.5, np.sqrt(0.75))),  # the corner where the ball's circle meets the slab's edge
        ((0.2, 3.0), (-1.0, 0.6), (0.2, 0.6)),  # the box binds
    ],
)
def test_the_result_is_the_nearest_feasible_point_by_hand(z, box, expected):
    """Unit ball at 0, slab |x₁| ≤ 0.5."""
    p = project_one(z, bounds_2d((0.0, 0.0), (1.0, 0.0), 1.0, 0.5), box, iters=200)
    np.testing.assert_allclose(p, expected, atol=1e-5)


def test_the_result_is_the_nearest_feasible_point_of_a_fine_grid():
    rng = np.random.default_rng(3)
    box = (-1.5, 1.5)
    for _ in range(6):
        mu, angle = rng.uniform(-1, 1, 2), rng.uniform(0, np.pi)
        v, radius, half_width = np.array([np.cos(angle), np.sin(angle)]), rng.uniform(0.5, 2), rng.uniform(0.1, 1)
        z = rng.uniform(-5, 5, 2)
        p = project_one(z, bounds_2d(mu, v, radius, half_width), box, iters=200)
        candidates = grid(mu, v, radius, half_width, box)
        assert np.linalg.norm(z - p) <= np.linalg.norm(candidates - z, axis=1).min() + 1e-5
        # the optimality condition of a projection: no feasible point lies beyond p's supporting plane
        assert np.max((candidates - p) @ (z - p)) <= 1e-4


def test_jit_and_vmap_over_seeds_equal_a_loop():
    fs = FeasibleSet(q=85.0, iters=20)
    refs = [reference(seed) for seed in range(3)]
    points = [far_points(seed + 10, count=8) for seed in range(3)]

    def one(x, y, present, xp, yp):
        return fs.project(xp, yp, fs.bounds(x, y, present), (0.0, 1.0))

    loop = np.stack([one(*ref, *pts) for ref, pts in zip(refs, points, strict=True)])
    stacked = [
        jnp.stack(parts) for parts in zip(*(ref + pts for ref, pts in zip(refs, points, strict=True)), strict=True)
    ]
    np.testing.assert_allclose(jax.jit(jax.vmap(one))(*stacked), loop, atol=1e-6)
    np.testing.assert_allclose(jax.jit(one)(*refs[0], *points[0]), loop[0], atol=1e-6)


def test_oracle_and_data_dependent_bounds_differ_with_far_poison_in_the_reference():
    x, y, present = reference(per_class=20)
    fs = FeasibleSet(statistics="oracle")
    xp, yp = far_points(count=6)
    clean = fs.bounds(x, y, present)
    poisoned = fs.bounds(jnp.concatenate([x, xp]), jnp.concatenate([y, yp.astype(y.dtype)]), jnp.ones(46, bool))
    assert not np.allclose(clean.centroids, poisoned.centroids, atol=1e-2)
    assert np.all(np.asarray(poisoned.radius) > np.asarray(clean.radius))
    np.testing.assert_allclose(np.linalg.norm(poisoned.direction), 1.0, rtol=1e-6)


def test_absent_rows_with_nan_change_nothing():
    x, y, present = reference(per_class=20)
    fs = FeasibleSet(q=75.0)
    padded = fs.bounds(
        jnp.concatenate([x, jnp.full((5, x.shape[1]), jnp.nan)]),
        jnp.concatenate([y, jnp.array([0.0, 1.0, jnp.nan, 0.0, 1.0])]),
        jnp.concatenate([present, jnp.zeros(5, bool)]),
    )
    for got, expected in zip(padded, fs.bounds(x, y, present), strict=True):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"statistics": "clean"}, "FeasibleSet statistics must be one of oracle, data-dependent, got 'clean'"),
        ({"q": 0.0}, "FeasibleSet q must be a number in (0, 100]"),
        ({"q": 100.5}, "FeasibleSet q must be a number in (0, 100]"),
        ({"q": float("nan")}, "got nan"),
        ({"q": "90"}, "got '90'"),
        ({"iters": 0}, "FeasibleSet iters must be a positive integer, got 0"),
        ({"iters": 2.5}, "got 2.5"),
        ({"iters": True}, "got True"),
    ],
)
def test_bad_fields_raise_naming_the_value(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        FeasibleSet(**fields)


def test_a_bad_box_raises_naming_it():
    fs = FeasibleSet()
    bounds = bounds_2d((0.0, 0.0), (1.0, 0.0), 1.0, 1.0)
    with pytest.raises(
        ValueError, match=re.escape("box must be a pair (low, high) of finite numbers with low < high, got (1.0, 0.0)")
    ):
        fs.project(jnp.zeros((1, 2)), jnp.zeros(1), bounds, (1.0, 0.0))


@pytest.mark.parametrize("q", [50.0, 90.0, 100.0])
def test_the_oracle_sphere_and_slab_sanitisers_keep_every_projected_point(q):
    """The attack inside the feasible set passes the sanitiser (the points the projection puts on the
    boundary too); the same points unprojected do not."""
    x, y, present = reference(d=20)
    fs = FeasibleSet(statistics="oracle", q=q)
    xp, yp = far_points(count=200, d=20)
    projected = fs.project(xp, yp, fs.bounds(x, y, present), (0.0, 1.0))
    for score in (defences.Sphere(), defences.Slab()):
        sanitiser = defences.Sanitiser(score, defences.Percentile(q), "oracle")
        everyone = jnp.ones(len(y) + len(yp), bool)
        for points, kept in ((projected, True), (xp, False)):
            keep = sanitiser.keep(
                jnp.concatenate([x, points]), jnp.concatenate([y, yp.astype(y.dtype)]), everyone, x, y
            )
            assert bool(jnp.all(keep[len(y) :])) is kept
