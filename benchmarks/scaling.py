"""Scaling of one RMD hypergradient (logistic regression): time and memory as T, d, n_train and the
number of seeds grow; RMD plain against checkpointed (``checkpoint=True``: segments of isqrt(T)).

The problem is :func:`benchmarks.problems.logistic_problem`'s (random data of MNIST shape, 1/6 of
the training rows poison, float32); one axis varies at a time from the base point d = 784,
n_train = 512, n_val = 171, T = 150, one seed. Seeds are batched with ``jax.vmap`` (one device).

Memory is XLA's buffer assignment of the compiled hypergradient (``memory_analysis()``,
deterministic): ``temp_size_in_bytes`` is what the computation needs on top of its inputs and
outputs, the figure that grows with T. Reverse mode through T steps stores every step (temp ~ T);
checkpointing stores one carry per segment and one segment's steps (temp ~ 2 sqrt(T)). The
log-log slopes of temp against T are fitted after subtracting the T = 1 buffers (the part that
does not depend on T).

    python -m benchmarks.scaling [--quick] [--out benchmarks/results] [--device cpu|gpu]
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import engine_calls as ec
from benchmarks import harness
from benchmarks.harness import loglog_slope
from benchmarks.problems import DATA_KEYS, inner_loss, logistic_arrays, outer_loss, zeros_w

BASE = dict(d=784, n_train=512, n_val=171, steps=150, lr=0.1, seeds=1)
GRIDS = dict(
    steps=(50, 100, 150, 200, 400, 800, 1600, 3200),
    d=(64, 196, 784, 2048),
    n_train=(128, 256, 512, 1024, 2048),
    seeds=(1, 2, 5, 10, 20),
)
QUICK_BASE = dict(d=64, n_train=96, n_val=40, steps=10, lr=0.1, seeds=1)
QUICK_GRIDS = dict(steps=(10, 80), d=(16, 64), n_train=(48, 96), seeds=(1, 3))


def _data(d, n_train, n_val, seeds, **_):
    """Stacked random problems (leading seed axis), as jnp arrays."""
    n_poison = max(1, n_train // 6)
    per_seed = [logistic_arrays(d, n_train, n_poison, n_val, seed=s) for s in range(seeds)]
    data = {k: jnp.asarray(np.stack([a[k] for a in per_seed])) for k in DATA_KEYS}
    theta = {k: jnp.asarray(np.stack([a[k] for a in per_seed])) for k in ("xp", "log_lam")}
    return data, theta


def _one_seed(data, theta, *, steps, lr, checkpoint):
    w0 = zeros_w(data["x_clean"].shape[-1])
    return ec.rmd(inner_loss, outer_loss, w0, theta, data, steps=steps, lr=lr, checkpoint=checkpoint)


_COMPILED: dict = {}


def compiled_point(point: dict, checkpoint):
    """``(compiled, args)``: one RMD hypergradient per seed (vmapped over the seed axis); cached."""
    key = (tuple(sorted(point.items())), checkpoint)
    if key not in _COMPILED:
        data, theta = _data(**point)
        fn = jax.vmap(functools.partial(_one_seed, steps=point["steps"], lr=point["lr"], checkpoint=checkpoint))
        _COMPILED[key] = jax.jit(fn).lower(data, theta).compile(), (data, theta)
    return _COMPILED[key]


def measure(points: dict, repeats: int) -> dict:
    """Time (median, interleaved) and XLA memory of each named ``(point, checkpoint)``."""
    compiled = {name: compiled_point(point, ck) for name, (point, ck) in points.items()}
    calls = {name: functools.partial(c, *args) for name, (c, args) in compiled.items()}
    times = harness.median_times(calls, repeats=repeats, warmup=1)
    return {name: {"median_ms": 1e3 * times[name], **harness.memory_stats(compiled[name][0])} for name in points}


def over_steps(base: dict, grid, repeats: int) -> dict:
    """Plain against checkpointed over T, plus T = 1 for the T-independent buffers."""
    m = measure({(t, ck): (dict(base, steps=t), ck) for t in (1, *grid) for ck in (None, True)}, repeats)
    rows = []
    for t in grid:
        plain, ckpt = m[(t, None)], m[(t, True)]
        rows.append(
            {
                "T": t,
                "segment": int(np.sqrt(t)),
                "plain_ms": plain["median_ms"],
                "checkpointed_ms": ckpt["median_ms"],
                "plain_temp_bytes": plain["temp_size_in_bytes"],
                "checkpointed_temp_bytes": ckpt["temp_size_in_bytes"],
                "plain_peak_bytes": plain.get("peak_memory_in_bytes"),
                "checkpointed_peak_bytes": ckpt.get("peak_memory_in_bytes"),
            }
        )
    ts = [r["T"] for r in rows]
    at1 = {"plain": m[(1, None)]["temp_size_in_bytes"], "checkpointed": m[(1, True)]["temp_size_in_bytes"]}
    slope = lambda key: loglog_slope(ts, [r[key] for r in rows])
    grown = lambda kind: loglog_slope(ts, [max(r[f"{kind}_temp_bytes"] - at1[kind], 1) for r in rows])
    return {
        "rows": rows,
        "temp_bytes_at_T1": at1,
        "slope_time_plain": slope("plain_ms"),
        "slope_time_checkpointed": slope("checkpointed_ms"),
        "slope_temp_plain": grown("plain"),
        "slope_temp_checkpointed": grown("checkpointed"),
        "slope_temp_plain_raw": slope("plain_temp_bytes"),
        "slope_temp_checkpointed_raw": slope("checkpointed_temp_bytes"),
        "checkpointed_over_plain_temp_at_max_T": rows[-1]["checkpointed_temp_bytes"] / rows[-1]["plain_temp_bytes"],
        "checkpointed_over_plain_time_at_max_T": rows[-1]["checkpointed_ms"] / rows[-1]["plain_ms"],
    }


def over_axis(base: dict, axis: str, grid, repeats: int) -> dict:
    m = measure({v: (dict(base, **{axis: v}), None) for v in grid}, repeats)
    rows = [
        {
            axis: v,
            "median_ms": m[v]["median_ms"],
            "temp_bytes": m[v]["temp_size_in_bytes"],
            "peak_bytes": m[v].get("peak_memory_in_bytes"),
            "argument_bytes": m[v]["argument_size_in_bytes"],
        }
        for v in grid
    ]
    xs = [r[axis] for r in rows]
    return {
        "rows": rows,
        "slope_time": loglog_slope(xs, [r["median_ms"] for r in rows]),
        "slope_temp": loglog_slope(xs, [r["temp_bytes"] for r in rows]),
    }


def run(args) -> dict:
    base, grids = (QUICK_BASE, QUICK_GRIDS) if args.quick else (BASE, GRIDS)
    repeats = 2 if args.quick else 5
    result = {"base": dict(base), "grids": {k: list(v) for k, v in grids.items()}}
    result["over_T"] = over_steps(base, grids["steps"], repeats)
    for axis in ("d", "n_train", "seeds"):
        result[f"over_{axis}"] = over_axis(base, axis, grids[axis], repeats)
    return result


def markdown(result: dict) -> str:
    b, t = result["base"], result["over_T"]
    lines = [
        f"One RMD hypergradient, logistic regression, base d={b['d']}, n_train={b['n_train']}, "
        f"T={b['steps']}, {b['seeds']} seed (float32).",
        "",
        "| T | plain (ms) | checkpointed (ms) | plain temp (MB) | checkpointed temp (MB) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in t["rows"]:
        lines.append(
            f"| {r['T']} | {r['plain_ms']:.2f} | {r['checkpointed_ms']:.2f} | "
            f"{r['plain_temp_bytes'] / 2**20:.3f} | {r['checkpointed_temp_bytes'] / 2**20:.3f} |"
        )
    lines += [
        "",
        f"log-log slope of temp buffers (above T = 1) against T: plain {t['slope_temp_plain']:.2f}, "
        f"checkpointed {t['slope_temp_checkpointed']:.2f} (sqrt(T) is 0.5); time: plain "
        f"{t['slope_time_plain']:.2f}, checkpointed {t['slope_time_checkpointed']:.2f}.",
        "",
    ]
    for axis in ("d", "n_train", "seeds"):
        s = result[f"over_{axis}"]
        lines += [f"| {axis} | median (ms) | temp (MB) |", "|---:|---:|---:|"]
        lines += [f"| {r[axis]} | {r['median_ms']:.2f} | {r['temp_bytes'] / 2**20:.3f} |" for r in s["rows"]]
        lines += ["", f"slope over {axis}: time {s['slope_time']:.2f}, temp {s['slope_temp']:.2f}.", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    return harness.main("scaling", __doc__, run, markdown, argv)


if __name__ == "__main__":
    main()
