"""The host's CPU cores as XLA devices, so that a sweep's seeds run in parallel on a CPU.

JAX gives a CPU host one device by default, and a sweep shards its seed axis over devices: on a
CPU only a split into one device per core runs seeds in parallel. :func:`use_cpu_cores` makes that
split; it must run before JAX's first computation (the ``poison-jax`` command calls it for you; in
Python or a notebook call it first)::

    >>> import poison_jax
    >>> poison_jax.use_cpu_cores()  # doctest: +SKIP
    2

A GPU or TPU backend is not affected.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["cpu_core_count", "use_cpu_cores"]


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
    import jax

    if count is None:
        count = cpu_core_count()
    elif isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer (CPU devices), got {count!r}")
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # the backend has started: keep what it has
        return len(jax.devices("cpu"))
    return count
