"""Validation helpers shared by every floor: checks of static settings and pytree arguments.

Each check raises with a message that names the argument, its value and what is allowed, and
returns the checked value where that is useful (``positive_int`` returns an ``int``).

Example::

    >>> from poison_jax.engine import checks
    >>> checks.positive_int("steps", 3)
    3
    >>> checks.positive_finite("lr", -1.0)
    Traceback (most recent call last):
    ...
    ValueError: lr must be a finite number > 0, got -1.0
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Collection
from typing import Any, NoReturn

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "box",
    "fail",
    "finite",
    "float_tree",
    "integer",
    "is_int",
    "is_real",
    "one_of",
    "positive_finite",
    "positive_int",
    "same_shapes",
]

Error = Callable[[str], Exception]


def is_int(value: Any) -> bool:
    """Whether ``value`` is a Python or numpy integer (``bool`` is not one)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    """Whether ``value`` is a finite Python or numpy real number (``bool`` is not one)."""
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, (bool, np.bool_))
        and math.isfinite(value)
    )


def fail(name: str, value: Any, allowed: str, *, error: Error = ValueError) -> NoReturn:
    """Raise ``error(f"{name} must be {allowed}, got {value!r}")``: the message form of every check."""
    raise error(f"{name} must be {allowed}, got {value!r}")


def positive_int(name: str, value: Any, *, error: Error = ValueError) -> int:
    """``value`` as an ``int`` if it is an integer > 0 (``bool`` is refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value <= 0:
        fail(name, value, "a positive integer", error=error)
    return int(value)


def positive_finite(name: str, value: Any, *, allow_zero: bool = False, error: Error | None = None) -> None:
    """A finite real scalar > 0 (>= 0 with ``allow_zero``; ``bool`` is refused); a traced value passes
    unchecked. Raises ``error`` when given, else ``TypeError`` for what is not a number and
    ``ValueError`` for a number out of range."""
    allowed = "a finite number >= 0" if allow_zero else "a finite number > 0"
    if isinstance(value, (bool, np.bool_)):
        fail(name, value, allowed, error=error or ValueError)
    try:
        if isinstance(value, (str, bytes)):  # numpy would read "0.1" as a number
            raise TypeError(value)
        arr = np.asarray(value, dtype=np.float64)
    except jax.errors.TracerArrayConversionError:
        return  # a traced value cannot be inspected; the caller vouches for it
    except (TypeError, ValueError):
        raise (error or TypeError)(f"{name} must be a real number, got {value!r}") from None
    if arr.shape != ():
        raise (error or ValueError)(f"{name} must be a scalar, got shape {arr.shape}")
    if not (np.isfinite(arr) and (arr >= 0 if allow_zero else arr > 0)):
        fail(name, value, allowed, error=error or ValueError)


def float_tree(name: str, tree: Any) -> None:
    """A non-empty pytree whose leaves all have a floating dtype."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"{name}{jax.tree_util.keystr(path)} must have a floating dtype, got {dtype}")
    if not jax.tree_util.tree_leaves(tree):
        raise ValueError(f"{name} is an empty pytree; it needs at least one array leaf")


def same_shapes(name: str, tree: Any, reference_name: str, reference: Any) -> None:
    """``tree`` has the pytree structure and leaf shapes of ``reference``."""
    structure: Any = jax.tree_util.tree_structure(tree)  # PyTreeDef's stubs lack __eq__
    expected: Any = jax.tree_util.tree_structure(reference)
    if structure != expected:
        raise ValueError(
            f"{name} has pytree structure {structure}, but {reference_name} has {expected}; they must match"
        )
    shapes, reference_shapes = jax.tree_util.tree_map(jnp.shape, tree), jax.tree_util.tree_map(jnp.shape, reference)
    leaf_shapes = [jnp.shape(a) for a in jax.tree_util.tree_leaves(tree)]
    if leaf_shapes != [jnp.shape(a) for a in jax.tree_util.tree_leaves(reference)]:
        raise ValueError(
            f"{name} has leaf shapes {shapes}, but {reference_name} has {reference_shapes}; they must match"
        )


def integer(
    name: str, value: Any, *, low: int | None = None, high: int | None = None, error: Error = ValueError
) -> int:
    """``value`` as an ``int`` in ``low..high`` (inclusive; ``None``: no bound on that side).

    Anything with ``__index__`` is an integer (a numpy integer, a 0-d integer array), ``bool`` is not.
    """
    try:
        n = None if isinstance(value, (bool, np.bool_)) else operator.index(value)
    except TypeError:
        n = None
    if n is None or (low is not None and n < low) or (high is not None and n > high):
        if low is not None and high is not None:
            allowed = f"an integer in {low}..{high}"
        elif low is not None:
            allowed = "a positive integer" if low == 1 else f"an integer >= {low}"
        else:
            allowed = "an integer" if high is None else f"an integer <= {high}"
        fail(name, value, allowed, error=error)
    return n


def finite(name: str, value: Any, *, error: Error = ValueError) -> float:
    """``value`` as a finite ``float`` (a Python or numpy real number, not ``bool``)."""
    if not is_real(value):
        fail(name, value, "a finite number", error=error)
    return float(value)


def one_of(name: str, value: Any, allowed: Collection[Any], *, error: Error = ValueError) -> Any:
    """``value`` if it is one of ``allowed``, whose items the message lists."""
    if value not in allowed:
        fail(name, value, "one of " + ", ".join(map(str, allowed)), error=error)
    return value


def box(name: str, value: Any, *, error: Error = ValueError) -> tuple[float, float]:
    """``value`` as a pair ``(low, high)`` of finite floats with ``low < high``."""
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(is_real(b) for b in value)):
        fail(name, value, "a pair (low, high) of finite numbers with low < high", error=error)
    if value[0] >= value[1]:
        fail(name, value, "a pair (low, high) of finite numbers with low < high", error=error)
    return float(value[0]), float(value[1])
