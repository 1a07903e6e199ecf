"""Running a per-seed function over a leading seed axis: all seeds vmapped, or a few lanes that loop.

``jax.vmap`` runs every seed in lock-step. That is what a GPU wants, but a function with
data-dependent loops (a converged solver's ``while_loop``) then runs, for every seed, as many
iterations as the slowest seed needs. On a CPU it pays to run ``lanes`` seeds side by side (one
per device, when the seed axis is sharded over devices) and loop over the rest with
``jax.lax.map``, so each seed costs only its own iterations.

Example::

    >>> import jax.numpy as jnp
    >>> from poison_jax import seeds
    >>> seeds.over_seeds(lambda x, y: x * y, jnp.arange(6.0), jnp.ones(6), lanes=2).tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

__all__ = ["over_seeds"]


def over_seeds(fn: Callable[..., Any], *args, lanes: int | None = None):
    """``fn`` applied to every seed slice of ``args`` (pytrees with a leading seed axis ``S``).

    Args:
      fn: per-seed function of the seed slices of ``args``.
      args: pytrees whose array leaves share the leading axis ``S`` (``None`` leaves are kept).
      lanes: ``None`` vmaps all ``S`` seeds; an integer ``L`` dividing ``S`` runs ``L`` vmapped
        lanes, each looping over ``S / L`` consecutive seeds (a seed axis sharded in ``L``
        blocks keeps each lane on its device).
    Returns:
      ``fn``'s outputs stacked on the seed axis, as ``jax.vmap(fn)(*args)`` would.
    """
    if lanes is None:
        return jax.vmap(fn)(*args)
    num_seeds = jax.tree_util.tree_leaves(args)[0].shape[0]
    if num_seeds % lanes:
        raise ValueError(f"lanes = {lanes} must divide the number of seeds, {num_seeds}")
    split = jax.tree_util.tree_map(lambda a: a.reshape(lanes, num_seeds // lanes, *a.shape[1:]), args)
    out = jax.vmap(lambda *lane: jax.lax.map(lambda xs: fn(*xs), lane))(*split)
    return jax.tree_util.tree_map(lambda a: a.reshape(num_seeds, *a.shape[2:]), out)
