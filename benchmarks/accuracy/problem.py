"""The accuracy study's problems (one split of the paper's problem, float32 and float64) and their
exact references (float64, dense Hessian solve at a w* polished by Newton steps)."""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from benchmarks import engine_calls as ec
from poison_jax.poisoning import attack, data, models

LR = dict(name="LR, MNIST shape", dataset="mnist5k", model="lr", d=784, n_train=512, n_val=171, n_poison=85)
LR.update(lr=0.1, log_lam=math.log(20.0), seed=0, cg_max=500, cg_tol=1e-6, ref_steps=3000, repeats=5)
LR.update(steps=(25, 50, 100, 150, 200, 300, 400, 600, 800, 1200, 1600, 2400, 3200, 4800))
LR.update(cg_iters=(1, 2, 4, 8, 16, 32, 64, 128, 256))
MLP = dict(
    LR,
    name="reduced MLP",
    dataset="digits",
    model="mlp",
    d=64,
    hidden=(16, 8),
    n_train=180,
    n_val=100,
    n_poison=34,
    log_lam=2.5,
    init_seed=1,
    steps=(100, 200, 400, 800, 1600, 3200, 6400, 12800),
    cg_iters=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    cg_max=1000,
    ref_steps=20000,
    repeats=3,
)
QUICK_LR = dict(LR, name="LR, digits (quick)", dataset="digits", d=64, n_train=150, n_val=60, n_poison=17)
QUICK_LR.update(lr=0.5, steps=(4, 32), cg_iters=(2, 16), cg_max=200, ref_steps=500, repeats=2, bisect=False)
QUICK_MLP = dict(
    MLP,
    name="reduced MLP (quick)",
    hidden=(4, 2),
    n_train=100,
    n_val=50,
    n_poison=10,
    steps=(400,),
    cg_iters=(8,),
    cg_max=200,
    ref_steps=2000,
    repeats=2,
    diagnostic=False,
)


def smooth_leaky_relu(z):
    """The paper's LeakyReLU (slope 0.1) made twice differentiable: ``0.1 z + 0.9 softplus(z)``."""
    return 0.1 * z + 0.9 * jax.nn.softplus(z)


def reduced_mlp(d: int, hidden, activation=smooth_leaky_relu) -> models.Model:
    """The paper's DNN shape and initialisation with another activation (pure JAX, any dtype)."""
    paper = models.mlp(d, hidden=hidden)

    def apply(params, x):
        for i, name in enumerate(paper.layers):
            x = x @ params[name]["kernel"] + params[name]["bias"]
            if i < len(paper.layers) - 1:
                x = activation(x)
        return x[..., 0]

    return models.Model(f"{paper.name}, smoothed LeakyReLU", paper.init, apply, paper.layers, True)


def _cast(dtype):
    return lambda a: jnp.asarray(a, dtype) if np.issubdtype(np.asarray(a).dtype, np.floating) else jnp.asarray(a)


class Problem:
    """One split of the paper's problem with all poison points active; losses in float32 and float64."""

    def __init__(self, spec: dict, bias_penalty: bool | None = None, model: models.Model | None = None):
        self.spec = spec
        ds = data.load_dataset(spec["dataset"])
        splits = data.sample_splits(ds, seeds=[spec["seed"]], n_train=spec["n_train"], n_val=spec["n_val"])
        if model is None:
            lr = spec["model"] == "lr"
            model = models.logistic_regression(spec["d"]) if lr else reduced_mlp(spec["d"], spec["hidden"])
        self.model = model
        self.bias_penalty = spec["model"] == "mlp" if bias_penalty is None else bias_penalty
        settings = attack.AttackSettings(
            model, ec.rmd_method(1, spec["lr"]), alpha=1.0, beta=1.0, x_box=(0.0, 1.0), lam_box=(-8.0, 12.0)
        )
        keys = jax.random.split(jax.random.PRNGKey(spec["seed"]), 1)
        state = attack.init_attack(settings, keys, splits, spec["n_poison"], spec["log_lam"])
        state = attack.set_poison_count(state, spec["n_poison"], spec["n_poison"])
        self.state = jax.tree_util.tree_map(lambda a: np.asarray(a[0]), state)
        self.arrays = [np.asarray(a[0]) for a in (splits.x_train, splits.y_train, splits.x_val, splits.y_val)]
        self.w0 = jax.tree_util.tree_map(np.asarray, model.init(jax.random.PRNGKey(spec.get("init_seed", 0))))
        self._losses: dict = {}

    def losses(self, dtype):
        """``(inner, outer, w0, theta)`` in ``dtype`` (the same function objects on every call)."""
        key = jnp.dtype(dtype).name
        if key not in self._losses:
            cast = _cast(dtype)
            state = jax.tree_util.tree_map(cast, self.state)
            inner, outer = attack.make_losses(self.model, *(cast(a) for a in self.arrays), state)
            if self.bias_penalty:
                inner = self._with_bias_penalty(inner)
            theta = {"xp": state.xp, "log_lam": state.log_lam}
            self._losses[key] = (inner, outer, jax.tree_util.tree_map(cast, self.w0), theta)
        return self._losses[key]

    def _with_bias_penalty(self, paper_inner):
        layers, n_train = self.model.layers, self.arrays[0].shape[0]

        def inner(w, theta):
            biases = jnp.stack([jnp.sum(w[name]["bias"] ** 2) for name in layers])
            return paper_inner(w, theta) + 0.5 * jnp.sum(jnp.exp(theta["log_lam"]) * biases) / n_train

        return inner


def _newton_polish(inner, theta, flat, unravel, max_steps: int = 20):
    """Newton steps from ``flat``, accepted only while the gradient shrinks: ``(flat, norm, steps, hessian)``."""
    grad = jax.jit(lambda f: ravel_pytree(jax.grad(inner)(unravel(f), theta))[0])
    hessian = jax.jit(jax.hessian(lambda f: inner(unravel(f), theta)))
    norm, steps = float(jnp.linalg.norm(grad(flat))), 0
    for _ in range(max_steps):
        if norm < 1e-12:
            break
        candidate = flat - jnp.linalg.solve(hessian(flat), grad(flat))
        candidate_norm = float(jnp.linalg.norm(grad(candidate)))
        if not candidate_norm < norm:
            break
        flat, norm, steps = candidate, candidate_norm, steps + 1
    return flat, norm, steps, hessian


def reference(problem: Problem) -> dict:
    """w* (GD then Newton, float64), the Hessian's extreme eigenvalues there, the exact hypergradient."""
    spec = problem.spec
    with jax.enable_x64(True):
        inner, outer, w0, theta = problem.losses(jnp.float64)
        start = time.perf_counter()
        flat, unravel = ravel_pytree(ec.fit(ec.rmd_method(spec["ref_steps"], spec["lr"]), inner, w0, theta))
        gd_grad_norm = float(jnp.linalg.norm(ravel_pytree(jax.grad(inner)(unravel(flat), theta))[0]))
        flat, norm, newton, hessian = _newton_polish(inner, theta, flat, unravel)
        eig = np.linalg.eigvalsh(np.asarray(hessian(flat)))
        exact = ec.exact(inner, outer, unravel(flat), theta)
        seconds = time.perf_counter() - start
        w_star = jax.tree_util.tree_map(np.asarray, unravel(flat))
    info = {
        "gd_steps": spec["ref_steps"],
        "gd_grad_norm": gd_grad_norm,
        "newton_steps": newton,  # accepted Newton steps
        "grad_norm": norm,
        "hessian_min_eig": float(eig[0]),
        "hessian_max_eig": float(eig[-1]),
        "strongly_convex": bool(eig[0] > 0),
        "num_params": int(flat.size),
        "outer_value": float(exact.value),
        "seconds": seconds,
        "dtype": "float64",
    }
    return {"w_star": w_star, "exact": jax.tree_util.tree_map(np.asarray, exact.grad), "info": info}


def paper_activation_diagnostic(spec: dict) -> dict:
    """Why the paper's LeakyReLU MLP cannot serve as an exact reference: after long GD the gradient
    has not vanished, pre-activations sit at the kink, and the Hessian is not positive definite."""
    problem = Problem(spec, bias_penalty=False, model=models.mlp(spec["d"], hidden=spec["hidden"]))
    with jax.enable_x64(True):
        inner, _, w0, theta = problem.losses(jnp.float64)
        w = ec.fit(ec.rmd_method(spec["ref_steps"], spec["lr"]), inner, w0, theta)
        flat, unravel = ravel_pytree(w)
        grad_norm = float(jnp.linalg.norm(ravel_pytree(jax.grad(inner)(w, theta))[0]))
        eig = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda f: inner(unravel(f), theta))(flat)))
        x = jnp.asarray(problem.arrays[0], jnp.float64)
        near_kink = 0
        for name in problem.model.layers[:-1]:
            z = x @ w[name]["kernel"] + w[name]["bias"]
            near_kink += int(jnp.sum(jnp.abs(z) < 1e-3))
            x = jnp.where(z > 0, z, 0.1 * z)
    return {
        "model": problem.model.name,
        "gd_steps": spec["ref_steps"],
        "grad_norm_after_gd": grad_norm,
        "hessian_min_eig": float(eig[0]),
        "hessian_max_eig": float(eig[-1]),
        "hidden_preactivations_within_1e-3_of_kink": near_kink,
        "note": "LeakyReLU + L2 penalty, biases unpenalised (the paper's MLP)",
    }
