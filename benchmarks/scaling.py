"""Scaling of one RMD hypergradient (logistic regression): time and memory as T, d, n_train and the
number of seeds grow; RMD plain against checkpointed (``checkpoint=True``: segments of isqrt(T)).

The problem is :func:`benchmarks.hypergrad.logistic_problem`'s (random data of MNIST shape, 1/6 of
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

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import (
    add_common_args,
    environment,
    jsonable,
    loglog_slope,
    median_times,
    memory_stats,
    select_device,
    write_results,
)
from benchmarks.hypergrad import logistic_arrays
from poison_jax import engine

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
    keys = ("x_clean", "y_clean", "y_poison", "x_val", "y_val")
    data = {k: jnp.asarray(np.stack([a[k] for a in per_seed])) for k in keys}
    theta = {
        "xp": jnp.asarray(np.stack([a["xp"] for a in per_seed])),
        "log_lam": jnp.asarray(np.stack([a["log_lam"] for a in per_seed])),
    }
    return data, theta


def _bce_sum(logits, y):
    return jnp.sum(jax.nn.softplus(logits) - y * logits)


def _one_seed(data, theta, *, steps, lr, checkpoint):
    n_train = data["x_clean"].shape[0] + data["y_poison"].shape[0]
    n_val = data["x_val"].shape[0]

    def inner(w, th):
        data_term = (
            _bce_sum(data["x_clean"] @ w["w"] + w["b"], data["y_clean"])
            + _bce_sum(th["xp"] @ w["w"] + w["b"], data["y_poison"])
        ) / n_train
        return data_term + 0.5 * jnp.exp(th["log_lam"]) * jnp.sum(w["w"] ** 2)

    def outer(w, th):
        return _bce_sum(data["x_val"] @ w["w"] + w["b"], data["y_val"]) / n_val

    d = data["x_clean"].shape[-1]
    w0 = {"w": jnp.zeros(d, jnp.float32), "b": jnp.zeros((), jnp.float32)}
    return engine.rmd_hypergrad(inner, outer, w0, theta, steps=steps, lr=lr, checkpoint=checkpoint)


_COMPILED = {}


def compiled_point(point: dict, checkpoint):
    """``(compiled, args)``: one RMD hypergradient per seed (vmapped over the seed axis); cached."""
    key = (tuple(sorted(point.items())), checkpoint)
    if key not in _COMPILED:
        _COMPILED[key] = _compile_point(point, checkpoint)
    return _COMPILED[key]


def _compile_point(point: dict, checkpoint):
    data, theta = _data(**point)
    fn = jax.vmap(functools.partial(_one_seed, steps=point["steps"], lr=point["lr"], checkpoint=checkpoint))
    compiled = jax.jit(fn).lower(data, theta).compile()
    return compiled, (data, theta)


def measure(points: dict, repeats: int) -> dict:
    """Time (median, interleaved) and XLA memory of each named ``(point, checkpoint)``."""
    compiled = {name: compiled_point(point, ck) for name, (point, ck) in points.items()}
    calls = {name: functools.partial(c, *args) for name, (c, args) in compiled.items()}
    times = median_times(calls, repeats=repeats, warmup=1)
    return {name: {"median_ms": 1e3 * times[name], **memory_stats(compiled[name][0])} for name in points}


def run(quick: bool = False) -> dict:
    base, grids = (QUICK_BASE, QUICK_GRIDS) if quick else (BASE, GRIDS)
    repeats = 2 if quick else 5
    result = {"benchmark": "scaling", "base": dict(base), "grids": {k: list(v) for k, v in grids.items()}}

    # T: plain against checkpointed, plus T = 1 for the T-independent buffers.
    points = {}
    for t in (1, *grids["steps"]):
        for ck in (None, True):
            points[(t, ck)] = (dict(base, steps=t), ck)
    m = measure(points, repeats)
    rows = []
    for t in grids["steps"]:
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
    base_plain, base_ckpt = m[(1, None)]["temp_size_in_bytes"], m[(1, True)]["temp_size_in_bytes"]
    grown = lambda key, b: [max(r[key] - b, 1) for r in rows]
    result["over_T"] = {
        "rows": rows,
        "temp_bytes_at_T1": {"plain": base_plain, "checkpointed": base_ckpt},
        "slope_time_plain": loglog_slope(ts, [r["plain_ms"] for r in rows]),
        "slope_time_checkpointed": loglog_slope(ts, [r["checkpointed_ms"] for r in rows]),
        "slope_temp_plain": loglog_slope(ts, grown("plain_temp_bytes", base_plain)),
        "slope_temp_checkpointed": loglog_slope(ts, grown("checkpointed_temp_bytes", base_ckpt)),
        "slope_temp_plain_raw": loglog_slope(ts, [r["plain_temp_bytes"] for r in rows]),
        "slope_temp_checkpointed_raw": loglog_slope(ts, [r["checkpointed_temp_bytes"] for r in rows]),
        "checkpointed_over_plain_temp_at_max_T": rows[-1]["checkpointed_temp_bytes"] / rows[-1]["plain_temp_bytes"],
        "checkpointed_over_plain_time_at_max_T": rows[-1]["checkpointed_ms"] / rows[-1]["plain_ms"],
    }

    for axis in ("d", "n_train", "seeds"):
        points = {v: (dict(base, **{axis: v}), None) for v in grids[axis]}
        m = measure(points, repeats)
        rows = [
            {
                axis: v,
                "median_ms": m[v]["median_ms"],
                "temp_bytes": m[v]["temp_size_in_bytes"],
                "peak_bytes": m[v].get("peak_memory_in_bytes"),
                "argument_bytes": m[v]["argument_size_in_bytes"],
            }
            for v in grids[axis]
        ]
        xs = [r[axis] for r in rows]
        result[f"over_{axis}"] = {
            "rows": rows,
            "slope_time": loglog_slope(xs, [r["median_ms"] for r in rows]),
            "slope_temp": loglog_slope(xs, [r["temp_bytes"] for r in rows]),
        }
    result.update(environment())
    return jsonable(result)


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, "scaling")
    args = parser.parse_args(argv)
    select_device(args.device)
    result = run(quick=args.quick)
    write_results(args.out, "scaling", result, markdown(result))
    return result


if __name__ == "__main__":
    main()
