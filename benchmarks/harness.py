"""The one harness of the benchmark scripts: timing, the machine's load, the environment record,
goals by id, JSON + Markdown output, and the options every script takes (``--quick``, ``--out``,
``--device``).

A script is a ``run(args) -> dict`` and a ``markdown(dict) -> str``; :func:`main` parses the
options, picks the device, runs it and writes ``NAME.json`` and ``NAME.md`` (and ``NAME.png`` when
the script has a plot). Timings are medians (and minima) of interleaved rounds after warm-up calls,
each call blocked until its result is ready.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------- timing


class Timing(NamedTuple):
    """Wall times in seconds of one call, compilation excluded."""

    median: float
    minimum: float
    samples: tuple[float, ...]


def time_calls(calls: Mapping[Any, Callable[[], Any]], *, repeats: int, warmup: int = 1) -> dict[Any, Timing]:
    """Time each ``call()`` in interleaved rounds (one of each per round) after ``warmup`` untimed calls
    each, so that a slow spell of the machine falls on all of them alike and their ratios stay fair.
    The minimum is the figure least disturbed by other work on the machine."""
    for call in calls.values():
        for _ in range(warmup):
            jax.block_until_ready(call())
    samples: dict[Any, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call())
            samples[name].append(time.perf_counter() - start)
    return {name: Timing(statistics.median(s), min(s), tuple(s)) for name, s in samples.items()}


def median_times(calls: Mapping[Any, Callable[[], Any]], *, repeats: int, warmup: int = 2) -> dict[Any, float]:
    """Median wall seconds of each ``call()``: :func:`time_calls`'s medians."""
    return {name: t.median for name, t in time_calls(calls, repeats=repeats, warmup=warmup).items()}


def first_call_seconds(call: Callable[[], Any]) -> float:
    """Wall seconds of one ``call()`` blocked until ready (the first one includes compilation)."""
    start = time.perf_counter()
    jax.block_until_ready(call())
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------- machine load


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (other work on the machine makes timings noisy);
    ``None`` where the platform has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def wait_for_idle(max_load: float, patience_s: float, poll_s: float = 30.0) -> list[float]:
    """Wait, up to ``patience_s``, for a 1-minute load average below ``max_load``; the loads seen."""
    seen: list[float] = []
    deadline = time.time() + patience_s
    while True:
        load = load_average()
        seen.append(load[0] if load else 0.0)
        if load is None or load[0] < max_load or time.time() >= deadline:
            return seen
        time.sleep(poll_s)


# -------------------------------------------------------------------------------- device, environment


def default_device():
    """The device jitted computations run on: ``jax_default_device`` if set, else the first device."""
    device = jax.config.jax_default_device
    if isinstance(device, str):  # a platform name
        device = jax.devices(device)[0]
    return device if device is not None else jax.devices()[0]


def environment() -> dict:
    """What a figure depends on: device, JAX version, CPU count, the machine's load."""
    device = default_device()
    load = load_average()
    return {
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "backend": jax.default_backend(),
        "device_count": jax.device_count(device.platform),
        "jax_version": jax.__version__,
        "jaxlib_version": _jaxlib_version(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1min": load and load[0],
    }


def _jaxlib_version() -> str | None:
    try:
        import jaxlib

        return jaxlib.__version__
    except ImportError:  # pragma: no cover
        return None


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


# ------------------------------------------------------------------------------------------ numbers


def flat(tree) -> np.ndarray:
    """A pytree of arrays as one float64 vector."""
    return np.asarray(ravel_pytree(tree)[0], np.float64)


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


def fmt(x, spec: str) -> str:
    """``format(x, spec)``, or an em dash for a missing figure."""
    return "—" if x is None else format(x, spec)


def fmt_ms(x) -> str:
    """Milliseconds to three significant figures (whole ones from 100 on); a dash when missing."""
    return "—" if x is None else (f"{x:.3g}" if x < 100 else f"{x:.0f}")


# -------------------------------------------------------------------------------------------- goals


class Goal(NamedTuple):
    """A target a benchmark measures: ``id`` is the key of the figure in its JSON's ``goals``."""

    id: str
    source: str  # the benchmark (its JSON file's stem) that measures it
    target: float  # met when measured <= target
    text: str  # what is measured, for tables

    def met(self, measured: float | None) -> bool | None:
        return None if measured is None else bool(measured <= self.target)


# ------------------------------------------------------------------------------------------- output


def jsonable(value):
    """Tuples to lists, numpy scalars to Python numbers, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def write_results(out_dir: str | os.PathLike, name: str, result: dict, table: str) -> Path:
    """Write ``name.json`` and ``name.md`` under ``out_dir``, print the table, return the JSON path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(jsonable(result), indent=2) + "\n")
    (out / f"{name}.md").write_text(table + "\n")
    print(table)
    print(f"\nwrote {path}")
    return path


# -------------------------------------------------------------------------------------- the scripts


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with ``--quick``, ``--out`` and ``--device``, the options every script takes."""
    p = argparse.ArgumentParser(
        prog=f"python -m benchmarks.{name}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats (seconds)")
    p.add_argument("--out", default="benchmarks/results", help=f"folder for {name}.json (default: %(default)s)")
    p.add_argument(
        "--device",
        choices=("cpu", "gpu"),
        default=None,
        help="platform to run on (default: JAX's default backend); recorded in the JSON",
    )
    return p


def finish(args: argparse.Namespace, name: str, result: dict, markdown: Callable[[dict], str], plot=None) -> dict:
    """Add the environment, draw ``NAME.png`` if the script has a ``plot(result, path)``, write
    ``NAME.json`` and ``NAME.md``; return the result as written."""
    result = jsonable({"benchmark": name, "quick": args.quick, **result, **environment()})
    if plot is not None:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        plot(result, Path(args.out) / f"{name}.png")
        result["plot"] = f"{name}.png"
    write_results(args.out, name, result, markdown(result))
    return result


def main(name: str, doc: str | None, run: Callable, markdown: Callable[[dict], str], argv=None, plot=None) -> dict:
    """The whole of a script without internal modes: parse, select the device, ``run(args)``, write."""
    args = parser(name, doc).parse_args(argv)
    select_device(args.device)
    return finish(args, name, run(args), markdown, plot)


def module_command(module: str, *options: str, quick: bool = False, device: str | None = None) -> list[str]:
    """``python -m benchmarks.MODULE OPTIONS [--quick] [--device D]``: a case in a fresh process."""
    cmd = [sys.executable, "-m", f"benchmarks.{module}", *options]
    return cmd + (["--quick"] if quick else []) + (["--device", device] if device else [])


def run_json_case(module: str, *options: str, quick: bool = False, device: str | None = None) -> dict:
    """Run :func:`module_command` and return the JSON object on the last line of its output."""
    done = subprocess.run(module_command(module, *options, quick=quick, device=device), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmarks.{module} {' '.join(options)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
