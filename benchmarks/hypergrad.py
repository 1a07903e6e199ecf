"""Time of the forward unroll, RMD and IFT on logistic regression of MNIST shape.

d = 784, 512 training rows of which 85 are poison (the hyperparameters, with log-λ), 171
validation rows, T = 150 steps of gradient descent, random data of that shape, float32.
Target: RMD <= 2.5x the forward unroll, measured in one run.

    python benchmarks/hypergrad.py [--quick] [--out benchmarks/results]

Writes ``hypergrad.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import environment, median_times, write_results
from poison_jax import bilevel


def logistic_problem(d: int, n_train: int, n_poison: int, n_val: int, seed: int = 0):
    """Inner and outer losses of L2 logistic regression with poison rows and log-λ in theta."""
    rng = np.random.default_rng(seed)
    w_true = rng.normal(size=d) / np.sqrt(d)
    x_clean = rng.uniform(size=(n_train - n_poison, d)).astype(np.float32)
    x_val = rng.uniform(size=(n_val, d)).astype(np.float32)
    centre = lambda x: (x - 0.5) @ w_true
    y_clean = jnp.asarray(centre(x_clean) > 0, jnp.float32)
    y_val = jnp.asarray(centre(x_val) > 0, jnp.float32)
    y_poison = jnp.asarray(rng.integers(0, 2, n_poison), jnp.float32)
    x_clean, x_val = jnp.asarray(x_clean), jnp.asarray(x_val)

    def bce_sum(logits, y):
        return jnp.sum(jax.nn.softplus(logits) - y * logits)

    def inner_loss(w, theta):
        data_term = (bce_sum(x_clean @ w["w"] + w["b"], y_clean)
                     + bce_sum(theta["xp"] @ w["w"] + w["b"], y_poison)) / n_train
        return data_term + 0.5 * jnp.exp(theta["log_lam"]) * jnp.sum(w["w"] ** 2)

    def outer_loss(w, theta):
        return bce_sum(x_val @ w["w"] + w["b"], y_val) / n_val

    w0 = {"w": jnp.zeros(d, jnp.float32), "b": jnp.zeros((), jnp.float32)}
    theta = {"xp": jnp.asarray(rng.uniform(size=(n_poison, d)), jnp.float32),
             "log_lam": jnp.asarray(np.log(0.05), jnp.float32)}
    return inner_loss, outer_loss, w0, theta


def run(quick: bool = False) -> dict:
    sizes = dict(d=64, n_train=128, n_poison=20, n_val=50) if quick else dict(d=784, n_train=512, n_poison=85, n_val=171)
    steps, lr = (30, 0.1) if quick else (150, 0.1)
    repeats = 5 if quick else 50
    inner, outer, w0, theta = logistic_problem(**sizes)
    w_star = bilevel.unroll(inner, w0, theta, steps=steps, lr=lr)

    calls = {
        "forward unroll": lambda: bilevel.unroll(inner, w0, theta, steps=steps, lr=lr),
        "RMD": lambda: bilevel.rmd_hypergrad(inner, outer, w0, theta, steps=steps, lr=lr),
        "RMD, checkpointed": lambda: bilevel.rmd_hypergrad(inner, outer, w0, theta, steps=steps, lr=lr, checkpoint=True),
        "IFT solve (given w*)": lambda: bilevel.ift_hypergrad(inner, outer, w_star, theta, cg_iters=50, cg_tol=1e-6),
        "IFT incl. training": lambda: bilevel.hypergrad(bilevel.IFT(steps=steps, lr=lr, cg_iters=50, cg_tol=1e-6),
                                                        inner, outer, w0, theta),
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
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (seconds)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for hypergrad.json (default: %(default)s)")
    args = parser.parse_args(argv)
    result = run(quick=args.quick)
    write_results(args.out, "hypergrad", result, markdown(result))
    return result


if __name__ == "__main__":
    main()
