"""Shared helpers of the benchmark scripts: timing, environment record, JSON + Markdown output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax


def median_times(calls: dict, *, repeats: int, warmup: int = 2) -> dict:
    """Median wall time in seconds of each ``call()``, compilation excluded.

    The calls are timed in interleaved rounds (one of each per round), so that a slow spell of the
    machine falls on all of them alike and their ratios stay fair.
    """
    for call in calls.values():
        for _ in range(warmup):
            jax.block_until_ready(call())
    samples = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call())
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def environment() -> dict:
    """What a figure depends on: device, JAX version, CPU count."""
    device = jax.devices()[0]
    return {
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "jax_version": jax.__version__,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def write_results(out_dir: str | os.PathLike, name: str, result: dict, table: str) -> Path:
    """Write ``name.json`` and ``name.md`` under ``out_dir``, print the table, return the JSON path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(table + "\n")
    print(table)
    print(f"\nwrote {path}")
    return path
