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

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["float_tree", "positive_finite", "positive_int", "same_shapes"]


def positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` if it is an integer > 0 (``bool`` is refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def positive_finite(name: str, value: Any, *, allow_zero: bool = False) -> None:
    """A finite real scalar > 0 (>= 0 with ``allow_zero``); a traced value passes unchecked."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except jax.errors.TracerArrayConversionError:
        return  # a traced value cannot be inspected; the caller vouches for it
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if arr.shape != ():
        raise ValueError(f"{name} must be a scalar, got shape {arr.shape}")
    low_ok = arr >= 0 if allow_zero else arr > 0
    if not (np.isfinite(arr) and low_ok):
        allowed = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


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
