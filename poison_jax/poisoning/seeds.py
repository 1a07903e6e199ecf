"""Running a per-seed function over a leading seed axis: all seeds vmapped, or lanes that loop.

``jax.vmap`` runs every seed in lock-step. That is what a GPU wants, but a function with
data-dependent loops (a converged solver's ``while_loop``) then runs, for every seed, as many
iterations as the slowest seed needs. On a CPU it pays to run ``lanes`` seeds side by side and
loop over the rest with ``jax.lax.map``, so each seed costs only its own iterations. When there
are at least ``lanes`` devices, each lane is one device running its own program
(``jax.shard_map``): its loops never wait for another device's (a vmapped lane sharded over
devices would agree on every loop's stopping test across devices, iteration by iteration).

Example::

    >>> import jax.numpy as jnp
    >>> from poison_jax.poisoning import seeds
    >>> seeds.over_seeds(lambda x, y: x * y, jnp.arange(6.0), jnp.ones(6), lanes=2).tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, PartitionSpec

__all__ = ["over_seeds"]


def over_seeds(fn: Callable[..., Any], *args, lanes: int | None = None):
    """``fn`` applied to every seed slice of ``args`` (pytrees with a leading seed axis ``S``).

    Args:
      fn: per-seed function of the seed slices of ``args``.
      args: pytrees whose array leaves share the leading axis ``S`` (``None`` leaves are kept).
      lanes: ``None`` vmaps all ``S`` seeds; an integer ``L`` dividing ``S`` runs ``L`` lanes, each
        looping over ``S / L`` consecutive seeds: lane ``i`` on device ``i`` of ``jax.devices()``
        when there are at least ``L`` devices (the blocks of a seed axis sharded over them, as
        :class:`poison_jax.experiments.devices.SeedSharding` does), else ``L`` vmapped lanes on one device.
    Returns:
      ``fn``'s outputs stacked on the seed axis, as ``jax.vmap(fn)(*args)`` would.
    """
    if lanes is None:
        return jax.vmap(fn)(*args)
    num_seeds = jax.tree_util.tree_leaves(args)[0].shape[0]
    if num_seeds % lanes:
        raise ValueError(f"lanes = {lanes} must divide the number of seeds, {num_seeds}")

    def loop(*block):
        return jax.lax.map(lambda xs: fn(*xs), block)

    devices = jax.devices()
    if 1 < lanes <= len(devices):
        mesh = Mesh(np.array(devices[:lanes]), ("seed",))
        spec = PartitionSpec("seed")
        # check_vma=False: loop carries start replicated and become per-device; nothing is reduced
        # across devices, so each device's loops stop on their own.
        return jax.shard_map(loop, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)(*args)
    split = jax.tree_util.tree_map(lambda a: a.reshape(lanes, num_seeds // lanes, *a.shape[1:]), args)
    out = jax.vmap(loop)(*split)
    return jax.tree_util.tree_map(lambda a: a.reshape(num_seeds, *a.shape[2:]), out)
