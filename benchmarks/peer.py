"""The peer: the same logistic-regression RMD hypergradient written the way PyTorch research code
does it (an unrolled loop of ``torch.autograd.grad(..., create_graph=True)``, then one backward
pass), timed in the same process as poison_jax's RMD hypergradient.

Problem: :func:`benchmarks.problems.logistic_arrays` (MNIST shape: d = 784, 512 training rows of
which 85 poison, 171 validation, T = 150 full-batch GD steps, η = 0.1, float32), the same arrays fed
to both. The hypergradient is with respect to the poison features and log λ; the two must agree
(cosine > 0.999). torch is an optional extra: ``pip install 'poison-jax[bench]'`` (never a core or
test dependency); without it the torch part records why it was skipped. Goal ``jax_over_torch``.

    python -m benchmarks.peer [--quick] [--out benchmarks/results] [--device cpu|gpu]
"""

from __future__ import annotations

import jax
import numpy as np

from benchmarks import engine_calls as ec
from benchmarks import harness
from benchmarks.goals import BY_ID
from benchmarks.problems import logistic_arrays, logistic_problem

SIZES = dict(d=784, n_train=512, n_poison=85, n_val=171, steps=150, lr=0.1)
QUICK = dict(d=64, n_train=96, n_poison=16, n_val=40, steps=20, lr=0.1)
SKIPPED = "torch not installed: pip install 'poison-jax[bench]'"
GOAL = BY_ID["jax_over_torch"]


def torch_hypergrad_fn(arrays: dict, steps: int, lr: float, device: str = "cpu"):
    """The peer: ``() -> (value, dxp, dlog_lam)`` by an unrolled ``create_graph=True`` loop."""
    import torch

    dev = torch.device(device)
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=dev)
    x_clean, y_clean, y_poison = t(arrays["x_clean"]), t(arrays["y_clean"]), t(arrays["y_poison"])
    x_val, y_val = t(arrays["x_val"]), t(arrays["y_val"])
    xp0, log_lam0 = t(arrays["xp"]), t(arrays["log_lam"])
    n_train, n_val, d = arrays["n_train"], x_val.shape[0], x_val.shape[1]

    def bce_sum(logits, y):
        return torch.sum(torch.nn.functional.softplus(logits) - y * logits)

    def hypergrad():
        xp = xp0.clone().requires_grad_(True)
        log_lam = log_lam0.clone().requires_grad_(True)
        w = torch.zeros(d, device=dev, requires_grad=True)
        b = torch.zeros((), device=dev, requires_grad=True)
        for _ in range(steps):
            data_term = (bce_sum(x_clean @ w + b, y_clean) + bce_sum(xp @ w + b, y_poison)) / n_train
            loss = data_term + 0.5 * torch.exp(log_lam) * torch.sum(w**2)
            gw, gb = torch.autograd.grad(loss, (w, b), create_graph=True)
            w, b = w - lr * gw, b - lr * gb
        value = bce_sum(x_val @ w + b, y_val) / n_val
        dxp, dlam = torch.autograd.grad(value, (xp, log_lam))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return value.detach(), dxp, dlam

    return hypergrad


def _against_torch(torch, sizes: dict, jax_call, jax_forward, repeats: int, quick: bool) -> dict:
    """Time the peer with poison_jax, interleaved; their agreement."""
    problem = {k: sizes[k] for k in ("d", "n_train", "n_poison", "n_val")}
    torch_device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    peer = torch_hypergrad_fn(logistic_arrays(**problem), sizes["steps"], sizes["lr"], torch_device)

    def torch_call() -> None:  # the peer synchronises itself; nothing for JAX to wait on
        peer()

    calls = {"poison_jax": jax_call, "torch": torch_call, "poison_jax forward unroll": jax_forward}
    times = harness.median_times(calls, repeats=repeats, warmup=1 if quick else 2)
    g_jax = jax_call()[1]
    flat_jax = np.concatenate([np.ravel(g_jax["xp"]), np.ravel(g_jax["log_lam"])])
    _, dxp, dlam = peer()
    flat_torch = np.concatenate([dxp.detach().cpu().numpy().ravel(), dlam.detach().cpu().numpy().ravel()])
    ratio = times["poison_jax"] / times["torch"]
    return {
        "poison_jax_ms": 1e3 * times["poison_jax"],
        "poison_jax_forward_ms": 1e3 * times["poison_jax forward unroll"],
        "torch": {
            "version": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": torch_device,
            "style": "eager, unrolled loop of torch.autograd.grad(create_graph=True), then autograd.grad of the "
            "validation loss",
            "median_ms": 1e3 * times["torch"],
            "per_step_ms": 1e3 * times["torch"] / sizes["steps"],
            "agreement": {
                "cosine": harness.cosine(flat_jax, flat_torch),
                "rel_error": harness.rel_error(flat_jax, flat_torch),
                "log_lam_rel_error": harness.rel_error(np.ravel(g_jax["log_lam"]), dlam.detach().cpu().numpy()),
            },
        },
        "poison_jax_over_torch": ratio,
        "poison_jax_per_step_ms": 1e3 * times["poison_jax"] / sizes["steps"],
        "goals": {GOAL.id: ratio},
    }


def run(args) -> dict:
    sizes = QUICK if args.quick else SIZES
    steps, lr = sizes["steps"], sizes["lr"]
    inner, outer, w0, theta, data = logistic_problem(*(sizes[k] for k in ("d", "n_train", "n_poison", "n_val")))
    jax_call = lambda: ec.rmd(inner, outer, w0, theta, data, steps=steps, lr=lr)
    jax_forward = lambda: ec.fit(ec.rmd_method(steps, lr), inner, w0, theta, data)
    result = {"problem": {**sizes, "dtype": "float32", "model": "logistic regression"}}
    repeats = 3 if args.quick else 15
    try:
        import torch
    except ImportError:
        times = harness.median_times({"poison_jax": jax_call}, repeats=repeats)
        skipped = {"torch": {"skipped": SKIPPED}, "goals": {GOAL.id: None}}
        return {**result, "poison_jax_ms": 1e3 * times["poison_jax"], **skipped}
    return {**result, **_against_torch(torch, sizes, jax_call, jax_forward, repeats, args.quick)}


def markdown(result: dict) -> str:
    p = result["problem"]
    lines = [
        f"RMD hypergradient, LR d={p['d']}, n_train={p['n_train']} (poison {p['n_poison']}), T={p['steps']}, "
        "same process:",
        "",
        "| implementation | median (ms) | per step (ms) |",
        "|---|---:|---:|",
        f"| poison_jax RMD hypergradient (jitted) | {result['poison_jax_ms']:.2f} | "
        f"{result['poison_jax_ms'] / p['steps']:.3f} |",
    ]
    t = result["torch"]
    if "skipped" in t:
        return "\n".join([*lines, "", f"PyTorch peer: skipped ({t['skipped']})."])
    lines += [
        f"| PyTorch {t['version']} peer ({t['threads']} threads, {t['device']}) | {t['median_ms']:.2f} | "
        f"{t['per_step_ms']:.3f} |",
        "",
        f"poison_jax / torch = **{result['poison_jax_over_torch']:.3f}** (target <= {GOAL.target}); "
        f"hypergradients agree: cosine {t['agreement']['cosine']:.6f}, relative difference "
        f"{t['agreement']['rel_error']:.1e}.",
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    return harness.main("peer", __doc__, run, markdown, argv)


if __name__ == "__main__":
    main()
