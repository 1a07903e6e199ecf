"""Time of the forward unroll, RMD and IFT on logistic regression of MNIST shape.

d = 784, 512 training rows of which 85 are poison (the hyperparameters, with log-λ), 171
validation rows, T = 150 steps of gradient descent, random data of that shape, float32.
Target: RMD <= 2.5x the forward unroll, measured in one run.

    python -m benchmarks.hypergrad [--quick] [--out benchmarks/results] [--device cpu|gpu]

Writes ``hypergrad.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import add_common_args, environment, median_times, select_device, write_results
from poison_jax import engine


def logistic_arrays(d: int, n_train: int, n_poison: int, n_val: int, seed: int = 0) -> dict:
    """The data of :func:`logistic_problem` as float32 numpy arrays (shared with the PyTorch peer)."""
    rng = np.random.default_rng(seed)
    w_true = rng.normal(size=d) / np.sqrt(d)
    x_clean = rng.uniform(size=(n_train - n_poison, d)).astype(np.float32)
    x_val = rng.uniform(size=(n_val, d)).astype(np.float32)
    centre = lambda x: (x - 0.5) @ w_true
    y_clean = (centre(x_clean) > 0).astype(np.float32)
    y_val = (centre(x_val) > 0).astype(np.float32)
    y_poison = rng.integers(0, 2, n_poison).astype(np.float32)
    xp = rng.uniform(size=(n_poison, d)).astype(np.float32)
    return {
        "x_clean": x_clean,
        "y_clean": y_clean,
        "x_val": x_val,
        "y_val": y_val,
        "y_poison": y_poison,
        "xp": xp,
        "log_lam": np.float32(np.log(0.05)),
        "n_train": n_train,
    }


def _bce_sum(logits, y):
    return jnp.sum(jax.nn.softplus(logits) - y * logits)


def inner_loss(w, theta, data):
    """L2 logistic regression on the clean rows and the poison rows ``theta["xp"]``; data as an argument."""
    data_term = (
        _bce_sum(data["x_clean"] @ w["w"] + w["b"], data["y_clean"])
        + _bce_sum(theta["xp"] @ w["w"] + w["b"], data["y_poison"])
    ) / data["n_train"]
    return data_term + 0.5 * jnp.exp(theta["log_lam"]) * jnp.sum(w["w"] ** 2)


def outer_loss(w, theta, data):
    return _bce_sum(data["x_val"] @ w["w"] + w["b"], data["y_val"]) / data["y_val"].shape[0]


def logistic_problem(d: int, n_train: int, n_poison: int, n_val: int, seed: int = 0):
    """``(inner_loss, outer_loss, w0, theta, data)`` of L2 logistic regression with poison rows and
    log-λ in theta; the losses take ``data`` as their third argument (the engine passes it on)."""
    arrays = logistic_arrays(d, n_train, n_poison, n_val, seed)
    data = {k: jnp.asarray(arrays[k]) for k in ("x_clean", "y_clean", "x_val", "y_val", "y_poison")}
    data["n_train"] = jnp.asarray(n_train, jnp.float32)
    w0 = {"w": jnp.zeros(d, jnp.float32), "b": jnp.zeros((), jnp.float32)}
    theta = {"xp": jnp.asarray(arrays["xp"]), "log_lam": jnp.asarray(arrays["log_lam"], jnp.float32)}
    return inner_loss, outer_loss, w0, theta, data


def run(quick: bool = False) -> dict:
    sizes = (
        dict(d=64, n_train=128, n_poison=20, n_val=50) if quick else dict(d=784, n_train=512, n_poison=85, n_val=171)
    )
    steps, lr = (30, 0.1) if quick else (150, 0.1)
    repeats = 5 if quick else 50
    inner, outer, w0, theta, data = logistic_problem(**sizes)
    w_star = engine.unroll(inner, w0, theta, data, steps=steps, lr=lr)

    calls = {
        "forward unroll": lambda: engine.unroll(inner, w0, theta, data, steps=steps, lr=lr),
        "RMD": lambda: engine.rmd_hypergrad(inner, outer, w0, theta, data, steps=steps, lr=lr),
        "RMD, checkpointed": lambda: engine.rmd_hypergrad(
            inner, outer, w0, theta, data, steps=steps, lr=lr, checkpoint=True
        ),
        "IFT solve (given w*)": lambda: engine.ift_hypergrad(
            inner, outer, w_star, theta, data, cg_iters=50, cg_tol=1e-6
        ),
        "IFT incl. training": lambda: engine.hypergrad(
            engine.IFT(steps=steps, lr=lr, cg_iters=50, cg_tol=1e-6), inner, outer, w0, theta, data
        ),
    }
    times = median_times(calls, repeats=repeats)
    forward = times["forward unroll"]
    rows = [{"method": name, "median_ms": 1e3 * t, "ratio_to_forward": t / forward} for name, t in times.items()]
    return {
        "benchmark": "hypergrad",
        "problem": {**sizes, "steps": steps, "lr": lr, "dtype": "float32", "model": "logistic regression"},
        "rows": rows,
        "goals": {"RMD / forward unroll <= 2.5": times["RMD"] / forward},
        **environment(),
    }


def markdown(result: dict) -> str:
    lines = ["| method | median (ms) | × forward unroll |", "|---|---:|---:|"]
    lines += [f"| {r['method']} | {r['median_ms']:.3f} | {r['ratio_to_forward']:.2f} |" for r in result["rows"]]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, "hypergrad")
    args = parser.parse_args(argv)
    select_device(args.device)
    result = run(quick=args.quick)
    write_results(args.out, "hypergrad", result, markdown(result))
    return result


if __name__ == "__main__":
    main()
