"""What the batching benchmark times: loop against vmap on one device, jit against no jit, the
profile of one seed's step, and (in a fresh process split into one device per core) the sharded call
with what the sweep runner adds (chunks of hyperiterations, victim evaluation, λ_CLEAN CV)."""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import engine_calls as ec
from benchmarks import harness
from benchmarks.batching.projection import SWEEP
from benchmarks.problems import attack_setup, logistic_problem, seed_slice
from poison_jax.poisoning import attack, models

SIZES = dict(d=784, n_train=512, n_val=171, n_poison=85, steps=150, lr=0.1, seeds=10)
QUICK = dict(d=64, n_train=96, n_val=40, n_poison=17, steps=20, lr=0.1, seeds=4)
NOJIT_STEPS = {False: 20, True: 3}
CHUNK = 10  # hyperiterations a sweep-runner call
SETTINGS_AXIS = 3  # the sweep's fixed-Λ settings: log λ = -8, large, λ_CLEAN


def _setup(sizes):
    return attack_setup(sizes, models.logistic_regression(sizes["d"]))


def _single_step(settings, splits, state):
    return attack.poison_step(settings, splits, state, update_xp=True, update_lam=False)


def _loop_call(settings, splits, state, seeds):
    singles = [(seed_slice(splits, i), seed_slice(state, i)) for i in range(seeds)]
    return lambda: [_single_step(settings, sp, st) for sp, st in singles]


def cores_busy(call, repeats: int) -> float:
    """Process CPU time over wall time during ``repeats`` calls: how many cores XLA keeps busy
    (its intra-op thread pool parallelises single ops too; spinning threads count)."""
    jax.block_until_ready(call())
    cpu, start = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(call())
    return (time.process_time() - cpu) / (time.perf_counter() - start)


def one_device(quick: bool) -> dict:
    """Loop against vmap in this process (JAX's default: one device), and the same sizes' bare RMD
    hypergradient (benchmarks.scaling's, no attack around it) for reference."""
    from benchmarks import scaling

    sizes = QUICK if quick else SIZES
    settings, splits, state = _setup(sizes)
    point = {k: sizes[k] for k in ("d", "n_train", "n_val", "steps", "lr")}
    bare_one, args_one = scaling.compiled_point(dict(point, seeds=1), None)
    bare_all, args_all = scaling.compiled_point(dict(point, seeds=sizes["seeds"]), None)
    calls = {
        "loop": _loop_call(settings, splits, state, sizes["seeds"]),
        "vmap": lambda: _single_step(settings, splits, state),
        "bare_rmd_one_seed": lambda: bare_one(*args_one),
        "bare_rmd_vmap": lambda: bare_all(*args_all),
    }
    times = harness.median_times(calls, repeats=3 if quick else 15, warmup=2)
    return {
        "sizes": sizes,
        "loop_ms": 1e3 * times["loop"],
        "vmap_ms": 1e3 * times["vmap"],
        "vmap_over_loop": times["vmap"] / times["loop"],
        "cores_busy": {name: cores_busy(calls[name], 20 if quick else 5) for name in ("loop", "vmap")},
        "bare_rmd_one_seed_ms": 1e3 * times["bare_rmd_one_seed"],
        "bare_rmd_vmap_ms": 1e3 * times["bare_rmd_vmap"],
        "bare_rmd_vmap_over_loop": times["bare_rmd_vmap"] / (sizes["seeds"] * times["bare_rmd_one_seed"]),
    }


def jit_vs_nojit(quick: bool) -> dict:
    sizes = QUICK if quick else SIZES
    steps = NOJIT_STEPS[quick]
    inner, outer, w0, theta, data = logistic_problem(sizes["d"], sizes["n_train"], sizes["n_poison"], sizes["n_val"])
    call = lambda: ec.rmd(inner, outer, w0, theta, data, steps=steps, lr=sizes["lr"])

    def eager():
        with jax.disable_jit():
            return call()

    jit_ms = 1e3 * harness.median_times({"jit": call}, repeats=5 if quick else 20)["jit"]
    # Eager execution compiles each primitive on first use: warm up once (not in --quick: slow).
    eager_s = harness.median_times({"eager": eager}, repeats=1 if quick else 3, warmup=0 if quick else 1)["eager"]
    eager_ms = 1e3 * eager_s
    return {"steps": steps, "jit_ms": jit_ms, "no_jit_ms": eager_ms, "no_jit_over_jit": eager_ms / jit_ms}


def _copy_bandwidth_gbs(quick: bool) -> float:
    """Host memory bandwidth seen by one core: a large numpy copy (read + write)."""
    a = np.ones(2**22 if quick else 2**25, np.float64)
    b = np.empty_like(a)
    best = min(harness.first_call_seconds(lambda: np.copyto(b, a)) for _ in range(3))
    return 2 * a.nbytes / best / 1e9


def _matvec_gbs(n: int, d: int, quick: bool, passes: int = 200) -> float:
    """The rate of bare matrix-vector products, as many passes over an (n, d) matrix."""
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(n, d)), jnp.float32)

    @jax.jit
    def matvecs(v):
        return jax.lax.scan(lambda v, _: ((x.T @ (x @ v)) * 1e-3, None), v, None, length=passes // 2)[0]

    v = jnp.ones(d, jnp.float32)
    ms = 1e3 * harness.median_times({"mv": lambda: matvecs(v)}, repeats=5 if quick else 20)["mv"]
    return passes * 4 * n * d / ms / 1e6


def profile(quick: bool, loop_ms: float, seeds: int) -> dict:
    """Where one seed's hypergradient spends its time: XLA's cost analysis of one gradient-descent step
    and of its reverse (a scan's body is counted once by XLA, so per step, times T), the rate reached,
    the rate of bare matrix-vector products on the same data, and the dispatch cost of a jitted call."""
    sizes = QUICK if quick else SIZES
    n, d, steps, lr = sizes["n_train"], sizes["d"], sizes["steps"], sizes["lr"]
    inner, _, w0, theta, data = logistic_problem(d, n, sizes["n_poison"], sizes["n_val"])

    def step(w, th):
        return jax.tree_util.tree_map(lambda a, b: a - lr * b, w, jax.grad(inner)(w, th, data))

    fwd = harness.cost_stats(jax.jit(step).lower(w0, theta).compile())
    rev = harness.cost_stats(jax.jit(lambda w, th, ct: jax.vjp(step, w, th)[1](ct)).lower(w0, theta, w0).compile())
    flops = steps * (fwd["flops"] + rev["flops"])
    bytes_accessed = steps * (fwd["bytes_accessed"] + rev["bytes_accessed"])
    per_seed_ms = loop_ms / seeds
    noop, z = jax.jit(lambda x: x + 1), jnp.zeros(())
    dispatch_ms = 1e3 * harness.median_times({"noop": lambda: noop(z)}, repeats=200, warmup=5)["noop"]
    return {
        "method": "XLA cost analysis of one GD step and of its vjp, x T",
        "one_seed_flops": flops,
        "one_seed_bytes_accessed": bytes_accessed,
        "arithmetic_intensity_flops_per_byte": flops / bytes_accessed,
        "one_seed_ms": per_seed_ms,
        "achieved_gflops": flops / per_seed_ms / 1e6,
        "achieved_gbs": bytes_accessed / per_seed_ms / 1e6,
        "bare_matvec_gbs_same_matrix": _matvec_gbs(n, d, quick),
        "training_matrix_mb": 4 * n * d / 2**20,
        "host_copy_gbs_one_core": _copy_bandwidth_gbs(quick),
        "dispatch_ms_per_call": dispatch_ms,
        "dispatch_share_of_loop": dispatch_ms * seeds / loop_ms,
    }


# The sharded case runs in a fresh process: the CPU must be split into devices before JAX starts.


def _runner_calls(settings, sharding, s_splits, s_state, sizes: dict, quick: bool) -> dict:
    """The victim evaluation of one cell (all seeds, sharded) and the λ_CLEAN cross-validation, as the
    sweep runner calls them."""
    from poison_jax.poisoning import hyperopt, victims

    x, y, _ = attack.poisoned_training_set(s_splits, s_state)
    keys = sharding.put(jax.random.split(jax.random.PRNGKey(0), sizes["seeds"]))
    grid = jnp.linspace(-8.0, 1.0, SWEEP["cv_grid"])

    def victim():
        return victims.evaluate_victim(
            settings.model,
            x,
            y,
            s_state.log_lam,
            keys,
            s_splits.x_test,
            s_splits.y_test,
            lr=SWEEP["eval_lr"],
            epochs=5 if quick else SWEEP["eval_epochs"],
            batch_size=min(64, sizes["n_train"]),
        )

    def cv():
        x_train, y_train = s_splits.x_train, s_splits.y_train
        folds, steps, lr = SWEEP["cv_folds"], sizes["steps"], sizes["lr"]
        return hyperopt.cv_log_lambda(settings.model, x_train, y_train, keys, grid, folds=folds, steps=steps, lr=lr)

    return {"victim_eval": victim, "cv": cv}


def sharded_case(quick: bool) -> dict:
    from poison_jax.experiments.devices import SeedSharding

    sizes = QUICK if quick else SIZES
    settings, splits, state = _setup(sizes)
    sharding = SeedSharding(sizes["seeds"], jax.devices())
    s_splits, s_state = sharding.put_splits(splits), sharding.put(state)
    # What the sweep runs on a CPU: one lane of seeds per device, each looping over its own.
    lanes = dataclasses.replace(settings, seed_lanes=sharding.num_devices)
    chunked = lambda update_lam: (
        lambda: attack.run_attack(lanes, s_splits, s_state, num_iters=CHUNK, update_xp=True, update_lam=update_lam)
    )
    calls = {
        "sharded": lambda: _single_step(settings, s_splits, s_state),
        "lanes": lambda: _single_step(lanes, s_splits, s_state),
        "sharded_chunk_fixed": chunked(False),
        "sharded_chunk_multi": chunked(True),
    }
    # The fixed-Λ settings as an axis beside the seeds' in one program (each seed's rows read once for
    # all of them), against one program per setting, what the sweep runs.
    stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a] * SETTINGS_AXIS), s_state)
    settings_axis = jax.jit(jax.vmap(lambda st: _single_step(lanes, s_splits, st)))
    calls["settings_axis"] = lambda: settings_axis(stacked)
    if not quick:  # the loop and the one-device vmap again, in this process, interleaved with the rest
        calls.update(
            loop=_loop_call(settings, splits, state, sizes["seeds"]),
            vmap_one_device=lambda: _single_step(settings, splits, state),
        )
    runner = _runner_calls(settings, sharding, s_splits, s_state, sizes, quick)
    first = {name: harness.first_call_seconds(calls[name]) for name in ("sharded_chunk_fixed", "sharded_chunk_multi")}
    times = harness.median_times(calls, repeats=3 if quick else 10, warmup=1)
    first.update({name: harness.first_call_seconds(fn) for name, fn in runner.items()})
    extra = harness.median_times(runner, repeats=1 if quick else 3, warmup=0)
    return {
        "devices": len(jax.devices()),
        "device_kind": jax.devices()[0].platform,
        "seeds": sizes["seeds"],
        "ms": {name: 1e3 * t for name, t in times.items()},
        "chunk": CHUNK,
        "victim_eval_ms_per_cell": 1e3 * extra["victim_eval"],
        "victim_eval_epochs": 5 if quick else SWEEP["eval_epochs"],
        "cv_ms": 1e3 * extra["cv"],
        "first_call_s": first,
    }
