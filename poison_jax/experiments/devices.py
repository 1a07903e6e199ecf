"""The host's CPU cores as XLA devices, so that a sweep's seeds run in parallel on a CPU.

JAX gives a CPU host one device by default, and a sweep shards its seed axis over devices: on a
CPU only a split into one device per core runs seeds in parallel. :func:`use_cpu_cores` makes that
split; it must run before JAX's first computation (the ``poison-jax`` command calls it for you; in
Python or a notebook call it first)::

    >>> import poison_jax
    >>> poison_jax.experiments.devices.use_cpu_cores()  # doctest: +SKIP
    2

A GPU or TPU backend is not affected. :class:`SeedSharding` spreads a sweep's seed axis over the
devices (all of them, across hosts in a multi-host run).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np

from poison_jax.engine import checks

if TYPE_CHECKING:
    from poison_jax.poisoning import data

__all__ = ["SeedSharding", "cpu_core_count", "use_cpu_cores"]


def _cgroup_cpu_limit(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """The CPU quota of a cgroup v2 container, rounded up to whole cores (None: no limit)."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def cpu_core_count() -> int:
    """The cores this process may run on: its CPU affinity, capped by a container's CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    return min(count, limit) if limit is not None else count


def use_cpu_cores(count: int | None = None) -> int:
    """Split the host CPU into ``count`` XLA devices (default: :func:`cpu_core_count`).

    Call it before any JAX computation: once JAX's backend has started, the split cannot change,
    and the call leaves the devices as they are.

    Args:
      count: number of CPU devices (a positive integer), or None for one per usable core.
    Returns:
      The number of CPU devices JAX has (or will have) -- ``count`` unless the backend had already
      started.
    Raises:
      ValueError: ``count`` is not a positive integer.
    """
    if count is None:
        count = cpu_core_count()
    else:
        count = checks.positive_int("count", count)
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # the backend has started: keep what it has
        return len(jax.devices("cpu"))
    return count


class SeedSharding:
    """Spreads the seed axis over devices: a 1-D ``Mesh`` named ``"seed"`` and ``NamedSharding``s.

    The devices are all of ``jax.devices()``: the local ones, and in a multi-host run (after
    ``jax.distributed.initialize``) those of every process. The number of seeds need not divide the
    number of devices: the seed axis is padded by repeating the last seed (its copies compute the
    same thing) and :meth:`gather` drops the padding from every result. On one device this is a
    no-op.
    """

    def __init__(self, num_seeds: int, devices=None):
        devices = list(jax.devices() if devices is None else devices)
        self.num_seeds = num_seeds
        self.num_devices = len(devices)
        self.platform = devices[0].platform
        self.padded = -(-num_seeds // self.num_devices) * self.num_devices
        mesh = jax.sharding.Mesh(np.array(devices), ("seed",))
        self.by_seed = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seed"))
        self.replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def pad_seeds(self, seeds) -> tuple[int, ...]:
        seeds = tuple(seeds)
        return seeds + (seeds[-1],) * (self.padded - len(seeds))

    @staticmethod
    def _global(value: np.ndarray, sharding) -> jax.Array:
        # Every process holds the same host value; each places the shards of its own devices.
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    def put(self, tree):
        """Pad a tree of arrays with a leading seed axis of ``num_seeds`` (or already padded) and shard it."""

        def place(a):
            a = np.asarray(jax.device_get(a))
            if a.shape[0] < self.padded:
                a = np.concatenate([a, np.repeat(a[-1:], self.padded - a.shape[0], axis=0)])
            return self._global(a, self.by_seed)

        return jax.tree_util.tree_map(place, tree)

    def put_splits(self, splits: data.Splits) -> data.Splits:
        stacked = self.put(splits._replace(x_test=None, y_test=None))  # type: ignore[arg-type]  # not stacked
        return stacked._replace(
            x_test=self._global(np.asarray(splits.x_test), self.replicated),
            y_test=self._global(np.asarray(splits.y_test), self.replicated),
        )

    def gather(self, tree):
        """Numpy copies of a tree of seed-sharded arrays on every process, without the padding."""
        from jax.experimental import multihost_utils

        def fetch(a):
            if isinstance(a, jax.Array) and not a.is_fully_addressable:
                a = multihost_utils.process_allgather(a, tiled=True)
            return np.asarray(a)[: self.num_seeds]

        return jax.tree_util.tree_map(fetch, tree)
