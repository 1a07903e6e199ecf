"""engine.checks: each check returns what it accepts and names the value and what is allowed otherwise."""

import numpy as np
import pytest

from poison_jax.engine import checks


class Custom(ValueError):
    pass


def test_predicates():
    assert checks.is_int(3) and checks.is_int(np.int64(-2))
    assert not checks.is_int(True) and not checks.is_int(2.0) and not checks.is_int(np.bool_(True))
    assert checks.is_real(0.5) and checks.is_real(np.float32(2)) and checks.is_real(7)
    assert not checks.is_real(float("nan")) and not checks.is_real(float("inf")) and not checks.is_real(False)
    assert not checks.is_real("1")


def test_integer_ranges_and_messages():
    assert checks.integer("n", np.int32(4), low=1) == 4 and type(checks.integer("n", np.int32(4))) is int
    assert checks.integer("k", 3, low=0, high=3) == 3
    with pytest.raises(ValueError, match=r"^k must be an integer in 0\.\.3, got 4$"):
        checks.integer("k", 4, low=0, high=3)
    with pytest.raises(ValueError, match=r"^seed must be an integer >= 0, got -1$"):
        checks.integer("seed", -1, low=0)
    with pytest.raises(ValueError, match=r"^n must be a positive integer, got True$"):
        checks.positive_int("n", True)
    with pytest.raises(ValueError, match=r"^n must be an integer, got 2\.5$"):
        checks.integer("n", 2.5)
    with pytest.raises(Custom, match=r"^folds must be an integer >= 2, got 1$"):
        checks.integer("folds", 1, low=2, error=Custom)


def test_finite_one_of_box():
    assert checks.finite("x", np.float32(1.5)) == 1.5
    with pytest.raises(ValueError, match=r"^x must be a finite number, got nan$"):
        checks.finite("x", float("nan"))
    assert checks.one_of("scale", "minmax", ("standardise", "minmax")) == "minmax"
    with pytest.raises(ValueError, match=r"^scale must be one of standardise, minmax, got 'z'$"):
        checks.one_of("scale", "z", ("standardise", "minmax"))
    assert checks.box("x_box", [0, 1]) == (0.0, 1.0)
    for bad in [(1.0, 0.0), (0.0, float("inf")), (0.0,), "01", (True, 2)]:
        with pytest.raises(Custom, match=r"^x_box must be a pair \(low, high\) of finite numbers with low < high"):
            checks.box("x_box", bad, error=Custom)


def test_positive_checks_take_an_error_class():
    assert checks.positive_int("n", np.int64(2)) == 2
    with pytest.raises(Custom, match=r"^n must be a positive integer, got 0$"):
        checks.positive_int("n", 0, error=Custom)
    with pytest.raises(ValueError, match=r"^lr must be a finite number > 0, got True$"):
        checks.positive_finite("lr", True)
    for text in ("a", "0.1"):
        with pytest.raises(TypeError, match=rf"^lr must be a real number, got '{text}'$"):
            checks.positive_finite("lr", text)
    with pytest.raises(Custom, match=r"^lr must be a real number, got 'a'$"):
        checks.positive_finite("lr", "a", error=Custom)
    with pytest.raises(Custom, match=r"^tol must be a finite number >= 0, got -1\.0$"):
        checks.positive_finite("tol", -1.0, allow_zero=True, error=Custom)
    assert checks.positive_finite("tol", 0.0, allow_zero=True) is None
