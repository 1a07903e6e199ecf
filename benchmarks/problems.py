"""The problems the benchmarks time, shared by the scripts.

* :func:`logistic_problem`: L2 logistic regression with poison rows and log λ as the
  hyperparameters, random data of a given shape; the losses take the data as their third argument.
* :func:`attack_setup`: the attack of :mod:`poison_jax.poisoning.attack` on random splits stacked
  over seeds (:func:`random_splits`), and :func:`seed_slice` to take one seed of it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import engine_calls
from poison_jax.poisoning import attack, data


def logistic_arrays(d: int, n_train: int, n_poison: int, n_val: int, seed: int = 0) -> dict:
    """The data of :func:`logistic_problem` as float32 numpy arrays (shared with the PyTorch peer)."""
    rng = np.random.default_rng(seed)
    w_true = rng.normal(size=d) / np.sqrt(d)
    x_clean = rng.uniform(size=(n_train - n_poison, d)).astype(np.float32)
    x_val = rng.uniform(size=(n_val, d)).astype(np.float32)
    centre = lambda x: (x - 0.5) @ w_true
    return {
        "x_clean": x_clean,
        "y_clean": (centre(x_clean) > 0).astype(np.float32),
        "x_val": x_val,
        "y_val": (centre(x_val) > 0).astype(np.float32),
        "y_poison": rng.integers(0, 2, n_poison).astype(np.float32),
        "xp": rng.uniform(size=(n_poison, d)).astype(np.float32),
        "log_lam": np.float32(np.log(0.05)),
        "n_train": n_train,
    }


DATA_KEYS = ("x_clean", "y_clean", "x_val", "y_val", "y_poison")


def _bce_sum(logits, y):
    return jnp.sum(jax.nn.softplus(logits) - y * logits)


def inner_loss(w, theta, data):
    """L2 logistic regression on the clean rows and the poison rows ``theta["xp"]``; data as an argument."""
    n_train = data["x_clean"].shape[0] + data["y_poison"].shape[0]
    data_term = (
        _bce_sum(data["x_clean"] @ w["w"] + w["b"], data["y_clean"])
        + _bce_sum(theta["xp"] @ w["w"] + w["b"], data["y_poison"])
    ) / n_train
    return data_term + 0.5 * jnp.exp(theta["log_lam"]) * jnp.sum(w["w"] ** 2)


def outer_loss(w, theta, data):
    return _bce_sum(data["x_val"] @ w["w"] + w["b"], data["y_val"]) / data["y_val"].shape[0]


def zeros_w(d: int) -> dict:
    return {"w": jnp.zeros(d, jnp.float32), "b": jnp.zeros((), jnp.float32)}


def logistic_problem(d: int, n_train: int, n_poison: int, n_val: int, seed: int = 0):
    """``(inner_loss, outer_loss, w0, theta, data)`` of L2 logistic regression with poison rows and
    log-λ in theta; the losses take ``data`` as their third argument (the engine passes it on)."""
    arrays = logistic_arrays(d, n_train, n_poison, n_val, seed)
    data = {k: jnp.asarray(arrays[k]) for k in DATA_KEYS}
    theta = {"xp": jnp.asarray(arrays["xp"]), "log_lam": jnp.asarray(arrays["log_lam"], jnp.float32)}
    return inner_loss, outer_loss, zeros_w(d), theta, data


def random_splits(d, n_train, n_val, seeds, **_):
    """Random data of the given shape, labels from a random hyperplane, stacked over seeds."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=d)

    def draw(*shape):
        x = rng.uniform(size=(*shape, d)).astype(np.float32)
        return jnp.asarray(x), jnp.asarray(((x - 0.5) @ w > 0).astype(np.float32))

    x_train, y_train = draw(seeds, n_train)
    x_val, y_val = draw(seeds, n_val)
    x_test, y_test = draw(10)
    return data.Splits(x_train, y_train, x_val, y_val, x_test, y_test)


def attack_setup(sizes: dict, model, *, checkpoint=None, log_lam: float = math.log(5.0), batch: int = 17):
    """``(settings, splits, state)`` of the attack on :func:`random_splits` of ``sizes`` (d, n_train,
    n_val, n_poison, steps, lr, seeds), RMD inner method, the first ``batch`` poison points active."""
    splits = random_splits(**sizes)
    settings = attack.AttackSettings(
        model,
        engine_calls.rmd_method(sizes["steps"], sizes["lr"], checkpoint=checkpoint),
        alpha=0.99,
        beta=0.8,
        x_box=(0.0, 1.0),
        lam_box=(-8.0, math.log(200.0)),
    )
    keys = jax.random.split(jax.random.PRNGKey(0), sizes["seeds"])
    state = attack.init_attack(settings, keys, splits, sizes["n_poison"], log_lam)
    state = attack.set_poison_count(state, sizes["n_poison"], min(batch, sizes["n_poison"]))
    return settings, splits, state


def seed_slice(tree, i: int):
    """Seed ``i`` of splits or a state stacked over seeds (the test set is shared, kept whole)."""
    if isinstance(tree, data.Splits):
        return tree._replace(**{f: getattr(tree, f)[i : i + 1] for f in ("x_train", "y_train", "x_val", "y_val")})
    return jax.tree_util.tree_map(lambda a: a[i : i + 1], tree)
