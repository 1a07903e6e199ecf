"""Batching over seeds and jit: one RMD hypergradient of logistic regression (MNIST shape) for 10
seeds as a Python loop over the seeds, as one ``vmap``ped call, and as one call with the seed axis
sharded over the host's CPU cores (what the sweep runner does); jit against no jit. From the sharded
timings, the projected wall time of the paper's whole MNIST LR sweep.

* Sizes: d = 784, 512 training rows of which 85 poison, 171 validation, T = 150, η = 0.1, random
  data of that shape (:func:`benchmarks.attack_step.random_splits`), 10 seeds. A hyperiteration is
  :func:`poison_jax.poisoning.attack.poison_step` with Λ fixed (one hypergradient a seed).
* Loop: the same jitted step called on each seed's slice. vmap: one call on all seeds (one device).
  Sharded: a fresh process that splits the host into one XLA device per core
  (``jax_num_cpu_devices``) and places the seed axis with
  :class:`poison_jax.experiments.devices.SeedSharding` (a ``Mesh`` axis ``"seed"``, ``NamedSharding``); there
  the loop and the one-device vmap are timed again, interleaved with it.
* jit against no jit: one RMD hypergradient at T = 20 (eagerly it is slow) under
  ``jax.disable_jit()`` against the jitted call.
* Profile: XLA's cost analysis of the one-seed step (flops, bytes accessed), the bandwidth it
  reaches, the host's copy bandwidth, and the dispatch cost of a jitted call: why batching gains
  what it gains.
* Sweep projection (4 Λ settings x 6 fractions x 10 seeds x 100 hyperiterations, T = 150): per seed
  3 fixed-Λ settings x 5 batches x 100 + the learned Λ's 50 (T_λ) + 5 x 100 x 2 (two hypergradients
  a multiobjective hyperiteration) = 2,550 hypergradients, each timed as one sharded hyperiteration
  of ``run_attack`` chunks of 10 (as the runner calls it); plus the victim evaluation of the 24 cells
  and the λ_CLEAN cross-validation, measured the same way; compilation is reported apart.

    python -m benchmarks.batching [--quick] [--out benchmarks/results] [--device cpu|gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import (
    add_common_args,
    cost_stats,
    environment,
    jsonable,
    median_times,
    select_device,
    write_results,
)

SIZES = dict(d=784, n_train=512, n_val=171, n_poison=85, steps=150, lr=0.1, seeds=10)
QUICK = dict(d=64, n_train=96, n_val=40, n_poison=17, steps=20, lr=0.1, seeds=4)
NOJIT_STEPS = {False: 20, True: 3}
SWEEP = dict(
    settings=4,
    fixed_settings=3,
    batches=5,
    fractions=6,
    iters_fixed=100,
    iters_clean=50,
    iters_multi=100,
    eval_epochs=200,
    eval_lr=1e-2,
    cv_grid=19,
    cv_folds=5,
)
HYPERGRADS_PER_SEED = (
    SWEEP["fixed_settings"] * SWEEP["batches"] * SWEEP["iters_fixed"]
    + SWEEP["iters_clean"]
    + SWEEP["batches"] * SWEEP["iters_multi"] * 2
)  # 2,550
TARGET_MINUTES = 5.0


def _setup(sizes):
    from benchmarks.attack_step import setup
    from poison_jax.poisoning import models

    return setup(sizes, models.logistic_regression(sizes["d"]))


def _single_step(settings, splits, state):
    from poison_jax.poisoning import attack

    return attack.poison_step(settings, splits, state, update_xp=True, update_lam=False)


def _loop_calls(settings, splits, state, seeds):
    from benchmarks.attack_step import seed_slice

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
    point = dict(d=sizes["d"], n_train=sizes["n_train"], n_val=sizes["n_val"], steps=sizes["steps"], lr=sizes["lr"])
    bare_one, args_one = scaling.compiled_point(dict(point, seeds=1), None)
    bare_all, args_all = scaling.compiled_point(dict(point, seeds=sizes["seeds"]), None)
    calls = {
        "loop": _loop_calls(settings, splits, state, sizes["seeds"]),
        "vmap": lambda: _single_step(settings, splits, state),
        "bare_rmd_one_seed": lambda: bare_one(*args_one),
        "bare_rmd_vmap": lambda: bare_all(*args_all),
    }
    times = median_times(calls, repeats=3 if quick else 15, warmup=2)
    busy = {name: cores_busy(calls[name], 20 if quick else 5) for name in ("loop", "vmap")}
    return {
        "sizes": sizes,
        "loop_ms": 1e3 * times["loop"],
        "vmap_ms": 1e3 * times["vmap"],
        "vmap_over_loop": times["vmap"] / times["loop"],
        "cores_busy": busy,
        "bare_rmd_one_seed_ms": 1e3 * times["bare_rmd_one_seed"],
        "bare_rmd_vmap_ms": 1e3 * times["bare_rmd_vmap"],
        "bare_rmd_vmap_over_loop": times["bare_rmd_vmap"] / (sizes["seeds"] * times["bare_rmd_one_seed"]),
    }


def jit_vs_nojit(quick: bool) -> dict:
    from benchmarks.hypergrad import logistic_problem
    from poison_jax import engine

    sizes = QUICK if quick else SIZES
    steps = NOJIT_STEPS[quick]
    inner, outer, w0, theta, data = logistic_problem(sizes["d"], sizes["n_train"], sizes["n_poison"], sizes["n_val"])

    def call():
        return engine.rmd_hypergrad(inner, outer, w0, theta, data, steps=steps, lr=sizes["lr"])

    def eager():
        with jax.disable_jit():
            return call()

    jit_ms = 1e3 * median_times({"jit": call}, repeats=5 if quick else 20)["jit"]
    # Eager execution compiles each primitive on first use: warm up once (not in --quick: slow).
    eager_ms = 1e3 * median_times({"eager": eager}, repeats=1 if quick else 3, warmup=0 if quick else 1)["eager"]
    return {"steps": steps, "jit_ms": jit_ms, "no_jit_ms": eager_ms, "no_jit_over_jit": eager_ms / jit_ms}


def _copy_bandwidth_gbs(quick: bool) -> float:
    """Host memory bandwidth seen by one core: a large numpy copy (read + write)."""
    a = np.ones(2**22 if quick else 2**25, np.float64)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - start)
    return 2 * a.nbytes / best / 1e9


def profile(quick: bool, loop_ms: float, seeds: int) -> dict:
    """Where one seed's hypergradient spends its time: XLA's cost analysis of one gradient-descent step
    and of its reverse (a scan's body is counted once by XLA, so per step, times T), the rate reached,
    the rate of bare matrix-vector products on the same data, and the dispatch cost of a jitted call."""
    from benchmarks.hypergrad import logistic_problem

    sizes = QUICK if quick else SIZES
    n, d, steps, lr = sizes["n_train"], sizes["d"], sizes["steps"], sizes["lr"]
    inner, _, w0, theta, data = logistic_problem(d, n, sizes["n_poison"], sizes["n_val"])

    def step(w, th):
        g = jax.grad(inner)(w, th, data)
        return jax.tree_util.tree_map(lambda a, b: a - lr * b, w, g)

    def reverse(w, th, ct):
        return jax.vjp(step, w, th)[1](ct)

    fwd = cost_stats(jax.jit(step).lower(w0, theta).compile())
    rev = cost_stats(jax.jit(reverse).lower(w0, theta, w0).compile())
    flops = steps * (fwd["flops"] + rev["flops"])
    bytes_accessed = steps * (fwd["bytes_accessed"] + rev["bytes_accessed"])
    per_seed_ms = loop_ms / seeds

    # The same number of passes over a (n, d) matrix as bare matrix-vector products.
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(n, d)), jnp.float32)
    passes = 200

    @jax.jit
    def matvecs(v):
        def body(v, _):
            return (x.T @ (x @ v)) * 1e-3, None

        return jax.lax.scan(body, v, None, length=passes // 2)[0]

    v = jnp.ones(d, jnp.float32)
    matvec_ms = 1e3 * median_times({"mv": lambda: matvecs(v)}, repeats=5 if quick else 20)["mv"]
    matvec_gbs = passes * 4 * n * d / matvec_ms / 1e6
    noop = jax.jit(lambda x: x + 1)
    z = jnp.zeros(())
    dispatch_ms = 1e3 * median_times({"noop": lambda: noop(z)}, repeats=200, warmup=5)["noop"]
    return {
        "method": "XLA cost analysis of one GD step and of its vjp, x T",
        "one_seed_flops": flops,
        "one_seed_bytes_accessed": bytes_accessed,
        "arithmetic_intensity_flops_per_byte": flops / bytes_accessed,
        "one_seed_ms": per_seed_ms,
        "achieved_gflops": flops / per_seed_ms / 1e6,
        "achieved_gbs": bytes_accessed / per_seed_ms / 1e6,
        "bare_matvec_gbs_same_matrix": matvec_gbs,
        "training_matrix_mb": 4 * n * d / 2**20,
        "host_copy_gbs_one_core": _copy_bandwidth_gbs(quick),
        "dispatch_ms_per_call": dispatch_ms,
        "dispatch_share_of_loop": dispatch_ms * seeds / loop_ms,
    }


# ------------------------------------------------------------------------------------------
# The sharded case runs in a fresh process: the CPU must be split into devices before JAX starts.


def sharded_case(quick: bool, devices: int) -> dict:
    from poison_jax.experiments.config import SeedSharding
    from poison_jax.poisoning import attack, hyperopt, victims

    sizes = QUICK if quick else SIZES
    settings, splits, state = _setup(sizes)
    sharding = SeedSharding(sizes["seeds"], jax.devices())
    s_splits = sharding.put_splits(splits)
    s_state = sharding.put(state)
    chunk = 10

    def chunked(update_lam):
        def call():
            return attack.run_attack(
                settings, s_splits, s_state, num_iters=chunk, update_xp=True, update_lam=update_lam
            )

        return call

    calls = {
        "sharded": lambda: _single_step(settings, s_splits, s_state),
        "sharded_chunk_fixed": chunked(False),
        "sharded_chunk_multi": chunked(True),
    }
    if not quick:  # the loop and the one-device vmap again, in this process, interleaved with the rest
        calls.update(
            loop=_loop_calls(settings, splits, state, sizes["seeds"]),
            vmap_one_device=lambda: _single_step(settings, splits, state),
        )
    compile_s = {}
    for name in ("sharded_chunk_fixed", "sharded_chunk_multi"):
        start = time.perf_counter()
        jax.block_until_ready(calls[name]())
        compile_s[name] = time.perf_counter() - start
    times = median_times(calls, repeats=3 if quick else 10, warmup=1)

    # Victim evaluation of one cell (all seeds, sharded) and λ_CLEAN cross-validation, as the runner does.
    x, y, _ = attack.poisoned_training_set(s_splits, s_state)
    keys = sharding.put(jax.random.split(jax.random.PRNGKey(0), sizes["seeds"]))
    epochs = 5 if quick else SWEEP["eval_epochs"]

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
            epochs=epochs,
            batch_size=min(64, sizes["n_train"]),
        )

    grid = jnp.linspace(-8.0, 1.0, SWEEP["cv_grid"])

    def cv():
        return hyperopt.cv_log_lambda(
            settings.model,
            s_splits.x_train,
            s_splits.y_train,
            keys,
            grid,
            folds=SWEEP["cv_folds"],
            steps=sizes["steps"],
            lr=sizes["lr"],
        )

    for name, fn in (("victim_eval", victim), ("cv", cv)):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        compile_s[name] = time.perf_counter() - start
    extra = median_times({"victim_eval": victim, "cv": cv}, repeats=1 if quick else 3, warmup=0)
    out = {name: 1e3 * t for name, t in times.items()}
    return {
        "devices": len(jax.devices()),
        "device_kind": jax.devices()[0].platform,
        "seeds": sizes["seeds"],
        "ms": out,
        "chunk": chunk,
        "victim_eval_ms_per_cell": 1e3 * extra["victim_eval"],
        "victim_eval_epochs": epochs,
        "cv_ms": 1e3 * extra["cv"],
        "first_call_s": compile_s,
    }


def sharded(quick: bool, device: str | None) -> dict:
    devices = os.cpu_count() or 1
    cmd = [sys.executable, "-m", "benchmarks.batching", "--sharded-case", str(devices)]
    if quick:
        cmd.append("--quick")
    if device is not None:
        cmd += ["--device", device]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"sharded case failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def projection(quick: bool, case: dict) -> dict:
    seeds = case["seeds"]
    ms = case["ms"]
    per_fixed_s = ms["sharded_chunk_fixed"] / case["chunk"] / 1e3
    per_multi_s = ms["sharded_chunk_multi"] / case["chunk"] / 1e3
    hyper_s = HYPERGRADS_PER_SEED * per_fixed_s
    direct_s = (
        SWEEP["fixed_settings"] * SWEEP["batches"] * SWEEP["iters_fixed"] + SWEEP["iters_clean"]
    ) * per_fixed_s + SWEEP["batches"] * SWEEP["iters_multi"] * per_multi_s
    cells = SWEEP["settings"] * SWEEP["fractions"]
    eval_s = cells * case["victim_eval_ms_per_cell"] / 1e3
    if quick:  # the quick run trains the victim for 5 epochs: scale to the sweep's
        eval_s *= SWEEP["eval_epochs"] / case["victim_eval_epochs"]
    cv_s = case["cv_ms"] / 1e3
    compile_s = sum(case["first_call_s"].values())
    minutes = (hyper_s + eval_s + cv_s) / 60
    return {
        "hypergradients_per_seed": HYPERGRADS_PER_SEED,
        "seeds": seeds,
        "one_hyperiteration_10_seeds_sharded_s": per_fixed_s,
        "one_multiobjective_hyperiteration_s": per_multi_s,
        "hypergradient_minutes": hyper_s / 60,
        "hypergradient_minutes_direct": direct_s / 60,
        "victim_eval_minutes": eval_s / 60,
        "victim_eval": "measured (one cell, all seeds, sharded) x 24 cells",
        "cv_minutes": cv_s / 60,
        "cv": "measured (λ_CLEAN 5-fold CV over 19 λ, all seeds, sharded), once",
        "compile_minutes_not_included": compile_s / 60,
        "projected_minutes": minutes,
        "target_minutes": TARGET_MINUTES,
        "seconds_per_hyperiteration_allowed": TARGET_MINUTES * 60 / HYPERGRADS_PER_SEED,
        "note": (
            "projected from the quick sizes, not the sweep's"
            if quick
            else "2,550 x one sharded fixed-Λ hyperiteration (10 seeds) + victim evaluation + CV; compilation apart"
        ),
    }


def diagnosis(result: dict) -> str:
    """Why batching gains what it gains, from the profile's numbers."""
    p, od, sh = result["profile"], result["one_device"], result["sharded"]
    sharded_over_loop = sh["ms"]["sharded"] / sh["ms"]["loop"]
    text = (
        f"One seed's hypergradient does {p['one_seed_flops'] / 1e6:.0f} MFLOP over "
        f"{p['one_seed_bytes_accessed'] / 2**20:.0f} MB accessed ({p['arithmetic_intensity_flops_per_byte']:.2f} "
        f"flop/byte, XLA cost analysis): matrix-vector products, bound by bandwidth, not arithmetic: "
        f"{p['achieved_gbs']:.1f} GB/s reached, bare matvecs on the same {p['training_matrix_mb']:.1f} MB matrix "
        f"reach {p['bare_matvec_gbs_same_matrix']:.1f} GB/s. Seeds share no data, so vmap makes a batched matvec "
        f"that reads the same bytes per seed: nothing to reuse. The loop's only extra cost is dispatch, "
        f"{p['dispatch_ms_per_call']:.3f} ms a call = {100 * p['dispatch_share_of_loop']:.1f} % of the loop. "
        f"XLA's intra-op threads already keep {od['cores_busy']['loop']:.1f} cores busy in the loop and "
        f"{od['cores_busy']['vmap']:.1f} in the vmapped call; vmap / loop = "
        f"{od['vmap_over_loop']:.2f} (a bare vmapped RMD of the same sizes: {od['bare_rmd_vmap_over_loop']:.2f}). "
    )
    text += (
        f"Sharding the seeds over {sh['devices']} devices (one per core) gives {sharded_over_loop:.2f} x the loop "
        f"({sh['sharded_over_vmap']:.2f} x one-device vmap in that process)"
    )
    if sh["devices"] >= 2:
        text += (
            f"; {1 / sh['devices']:.2f} would need the {sh['devices']} cores to double a loop that already "
            f"uses {od['cores_busy']['loop']:.1f} of them, on a shared memory bus: out of reach for this "
            "bandwidth-bound step."
        )
    return text


def sweep_diagnosis(result: dict) -> str:
    pr = result["sweep_projection"]
    allowed = pr["seconds_per_hyperiteration_allowed"]
    per = pr["one_hyperiteration_10_seeds_sharded_s"]
    text = (
        f"5 minutes allow {1e3 * allowed:.0f} ms a hyperiteration of 10 seeds (2,550 of them); one takes "
        f"{1e3 * per:.0f} ms sharded ({pr['hypergradient_minutes']:.2f} min in all), the victim evaluation adds "
        f"{pr['victim_eval_minutes']:.2f} min and the CV {pr['cv_minutes']:.2f} min."
    )
    if pr["projected_minutes"] > pr["target_minutes"]:
        text += (
            f" The hypergradients alone need {pr['hypergradient_minutes']:.2f} min: the bound is the "
            f"memory-bound RMD step (see the batching diagnosis), one seed's hypergradient taking "
            f"{result['profile']['one_seed_ms']:.1f} ms on one core."
        )
    return text


def run(quick: bool = False, device: str | None = None) -> dict:
    od = one_device(quick)
    result = {"benchmark": "batching", "one_device": od, "jit_vs_no_jit": jit_vs_nojit(quick)}
    result["profile"] = profile(quick, od["loop_ms"], od["sizes"]["seeds"])
    case = sharded(quick, device)
    if quick:  # the quick sharded case skips them: take this process's
        case["ms"].update(loop=od["loop_ms"], vmap_one_device=od["vmap_ms"])
        case["loop_and_vmap_from"] = "the one-device process (--quick)"
    case["sharded_over_loop"] = case["ms"]["sharded"] / case["ms"]["loop"]
    case["sharded_over_vmap"] = case["ms"]["sharded"] / case["ms"]["vmap_one_device"]
    case["vmap_over_loop"] = case["ms"]["vmap_one_device"] / case["ms"]["loop"]
    result["sharded"] = case
    result["sweep_projection"] = projection(quick, case)
    best = min(case["sharded_over_loop"], od["vmap_over_loop"])
    result["goals"] = {
        "batched 10 seeds / Python loop <= 0.5 (LR, 2 CPU cores)": best,
        "projected MNIST LR sweep minutes <= 5": result["sweep_projection"]["projected_minutes"],
    }
    result["diagnosis"] = diagnosis(result)
    result["sweep_diagnosis"] = sweep_diagnosis(result)
    result.update(environment())
    return jsonable(result)


def markdown(result: dict) -> str:
    od, sh, jn, pr = result["one_device"], result["sharded"], result["jit_vs_no_jit"], result["sweep_projection"]
    s = od["sizes"]
    lines = [
        f"One RMD hypergradient for {s['seeds']} seeds, LR d={s['d']}, n_train={s['n_train']}, T={s['steps']}:",
        "",
        "| | median (ms) | × loop |",
        "|---|---:|---:|",
        f"| Python loop over seeds (1 device) | {od['loop_ms']:.1f} | 1.00 |",
        f"| vmap (1 device) | {od['vmap_ms']:.1f} | {od['vmap_over_loop']:.2f} |",
        f"| bare RMD hypergradient (no attack step), vmapped, 1 device | {od['bare_rmd_vmap_ms']:.1f} | "
        f"{od['bare_rmd_vmap_over_loop']:.2f} (of its own loop) |",
        f"| loop, {sh['devices']}-device process | {sh['ms']['loop']:.1f} | 1.00 |",
        f"| vmap on one of {sh['devices']} devices | {sh['ms']['vmap_one_device']:.1f} | {sh['vmap_over_loop']:.2f} |",
        f"| vmap, seeds sharded over {sh['devices']} devices | {sh['ms']['sharded']:.1f} "
        f"| {sh['sharded_over_loop']:.2f} |",
        "",
        f"jit against no jit (T = {jn['steps']}): {jn['jit_ms']:.2f} ms against {jn['no_jit_ms']:.0f} ms "
        f"({jn['no_jit_over_jit']:.0f}x).",
        "",
        f"Sweep projection: {pr['one_hyperiteration_10_seeds_sharded_s'] * 1e3:.1f} ms a sharded hyperiteration x "
        f"{pr['hypergradients_per_seed']} = {pr['hypergradient_minutes']:.2f} min, + victim evaluation "
        f"{pr['victim_eval_minutes']:.2f} min + CV {pr['cv_minutes']:.2f} min = **{pr['projected_minutes']:.2f} min** "
        f"(target {pr['target_minutes']:.0f}; compilation {pr['compile_minutes_not_included']:.2f} min apart).",
        "",
        result["diagnosis"],
        "",
        result["sweep_diagnosis"],
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, "batching")
    parser.add_argument("--sharded-case", type=int, help=argparse.SUPPRESS)  # internal: the subprocess
    args = parser.parse_args(argv)
    if args.sharded_case is not None:
        if args.device in (None, "cpu"):
            jax.config.update("jax_num_cpu_devices", args.sharded_case)  # before any JAX op
        if args.device is not None:
            jax.config.update("jax_platforms", args.device.replace("gpu", "cuda"))
        print(json.dumps(jsonable(sharded_case(args.quick, args.sharded_case))))
        return None
    select_device(args.device)
    result = run(quick=args.quick, device=args.device)
    write_results(args.out, "batching", result, markdown(result))
    return result


if __name__ == "__main__":
    main()
