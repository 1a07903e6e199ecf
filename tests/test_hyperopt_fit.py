"""hyperopt.fit: the outer loop of hyperparameter learning on the engine alone.

Ridge regression's α on scikit-learn's diabetes data (features as sklearn gives them: centred,
each column of unit norm; target unscaled) against a validation grid of sklearn Ridge fits; the
box; non-finite steps; RMD, IFT and Implicit; no recompilation for new data.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

from poison_jax import engine
from poison_jax.poisoning import hyperopt

# -- ridge regression on diabetes: exactly sklearn Ridge's objective, α = exp(log_lam) --------


def ridge_inner(w, log_lam, x, y, xv, yv):
    """``||y - X w - b||² + α ||w||²``, the intercept ``b`` unpenalised (sklearn's Ridge)."""
    r = y - x @ w["coef"] - w["intercept"]
    return jnp.sum(r**2) + jnp.exp(log_lam) * jnp.sum(w["coef"] ** 2)


def ridge_outer(w, log_lam, x, y, xv, yv):
    """The validation mean squared error."""
    return jnp.mean((yv - xv @ w["coef"] - w["intercept"]) ** 2)


def diabetes_split(seed=2, n_train=300):
    """A fixed split: a permutation by ``RandomState(seed)``, the first ``n_train`` rows train, the rest validate."""
    x, y = load_diabetes(return_X_y=True)
    perm = np.random.RandomState(seed).permutation(len(y))
    train, val = perm[:n_train], perm[n_train:]
    return x[train], y[train], x[val], y[val]


def sklearn_grid_alpha(x, y, xv, yv, grid):
    mse = np.array([np.mean((Ridge(alpha=a).fit(x, y).predict(xv) - yv) ** 2) for a in grid])
    return grid[np.argmin(mse)], mse.min()


RIDGE_W0 = {"coef": np.zeros(10), "intercept": np.zeros(())}
IMPLICIT64 = engine.Implicit(solver=engine.NewtonCG(tol=1e-8), cg_tol=1e-10)
SGD = optax.sgd(0.01)  # one object: the jitted loop is keyed on it
WIDE_BOX = (np.log(1e-6), np.log(1e3))  # inactive; the box test's narrow box then reuses the compiled loop


def test_learned_ridge_alpha_matches_sklearns_validation_grid(x64):
    x, y, xv, yv = diabetes_split()
    grid_alpha, grid_mse = sklearn_grid_alpha(x, y, xv, yv, np.logspace(-4, 2, 400))
    w0 = jax.tree_util.tree_map(jnp.asarray, RIDGE_W0)
    result = hyperopt.fit(
        IMPLICIT64, ridge_inner, ridge_outer, w0, jnp.array(0.0), x, y, xv, yv, optimizer=SGD, steps=80, box=WIDE_BOX
    )
    alpha = float(jnp.exp(result.theta))
    assert abs(alpha / grid_alpha - 1) < 0.05, (alpha, grid_alpha)
    assert float(result.value) <= grid_mse * (1 + 1e-6)  # at least as good as the best grid point
    assert abs(float(result.grad)) < 1e-2 and float(result.grad_norms[0]) > 100  # stationary from a steep start
    assert bool(jnp.all(result.status == 0)) and bool(jnp.all(result.finite)) and int(result.skipped) == 0
    assert result.values.shape == result.grad_norms.shape == result.status.shape == (80,)
    assert float(result.values[-1]) < float(result.values[0])
    # w is the inner solution at the final α: sklearn's Ridge fit there.
    ridge = Ridge(alpha=alpha).fit(x, y)
    np.testing.assert_allclose(result.w["coef"], ridge.coef_, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(result.w["intercept"], ridge.intercept_, rtol=1e-8)
    # Implicit warm-starts: the inner Newton solves get short (a cold solve at the final α takes 15).
    iterations = np.asarray(result.stats["inner_steps"])
    assert iterations[0] >= 10 and iterations[-10:].max() <= 3, iterations
    cold = engine.hypergrad(IMPLICIT64, ridge_inner, ridge_outer, w0, result.theta, x, y, xv, yv)
    assert int(cold.stats["inner_steps"]) >= 10


def test_the_box_stops_theta_on_its_bound(x64):
    x, y, xv, yv = diabetes_split()  # the best α is about 0.02, below the box
    w0 = jax.tree_util.tree_map(jnp.asarray, RIDGE_W0)
    low, high = np.log(0.1), np.log(10.0)
    result = hyperopt.fit(
        IMPLICIT64, ridge_inner, ridge_outer, w0, jnp.array(1.0), x, y, xv, yv,
        optimizer=SGD, steps=80, box=(low, high),
    )  # fmt: skip
    assert float(result.theta) == pytest.approx(low, abs=0)
    assert float(result.grad) > 0  # it would go further down: the bound is active
    with pytest.raises(ValueError, match="low <= high"):
        hyperopt.fit(IMPLICIT64, ridge_inner, ridge_outer, w0, jnp.array(1.0), x, y, xv, yv,
                     optimizer=SGD, steps=2, box=(high, low))  # fmt: skip
    with pytest.raises(ValueError, match="box must be None or a"):
        hyperopt.fit(IMPLICIT64, ridge_inner, ridge_outer, w0, jnp.array(1.0), x, y, xv, yv,
                     optimizer=SGD, steps=2, box=low)  # fmt: skip


# -- a small synthetic ridge problem (float32), one λ or two -------------------------------


def synthetic(seed=7, n=30, d=8):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    x, xv = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    y, yv = x @ w + 2 * rng.normal(size=n), xv @ w + 2 * rng.normal(size=n)
    return tuple(jnp.asarray(a, jnp.float32) for a in (x, y, xv, yv))


def mean_inner(w, theta, x, y, xv, yv):
    lam = jnp.exp(theta["log_lam"]) if isinstance(theta, dict) else jnp.exp(theta)
    return jnp.mean((x @ w - y) ** 2) / 2 + jnp.sum(lam * w**2) / 2


def mean_outer(w, theta, x, y, xv, yv):
    return jnp.mean((xv @ w - yv) ** 2)


def synthetic_best_log_lam(x, y, xv, yv):
    x, y, xv, yv = (np.asarray(a, np.float64) for a in (x, y, xv, yv))
    grid = np.linspace(-6.0, 4.0, 2001)
    d = x.shape[1]
    mse = [
        np.mean((xv @ np.linalg.solve(x.T @ x / len(y) + np.exp(g) * np.eye(d), x.T @ y / len(y)) - yv) ** 2)
        for g in grid
    ]
    return grid[int(np.argmin(mse))]  # -1.135 for seed 7


ADAM = optax.adam(0.1)
METHODS = {
    "RMD": engine.RMD(steps=200, lr=0.4),
    "IFT": engine.IFT(steps=200, lr=0.4, cg_iters=50),
    "Implicit": engine.Implicit(solver=engine.NewtonCG(tol=1e-5)),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_every_strategy_learns_the_same_lambda(name):
    data = synthetic()
    best = synthetic_best_log_lam(*data)
    result = hyperopt.fit(METHODS[name], mean_inner, mean_outer, jnp.zeros(8), jnp.array(1.0), *data,
                          optimizer=ADAM, steps=80)  # fmt: skip
    assert result.theta.dtype == jnp.float32 and result.w.dtype == jnp.float32
    assert float(result.theta) == pytest.approx(best, abs=0.03), name
    assert bool(jnp.all(result.finite)) and bool(jnp.all(result.status == 0)), name
    assert float(result.values[-1]) < float(result.values[0])


def test_a_pytree_theta_with_a_pytree_box():
    data = synthetic()
    theta0 = {"log_lam": jnp.zeros(8)}  # one λ per weight
    box = ({"log_lam": jnp.full(8, -1.0)}, {"log_lam": jnp.full(8, 2.0)})
    result = hyperopt.fit(engine.Implicit(), mean_inner, mean_outer, jnp.zeros(8), theta0, *data,
                          optimizer=ADAM, steps=30, box=box)  # fmt: skip
    log_lam = np.asarray(result.theta["log_lam"])
    assert log_lam.shape == (8,) and np.all(log_lam >= -1.0) and np.all(log_lam <= 2.0)
    assert np.any(log_lam == -1.0)  # some λ want to be smaller than the box allows
    assert float(result.values[-1]) < float(result.values[0])


# -- non-finite steps are skipped and reported, theta is never corrupted -------------------


def nan_below(w, theta, x, y, xv, yv):
    """The validation MSE, NaN once log-λ < -0.5 (the optimum, -1.135, lies beyond)."""
    return mean_outer(w, theta, x, y, xv, yv) + 0.0 * jnp.sqrt(theta + 0.5)


def test_a_loss_that_turns_nan_does_not_corrupt_theta():
    data = synthetic()
    method = engine.Implicit()
    run = hyperopt.fit(method, mean_inner, nan_below, jnp.zeros(8), jnp.array(1.0), *data, optimizer=ADAM, steps=40)
    finite = np.asarray(run.finite)
    first_bad = int(np.argmin(finite))
    assert 0 < first_bad < 40 and not finite[first_bad:].any(), finite  # theta stays where the loss is NaN
    assert int(run.skipped) == 40 - first_bad
    assert np.isnan(np.asarray(run.values)[first_bad:]).all() and np.isnan(float(run.value))  # reported, not hidden
    assert np.isfinite(float(run.theta)) and np.isfinite(np.asarray(run.w)).all()
    # theta is exactly where the first non-finite step found it: the last finite update's result.
    before = hyperopt.fit(method, mean_inner, nan_below, jnp.zeros(8), jnp.array(1.0), *data,
                          optimizer=ADAM, steps=first_bad)  # fmt: skip
    assert float(run.theta) == float(before.theta) < -0.5


def test_nan_data_leave_theta_at_its_start():
    x, y, xv, yv = synthetic()
    result = hyperopt.fit(engine.RMD(steps=20, lr=0.4), mean_inner, mean_outer, jnp.zeros(8), jnp.array(0.3),
                          x, y, xv.at[0, 0].set(jnp.nan), yv, optimizer=ADAM, steps=5)  # fmt: skip
    assert float(result.theta) == np.float32(0.3) and int(result.skipped) == 5
    assert not np.asarray(result.finite).any()


# -- compiled once ----------------------------------------------------------------------------


def test_new_data_of_the_same_shapes_do_not_recompile(trace_counter):
    inner, outer = trace_counter(mean_inner), trace_counter(mean_outer)
    method = engine.Implicit()

    def run(seed, box):
        return hyperopt.fit(method, inner, outer, jnp.zeros(8), jnp.array(0.0), *synthetic(seed),
                            optimizer=ADAM, steps=5, box=box)  # fmt: skip

    first = run(7, (-2.0, 2.0))
    counts = (inner.count, outer.count)
    assert counts[0] > 0 and counts[1] > 0
    second = run(3, (-3.0, 1.0))  # new data, new box values: the same program
    assert (inner.count, outer.count) == counts
    assert float(first.theta) != float(second.theta)


def test_bad_arguments_name_the_field():
    data = synthetic()
    with pytest.raises(TypeError, match="method must be"):
        hyperopt.fit("implicit", mean_inner, mean_outer, jnp.zeros(8), jnp.array(0.0), *data, optimizer=ADAM, steps=1)
    with pytest.raises(ValueError, match="steps"):
        hyperopt.fit(engine.Implicit(), mean_inner, mean_outer, jnp.zeros(8), jnp.array(0.0), *data,
                     optimizer=ADAM, steps=0)  # fmt: skip
    with pytest.raises(TypeError, match="optimizer must be"):
        hyperopt.fit(engine.Implicit(), mean_inner, mean_outer, jnp.zeros(8), jnp.array(0.0), *data,
                     optimizer=0.1, steps=1)  # fmt: skip
