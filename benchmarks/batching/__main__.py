"""``python -m benchmarks.batching``: see :mod:`benchmarks.batching`."""

from __future__ import annotations

import argparse
import json
import os

import jax

import benchmarks.batching
from benchmarks import harness
from benchmarks.batching.cases import SETTINGS_AXIS, jit_vs_nojit, one_device, profile, sharded_case
from benchmarks.batching.projection import diagnosis, projection, sweep_diagnosis


def sharded(quick: bool, device: str | None) -> dict:
    """:func:`sharded_case` in a fresh process split into one device per CPU core."""
    return harness.run_json_case("batching", "--sharded-case", str(os.cpu_count() or 1), quick=quick, device=device)


def run(args) -> dict:
    od = one_device(args.quick)
    result = {"one_device": od, "jit_vs_no_jit": jit_vs_nojit(args.quick)}
    result["profile"] = profile(args.quick, od["loop_ms"], od["sizes"]["seeds"])
    case = sharded(args.quick, args.device)
    if args.quick:  # the quick sharded case skips them: take this process's
        case["ms"].update(loop=od["loop_ms"], vmap_one_device=od["vmap_ms"])
        case["loop_and_vmap_from"] = "the one-device process (--quick)"
    ms = case["ms"]
    case.update(
        sharded_over_loop=ms["sharded"] / ms["loop"],
        lanes_over_loop=ms["lanes"] / ms["loop"],
        lanes_over_sharded=ms["lanes"] / ms["sharded"],
        settings_axis_over_separate=ms["settings_axis"] / (SETTINGS_AXIS * ms["lanes"]),
        sharded_over_vmap=ms["sharded"] / ms["vmap_one_device"],
        vmap_over_loop=ms["vmap_one_device"] / ms["loop"],
    )
    result["sharded"] = case
    result["sweep_projection"] = projection(args.quick, case)
    result["goals"] = {"seeds_over_loop": case["lanes_over_loop"]}
    result["diagnosis"] = diagnosis(result)
    result["sweep_diagnosis"] = sweep_diagnosis(result)
    return result


def markdown(result: dict) -> str:
    od, sh, jn, pr = result["one_device"], result["sharded"], result["jit_vs_no_jit"], result["sweep_projection"]
    s, n = od["sizes"], sh["devices"]
    lines = [
        f"One RMD hypergradient for {s['seeds']} seeds, LR d={s['d']}, n_train={s['n_train']}, T={s['steps']}:",
        "",
        "| | median (ms) | × loop |",
        "|---|---:|---:|",
        f"| Python loop over seeds (1 device) | {od['loop_ms']:.1f} | 1.00 |",
        f"| vmap (1 device) | {od['vmap_ms']:.1f} | {od['vmap_over_loop']:.2f} |",
        f"| bare RMD hypergradient (no attack step), vmapped, 1 device | {od['bare_rmd_vmap_ms']:.1f} | "
        f"{od['bare_rmd_vmap_over_loop']:.2f} (of its own loop) |",
        f"| loop, {n}-device process | {sh['ms']['loop']:.1f} | 1.00 |",
        f"| vmap on one of {n} devices | {sh['ms']['vmap_one_device']:.1f} | {sh['vmap_over_loop']:.2f} |",
        f"| vmap, seeds sharded over {n} devices | {sh['ms']['sharded']:.1f} | {sh['sharded_over_loop']:.2f} |",
        f"| one lane per device, each looping over its seeds (the sweep on a CPU) | {sh['ms']['lanes']:.1f} | "
        f"{sh['lanes_over_loop']:.2f} |",
        "",
        f"The {SETTINGS_AXIS} fixed-Λ settings as an axis beside the seeds' (one program, each seed's rows read once "
        f"for all, in lanes): {sh['ms']['settings_axis']:.1f} ms against {SETTINGS_AXIS} x {sh['ms']['lanes']:.1f} ms "
        f"one setting at a time: **{sh['settings_axis_over_separate']:.2f}x**.",
        "",
        f"jit against no jit (T = {jn['steps']}): {jn['jit_ms']:.2f} ms against {jn['no_jit_ms']:.0f} ms "
        f"({jn['no_jit_over_jit']:.0f}x).",
        "",
        f"Sweep projection: {pr['one_hyperiteration_10_seeds_s'] * 1e3:.1f} ms a hyperiteration in lanes x "
        f"{pr['hypergradients_per_seed']} = {pr['hypergradient_minutes']:.2f} min, + victim evaluation "
        f"{pr['victim_eval_minutes']:.2f} min + CV {pr['cv_minutes']:.2f} min = **{pr['projected_minutes']:.2f} min** "
        f"(the whole command's goal: {pr['target_minutes']:.0f} min, measured by benchmarks.sweeps; "
        f"compilation {pr['compile_minutes_not_included']:.2f} min apart).",
        "",
        result["diagnosis"],
        "",
        result["sweep_diagnosis"],
    ]
    return "\n".join(lines)


def main(argv=None) -> dict | None:
    parser = harness.parser("batching", benchmarks.batching.__doc__)
    parser.add_argument("--sharded-case", type=int, help=argparse.SUPPRESS)  # internal: the subprocess
    args = parser.parse_args(argv)
    if args.sharded_case is None:
        harness.select_device(args.device)
        return harness.finish(args, "batching", run(args), markdown)
    if args.device in (None, "cpu"):
        jax.config.update("jax_num_cpu_devices", args.sharded_case)  # before any JAX op
    if args.device is not None:
        jax.config.update("jax_platforms", args.device.replace("gpu", "cuda"))
    print(json.dumps(harness.jsonable(sharded_case(args.quick))))
    return None


if __name__ == "__main__":
    main()
