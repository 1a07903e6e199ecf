"""The secml head-to-head's poison_jax half (benchmarks.h2h_jax): every poison count from one program."""

import numpy as np
import pytest

from benchmarks import h2h_jax
from poison_jax import engine
from poison_jax.poisoning import attack, models


def test_all_counts_run_one_program_and_switch_on_their_points():
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.uniform(size=(2, 12, 3)),
        "y_train": rng.integers(0, 2, (2, 12)),
        "x_val": rng.uniform(size=(2, 8, 3)),
        "y_val": rng.integers(0, 2, (2, 8)),
    }
    model, method = models.logistic_regression(3), engine.RMD(3, 0.1)
    settings = attack.AttackSettings(model, method, 0.5, 0.1, (0.0, 1.0), (-8.0, 6.0), mode=attack.Add())
    mark = h2h_jax.watch_compiles()
    results = h2h_jax.attack_counts(settings, h2h_jax.stack_splits(arrays), [0, 2, 5], iters=2)
    seen = h2h_jax.compiles_since(mark)
    assert seen["attack_compiles"] + seen["attack_loads"] == 1  # loaded where the session's cache had it
    for count, r in results.items():
        x, y, w = r["sets"]
        assert x.shape == (2, 12 + 5, 3) and y.shape == w.shape == (2, 12 + 5)
        assert (w[:, 12:].sum(axis=1) == count).all() and (w[:, 12 : 12 + count] == 1).all()
        assert len(r["seconds"]) == (1 if count else 0)


def test_the_methods_by_name():
    assert isinstance(h2h_jax.inner_method("dense"), engine.ImplicitDense)
    with pytest.raises(ValueError, match="newton-cg"):
        h2h_jax.inner_method("lbfgs")
    assert h2h_jax.inner_method("newton-cg") is h2h_jax.STRONG["method"]
