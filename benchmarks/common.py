"""Shared helpers of the benchmark scripts: timing, environment record, JSON + Markdown output,
the ``--quick`` / ``--out`` / ``--device`` options every script takes."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import numpy as np


def median_times(calls: dict, *, repeats: int, warmup: int = 2) -> dict:
    """Median wall time in seconds of each ``call()``, compilation excluded.

    The calls are timed in interleaved rounds (one of each per round), so that a slow spell of the
    machine falls on all of them alike and their ratios stay fair.
    """
    samples = interleaved_samples(calls, repeats=repeats, warmup=warmup)
    return {name: statistics.median(s) for name, s in samples.items()}


def interleaved_samples(calls: dict, *, repeats: int, warmup: int = 1) -> dict:
    """Every wall time in seconds of each ``call()`` (``name -> list``), timed in interleaved rounds
    after ``warmup`` untimed calls each."""
    for call in calls.values():
        for _ in range(warmup):
            jax.block_until_ready(call())
    samples = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call())
            samples[name].append(time.perf_counter() - start)
    return samples


def default_device():
    """The device jitted computations run on: ``jax_default_device`` if set, else the first device."""
    device = jax.config.jax_default_device
    if isinstance(device, str):  # a platform name
        device = jax.devices(device)[0]
    return device if device is not None else jax.devices()[0]


def environment() -> dict:
    """What a figure depends on: device, JAX version, CPU count."""
    device = default_device()
    try:
        load = os.getloadavg()[0]
    except OSError:  # not on every platform
        load = None
    return {
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "backend": jax.default_backend(),
        "device_count": jax.device_count(device.platform),
        "jax_version": jax.__version__,
        "jaxlib_version": getattr(jax.lib, "__version__", None) or _jaxlib_version(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1min": load,  # other work on the machine makes timings noisy
    }


def _jaxlib_version():
    try:
        import jaxlib

        return jaxlib.__version__
    except Exception:  # pragma: no cover
        return None


def add_common_args(parser: argparse.ArgumentParser, name: str) -> None:
    """``--quick``, ``--out`` and ``--device``, the options every benchmark script takes."""
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (seconds)")
    parser.add_argument("--out", default="benchmarks/results", help=f"folder for {name}.json (default: %(default)s)")
    parser.add_argument(
        "--device",
        choices=("cpu", "gpu"),
        default=None,
        help="platform to run on (default: JAX's default backend); recorded in the JSON",
    )


def select_device(device: str | None) -> None:
    """Make ``device`` ("cpu" or "gpu") the default device of this process; ``None`` keeps JAX's default.

    Uses ``jax_default_device``, so it works after the backend is initialised; a platform that is not
    present raises ``RuntimeError`` naming it.
    """
    if device is None:
        return
    try:
        devices = jax.devices(device)
    except RuntimeError as err:
        raise RuntimeError(f"--device {device}: no such device here ({err}); available: {jax.devices()}") from err
    jax.config.update("jax_default_device", devices[0])


def memory_stats(compiled) -> dict:
    """XLA's buffer assignment of a compiled computation (deterministic, in bytes)."""
    analysis = compiled.memory_analysis()
    keys = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes", "peak_memory_in_bytes")
    return {k: int(getattr(analysis, k)) for k in keys if getattr(analysis, k, None) is not None}


def cost_stats(compiled) -> dict:
    """XLA's cost analysis of a compiled computation: flops and bytes accessed (estimates)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
        cost = cost[0] if cost else {}
    cost = cost or {}
    return {
        "flops": float(cost.get("flops", float("nan"))),
        "bytes_accessed": float(cost.get("bytes accessed", float("nan"))),
    }


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # non-finite input: nan (JSON null)
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def rel_error(a, ref) -> float:
    a, ref = np.asarray(a, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y against log x."""
    x, y = np.log(np.asarray(x, np.float64)), np.log(np.asarray(y, np.float64))
    return float(np.polyfit(x, y, 1)[0])


def jsonable(value):
    """Tuples to lists, numpy scalars to Python numbers, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


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
