"""Where the strong mnist5k sweep spends its CPU time: weak-λ cells under different Xp step rules.

Runs cells 1..N of the ``log λ = -8`` setting of the ``mnist5k-lr-strong`` preset (10 seeds, one
XLA device per core) with the preset's Armijo rule and with alternatives, and prints per cell the
attack time, the attacker's objective and the victim's test error. Not part of the suite (minutes).

    python -m benchmarks.strong_cells [--cells 3] [--iters N] [--variants preset xp_min1 xp_min0 normalised0.3 ...]

``--iters`` overrides the preset's hyperiterations a fixed-λ cell (``attack.iters_fixed``, 6); ``xp_min1`` is the
Xp rule the preset had before (searches from >= alpha), ``preset`` the one it has (>= alpha/4);
``grow1`` never lengthens a search's first trial, ``tol1e-3`` solves the inner problem ten times looser.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

VARIANTS = (
    "preset",
    "xp_min1",
    "xp_min0.25",
    "xp_min0",
    "xp_min0_t4",
    "xp_min0.1",
    "normalised0.99",
    "normalised0.3",
    "adam0.05",
    "grow1",
    "tol1e-3",
)


def _settings(base, name: str):
    from poison_jax import engine
    from poison_jax.poisoning import outer

    return {
        "preset": base,
        "xp_min1": dataclasses.replace(base, xp_step=outer.Armijo(min_scale=1.0)),
        "xp_min0.25": dataclasses.replace(base, xp_step=outer.Armijo(min_scale=0.25)),
        "xp_min0": dataclasses.replace(base, xp_step=outer.Armijo(min_scale=0.0)),
        "xp_min0_t4": dataclasses.replace(base, xp_step=outer.Armijo(min_scale=0.0, max_trials=4)),
        "xp_min0.1": dataclasses.replace(base, xp_step=outer.Armijo(min_scale=0.1)),
        "normalised0.99": dataclasses.replace(base, xp_step=outer.Normalised()),
        "normalised0.3": dataclasses.replace(base, xp_step=outer.Normalised(), alpha=0.3),
        "adam0.05": dataclasses.replace(base, xp_step=outer.Adam(), alpha=0.05),
        # Each search from the last accepted length, never longer: fewer failed trials, shorter moves.
        "grow1": dataclasses.replace(base, xp_step=outer.Armijo(min_scale=0.25, grow=1.0)),
        # Every inner solve (the hypergradient's and the line searches') to ||∇f|| <= 1e-3, not 1e-4.
        "tol1e-3": dataclasses.replace(
            base,
            method=engine.Method(
                dataclasses.replace(base.method.solver, tol=1e-3), base.method.adjoint, warm_start=True
            ),
        ),
    }[name]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=3, help="cells 1..N of log λ = -8 (default: %(default)s)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--iters", type=int, default=None, help="hyperiterations a cell (default: the preset's)")
    args = parser.parse_args(argv)

    import poison_jax

    poison_jax.experiments.devices.use_cpu_cores()
    from poison_jax.experiments import presets
    from poison_jax.experiments.sweep import Sweep

    config = presets.preset("mnist5k-lr-strong", {} if args.iters is None else {"attack.iters_fixed": args.iters})
    sweep = Sweep(config)
    base = sweep.settings
    print("| variant | cell | attack (s) | objective | test error |\n|---|---:|---:|---:|---:|")
    for name in args.variants:
        sweep.settings = _settings(base, name)
        state = sweep.fresh_state(config.sweep.log_lam_small)
        sweep.evaluate("small", 0, state)  # compiles the evaluation
        total = 0.0
        for cell in range(1, args.cells + 1):
            start = time.perf_counter()
            state = sweep.attack_cell("small", cell, state, lambda n: None)
            seconds = time.perf_counter() - start
            total += seconds
            mean = sweep.evaluate("small", cell, state)["mean"]
            print(
                f"| {name} | {cell} | {seconds:.1f} | {mean['val_loss']:.2f} | {100 * mean['error']:.1f} % |",
                flush=True,
            )
        print(f"| {name} | total | {total:.1f} | | |", flush=True)


if __name__ == "__main__":
    main()
