"""benchmarks.lambda_failure: the grid's fits agree with the sweep's victim, and the minimisers are read right."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import lambda_failure
from poison_jax.poisoning import models, victims


def test_grid_fits_give_the_victims_test_error_and_the_defenders_validation_loss():
    key = jax.random.PRNGKey(0)
    x = jax.random.uniform(key, (2, 40, 3))
    y = (x[..., 0] > 0.5).astype(jnp.float32)
    x_test, y_test = x[0, :20], 1.0 - y[0, :20]  # flipped: errors to measure
    model = models.logistic_regression(3)
    victim = victims.ConvergedVictim()
    keys = jax.random.split(key, 2)
    log_lams = jnp.array([[-2.0, 1.0], [0.0, 3.0]])
    val_loss, test_loss, error, converged = lambda_failure.grid_fits(
        model, victim, None, x, y, jnp.ones(y.shape), log_lams, keys, x[:, :10], y[:, :10], x_test, y_test
    )
    assert error.shape == (2, 2) and bool(jnp.all(converged))
    for j in range(2):
        m = victims.evaluate_victim(model, x, y, log_lams[:, j : j + 1], keys, x_test, y_test, victim=victim)
        np.testing.assert_allclose(error[:, j], m.error, atol=1e-6)
    assert bool(jnp.all(test_loss > 0)) and bool(jnp.all(val_loss > 0))


def test_summary_reads_minimisers_ties_and_the_box_top():
    grid = np.array([-1.0, 0.0, 1.0, 2.0], np.float32)
    val = np.array([[3.0, 2.0, 1.0, 1.5, 1.2], [1.0, 2.0, 3.0, 4.0, 1.0]])  # last column: the learned λ
    err = np.array([[0.3, 0.1, 0.1, 0.2, 0.2], [0.2, 0.2, 0.1, 0.3, 0.2]])
    fits = {"grid": grid, "learned": np.array([[2.0, -1.0]]), "val_loss": val[None], "test_loss": err[None]}
    cell = lambda_failure.summarise_cell({**fits, "error": err[None]}, 0, top=2.0, sweep_error=[0.2, None])
    s = cell["per_seed"]
    assert s["at_top"] == [True, False] and s["val_loss_opt_log_lam"] == [1.0, -1.0]
    assert s["error_opt_log_lam"] == [0.5, 1.0] and s["error_opt_log_lam_range"] == [[0.0, 1.0], [1.0, 1.0]]
    assert s["error_at_val_loss_opt"] == pytest.approx([0.1, 0.2]) and s["error_at_learned"] == [0.2, 0.2]
    assert s["val_loss_excess"] == pytest.approx([0.2, 0.0]) and np.isnan(s["sweep_error_at_learned"][1])
    assert cell["mean"]["common_log_lam"] == 1.0 and cell["mean"]["at_top"] == 1
