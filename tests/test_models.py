"""Floor 1: the models and the per-layer L2 penalty."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poison_jax.poisoning import losses, models


def test_paper_mlp_shape_and_init():
    model = models.mlp(2048)
    params = model.init(jax.random.PRNGKey(0))
    assert sum(a.size for a in jax.tree_util.tree_leaves(params)) == 266_433
    assert model.layers == ("layer_0", "layer_1", "layer_2")
    for name in model.layers:
        np.testing.assert_array_equal(params[name]["bias"], np.float32(0.01))
    # Xavier-uniform: |W| <= sqrt(6 / (fan_in + fan_out)), and not all equal.
    kernel = params["layer_0"]["kernel"]
    assert float(jnp.abs(kernel).max()) <= np.sqrt(6 / (2048 + 128)) and float(kernel.std()) > 0
    other = model.init(jax.random.PRNGKey(1))
    assert not np.array_equal(other["layer_0"]["kernel"], kernel)


def test_mlp_uses_leaky_relu():
    model = models.mlp(2, hidden=(1,))
    params = {
        "layer_0": {"kernel": jnp.ones((2, 1)), "bias": jnp.zeros(1)},
        "layer_1": {"kernel": jnp.ones((1, 1)), "bias": jnp.zeros(1)},
    }
    x = jnp.asarray([[1.0, 1.0], [-1.0, -2.0]])
    np.testing.assert_allclose(model.apply(params, x), [2.0, -0.3], rtol=1e-6)


def test_logistic_regression_starts_at_zero_and_is_linear():
    model = models.logistic_regression(3)
    params = model.init(jax.random.PRNGKey(5))
    assert not model.random_init and all(float(jnp.abs(a).max()) == 0 for a in jax.tree_util.tree_leaves(params))
    params = {"layer_0": {"kernel": jnp.asarray([[1.0], [2.0], [3.0]]), "bias": jnp.asarray([0.5])}}
    np.testing.assert_allclose(models.logistic_regression(3).apply(params, jnp.eye(3)), [1.5, 2.5, 3.5])


def test_the_default_penalty_is_l2_per_layer_and_excludes_biases():
    model = models.mlp(3, hidden=(2,))
    params = model.init(jax.random.PRNGKey(0))
    log_lam = jnp.asarray([0.0, jnp.log(4.0)])
    w0, w1 = params["layer_0"]["kernel"], params["layer_1"]["kernel"]
    expected = 0.5 * jnp.sum(w0**2) + 0.5 * 4.0 * jnp.sum(w1**2)
    np.testing.assert_allclose(models.penalty(model, params, log_lam), expected, rtol=1e-6)
    bigger_bias = jax.tree_util.tree_map(lambda a: a, params)
    bigger_bias["layer_0"]["bias"] = params["layer_0"]["bias"] + 10.0
    np.testing.assert_allclose(models.penalty(model, bigger_bias, log_lam), expected, rtol=1e-6)


def test_bce_is_stable_and_correct():
    logits = jnp.asarray([-100.0, 0.0, 3.0, 100.0])
    y = jnp.asarray([0.0, 1.0, 1.0, 1.0])
    expected = -(y * jax.nn.log_sigmoid(logits) + (1 - y) * jax.nn.log_sigmoid(-logits))
    np.testing.assert_allclose(losses.bce(logits, y), expected, rtol=1e-6, atol=1e-30)
    assert bool(jnp.all(jnp.isfinite(losses.bce(logits, y))))


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_bad_sizes(bad):
    with pytest.raises(ValueError, match=rf"d must be a positive integer, got {bad!r}"):
        models.logistic_regression(bad)
    with pytest.raises(ValueError, match=rf"hidden\[1\] must be a positive integer, got {bad!r}"):
        models.mlp(4, hidden=(3, bad))
