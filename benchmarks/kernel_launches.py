"""Kernel launches per hyperiteration: the proxy that decides the attack's speed on a GPU.

A hyperiteration of the attack is one compiled program (:func:`poison_jax.poisoning.attack.poison_step`,
all seeds vmapped in lock-step: ``seed_lanes=None``, what a sweep runs on a GPU). On a GPU each of
its kernels costs a launch (microseconds: about 5-10 us for one launched alone on an H200, less in a
CUDA graph) whatever the arithmetic in it, and a loop without a static trip count reads its
condition back to the host every iteration; small problems run thousands of tiny kernels, so
launches, not flops, set the time.

For each program: its optimised HLO (CPU backend; counting rule in :mod:`benchmarks.hlo_launches`),
its ``while`` loops and the launching ops in their bodies and outside them, and launches per
hyperiteration = ops outside loops + sum over loops of trips x body ops + condition evaluations x
condition ops. Static trip counts (scan: the paper's 150 gradient-descent steps and their reverse
pass) are read from the HLO; data-dependent ones (Newton steps, CG steps in each, line-search and
Armijo trials, the adjoint's CG) are measured by running the same hyperiterations with counters
(:mod:`benchmarks.loop_trips`): cell 1 of the sweep (the first batch of poison points) from its fresh
state, ``--iters`` hyperiterations, each from the last one's state. Counts are measured, not bounds;
the lock-step count is the one the vmapped program runs (each loop as long as its slowest seed),
"per seed" that count over the number of seeds (what one setting-seed of a sweep costs), "one seed
alone" the mean over seeds of each seed's own counts with the same program's ops (what a program
of one seed, or a seed in its own lane, would launch).

    python -m benchmarks.kernel_launches [--quick] [--out DIR] [--programs NAME ...] [--iters N]
        [--set PATH=VALUE ...]

``--set`` overrides every program's config (the hook for an "after" column, e.g.
``--set method.solver=dense-newton``; a program whose config refuses it is skipped and says why);
the ``dense-newton-*`` programs run once ``poison_jax.engine.DenseNewton`` exists. ``--quick``: the
digits preset (64 features; the paper's T = 100 there), 2 seeds, one hyperiteration, programs
paper-fixed and strong-weak. No target is set for the proxy: the figures are under ``figures`` in
the JSON, not ``goals``.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from typing import NamedTuple

import numpy as np

from benchmarks import harness, hlo_launches, loop_trips
from benchmarks.goals import get
from poison_jax import engine
from poison_jax.experiments import presets
from poison_jax.experiments.checked import ConfigError
from poison_jax.experiments.overrides import parse_overrides
from poison_jax.experiments.sweep import Sweep
from poison_jax.poisoning import attack


class Spec(NamedTuple):
    """A program: a preset's hyperiteration at a Λ setting (``small``, ``large`` or ``init``)."""

    preset: str
    overrides: dict
    log_lam: str
    update_xp: bool
    update_lam: bool
    text: str


_DENSE = {"method.solver": "dense-newton"}
PROGRAMS = {
    "paper-fixed": Spec("mnist5k-lr", {}, "small", True, False, "paper: RMD through T GD steps, Λ fixed"),
    "paper-learned": Spec("mnist5k-lr", {}, "init", True, True, "paper: RMD through T GD steps, Λ learned"),
    "strong-weak": Spec("mnist5k-lr-strong", {}, "small", True, False, "strong: Newton-CG + CG adjoint, log λ = -8"),
    "strong-large": Spec("mnist5k-lr-strong", {}, "large", True, False, "strong: Newton-CG + CG adjoint, λ = 200"),
    "dense-newton-weak": Spec("mnist5k-lr-strong", _DENSE, "small", True, False, "strong: dense Newton, log λ = -8"),
    "dense-newton-large": Spec("mnist5k-lr-strong", _DENSE, "large", True, False, "strong: dense Newton, λ = 200"),
}
# --quick: the digits preset (the same programs on 64 features).
_STRONG = {
    k: v
    for k, v in presets.PRESETS["mnist5k-lr-strong"].settings.items()
    if k.startswith(("method", "attack.xp_step", "attack.lam_step"))
}
QUICK = {"mnist5k-lr": ("digits-lr", {}), "mnist5k-lr-strong": ("digits-lr", _STRONG)}


def setup(spec: Spec, quick: bool, extra: dict):
    """``(config, settings, splits, state)``: the sweep's cell 1 of ``spec`` from its fresh state, the
    seeds vmapped (``seed_lanes=None``)."""
    name, base = QUICK[spec.preset] if quick else (spec.preset, {})
    config = presets.preset(name, {**base, **({"sweep.num_seeds": 2} if quick else {}), **spec.overrides, **extra})
    sweep = Sweep(config)
    settings = dataclasses.replace(sweep.settings, seed_lanes=None)
    c = config
    log_lam = {"small": c.sweep.log_lam_small, "large": c.sweep.log_lam_large, "init": c.attack.log_lam_init}
    state = sweep.fresh_state(log_lam[spec.log_lam])
    state = attack.set_poison_count(state, c.attack.poison_batch, c.attack.poison_batch)
    return config, settings, sweep.splits, state


def assign(program: hlo_launches.Program, keys) -> dict[str, int]:
    """HLO loop name -> its measured site: the n-th data-dependent HLO loop of a call stack (a loop
    before the loops in its body, in schedule order) takes the n-th site measured with that stack."""
    sites: dict = {}
    for i, key in enumerate(keys):
        sites.setdefault(key, []).append(i)
    seen: dict = {}
    out = {}
    for loop in program.loops:
        if loop.static_trips is None:
            n = seen[loop.key] = seen.get(loop.key, -1) + 1
            if n < len(sites.get(loop.key, ())):
                out[loop.name] = sites[loop.key][n]
    return out


def _view(program, sites: dict[str, int], counts: np.ndarray) -> dict:
    """:func:`hlo_launches.launches` with ``counts[e] = (trips, runs)`` of each measured site."""
    trips = {name: float(counts[e, 0]) for name, e in sites.items()}
    runs = {name: float(counts[e, 1]) for name, e in sites.items()}
    return hlo_launches.launches(program, trips, runs)


def _stats_sources(program, sites, trips: loop_trips.Trips) -> dict:
    """For each ``*_steps`` stat of the attack, the measured loop whose own counts equal it for every
    seed and hyperiteration (a check of the counting), or ``None``."""
    where = {loop.name: loop.where for loop in program.loops}
    found = {}
    for stat, values in trips.stats.items():
        same = [name for name, e in sites.items() if np.array_equal(trips.own[:, e, 0, :], values)]
        found[stat] = where[same[0]] if same else None
    return found


class Counted(NamedTuple):
    """A program's loops (``program``), the measured site of each data-dependent one (``sites``), and
    :func:`hlo_launches.launches` per measured hyperiteration in lock-step (``lock``) and per seed
    alone (``alone``, hyperiterations x seeds); ``trips``: the measurement (``None``: all static)."""

    program: hlo_launches.Program
    sites: dict[str, int]
    lock: list[dict]
    alone: list[dict]
    trips: loop_trips.Trips | None


def analyse(settings, splits, state, *, update_xp: bool, update_lam: bool, iters: int) -> Counted:
    """Any attack hyperiteration's launches: ``poison_step(settings, splits, state, ...)`` compiled and
    parsed, its data-dependent loops measured over ``iters`` hyperiterations from ``state``."""
    modes = dict(update_xp=update_xp, update_lam=update_lam)
    program = hlo_launches.parse(attack.poison_step.lower(settings, splits, state, **modes).compile().as_text())
    if all(loop.static_trips is not None for loop in program.loops):
        view = _view(program, {}, np.zeros((0, 2)))
        return Counted(program, {}, [view], [view] * int(state.xp.shape[0]), None)
    trips = loop_trips.measure(settings, splits, state, **modes, iters=iters)
    sites = assign(program, trips.keys)
    lock = [_view(program, sites, counts) for counts in trips.lock]
    alone = [_view(program, sites, own[:, :, s]) for own in trips.own for s in range(own.shape[-1])]
    return Counted(program, sites, lock, alone, trips)


def _mean(views: list[dict], *path) -> float:
    return float(np.mean([get(view, *path) for view in views]))


def _slowest(alone: list[dict], seeds: int) -> float:
    """The largest over seeds of a seed's own launches, averaged over the hyperiterations."""
    per_seed = np.reshape([view["launches"] for view in alone], (-1, seeds))
    return float(per_seed.mean(axis=0).max())


def _loop_rows(counted: Counted) -> list[dict]:
    rows = []
    for loop in counted.program.loops:
        static = loop.static_trips is not None
        rows.append(
            {
                "where": loop.where,
                "depth": loop.depth,
                "body_ops": loop.body_ops,
                "cond_ops": loop.cond_ops,
                "trips_source": "static" if static else ("measured" if loop.name in counted.sites else "unknown"),
                **{k: _mean(counted.lock, "loops", loop.name, k) for k in ("trips", "runs", "launches")},
                "trips_one_seed": _mean(counted.alone, "loops", loop.name, "trips"),
            }
        )
    return rows


def count(spec: Spec, quick: bool, extra: dict, iters: int | None) -> dict:
    """One program's loops and launches per hyperiteration (see the module's docstring)."""
    start = time.perf_counter()
    config, settings, splits, state = setup(spec, quick, extra)
    if iters is None:
        iters = 1 if quick else (config.attack.iters_multi if spec.update_lam else config.attack.iters_fixed)
    counted = analyse(settings, splits, state, update_xp=spec.update_xp, update_lam=spec.update_lam, iters=iters)
    program, trips = counted.program, counted.trips
    dynamic = [loop for loop in program.loops if loop.static_trips is None]
    return {
        "text": spec.text,
        "preset": config.name,
        "config_hash": config.hash(),
        "log_lam": spec.log_lam,
        "update_xp": spec.update_xp,
        "update_lam": spec.update_lam,
        "method": repr(settings.method),
        "seeds": int(state.xp.shape[0]),
        "hyperiterations_measured": len(counted.lock) if trips else 0,
        "while_loops": len(program.loops),
        "static_loops": len(program.loops) - len(dynamic),
        "measured_loops": len(counted.sites),
        "unknown_loops": [loop.where for loop in dynamic if loop.name not in counted.sites],
        "unmatched_sites": len(trips.keys) - len(counted.sites) if trips else 0,
        "ops_outside_loops": program.outside_ops,
        "launching_opcodes": program.opcodes,
        "launches_per_hyperiteration": _mean(counted.lock, "launches"),
        "launches_by_hyperiteration": [view["launches"] for view in counted.lock],
        "launches_per_hyperiteration_per_seed": _mean(counted.lock, "launches") / int(state.xp.shape[0]),
        "launches_per_seed_alone": _mean(counted.alone, "launches"),
        "launches_slowest_seed_alone": _slowest(counted.alone, int(state.xp.shape[0])),
        "host_syncs_per_hyperiteration": _mean(counted.lock, "host_syncs"),
        "loops": _loop_rows(counted),
        "checks": {
            "counted_step_xp_gap": trips.xp_gap if trips else None,
            "stats_match_loop": _stats_sources(program, counted.sites, trips) if trips else {},
        },
        "seconds": time.perf_counter() - start,
    }


QUICK_PROGRAMS = ("paper-fixed", "strong-weak")


def source() -> dict:
    """The commit measured and the package's files changed since (a before/after pair should differ
    only where it means to); ``None`` outside a git checkout."""

    def git(*argv):
        done = subprocess.run(["git", *argv], cwd=harness.ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    changes = git("status", "--porcelain", "--", "poison_jax")
    return {"commit": git("rev-parse", "HEAD"), "package_changes": None if changes is None else changes.splitlines()}


def run(args) -> dict:
    extra = parse_overrides(args.set or [])
    names = args.programs or (QUICK_PROGRAMS if args.quick else tuple(PROGRAMS))
    results, skipped = {}, {}
    for name in names:
        spec = PROGRAMS[name]
        if spec.overrides is _DENSE and not hasattr(engine, "DenseNewton"):
            skipped[name] = "poison_jax.engine.DenseNewton does not exist yet: run again once it has landed"
            continue
        try:
            results[name] = count(spec, args.quick, extra, args.iters)
        except ConfigError as err:
            skipped[name] = f"config refused: {err}"
        print(f"{name}: {results.get(name, {}).get('launches_per_hyperiteration', skipped.get(name))}", flush=True)
    return {
        "source": source(),
        "overrides": extra,
        "programs": results,
        "skipped": skipped,
        "figures": {name: r["launches_per_hyperiteration"] for name, r in results.items()},
    }


def _check_text(r: dict) -> str:
    checks = r["checks"]
    if checks["counted_step_xp_gap"] is None:
        return "every trip count static"
    found = ", ".join(f"{stat} = {where or 'no loop'}" for stat, where in checks["stats_match_loop"].items())
    return f"counted step's Xp against poison_step's: max gap {checks['counted_step_xp_gap']:.1e}; {found}"


def markdown(result: dict) -> str:
    lines = [
        "Kernel launches per hyperiteration (the CPU-compiled HLO as a GPU's proxy; seeds vmapped in lock-step; "
        "trip counts static or measured, none bounded):",
        "",
        "| program (preset) | seeds | while loops (static / measured) | ops outside loops "
        "| launches / hyperiteration | per seed | one seed alone | host syncs / hyperiteration |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in result["programs"].items():
        lines.append(
            f"| {name}: {r['text']} ({r['preset']}) | {r['seeds']} "
            f"| {r['while_loops']} ({r['static_loops']} / {r['measured_loops']}) | {r['ops_outside_loops']} "
            f"| {r['launches_per_hyperiteration']:,.0f} | {r['launches_per_hyperiteration_per_seed']:,.0f} "
            f"| {r['launches_per_seed_alone']:,.0f} | {r['host_syncs_per_hyperiteration']:,.0f} |"
        )
    for name, reason in result["skipped"].items():
        lines.append(f"| {name}: {PROGRAMS[name].text} | — | — | — | skipped: {reason} | — | — | — |")
    for name, r in result["programs"].items():
        lines += ["", f"{name}, {r['hyperiterations_measured']} hyperiteration(s) measured ({_check_text(r)}):", ""]
        lines += [
            "| loop (innermost call) | depth | ops in body | ops in condition | trips | trips, one seed | runs "
            "| launches |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in r["loops"]:
            lines.append(
                f"| {row['where']} ({row['trips_source']}) | {row['depth']} | {row['body_ops']} | {row['cond_ops']} "
                f"| {row['trips']:,.1f} | {row['trips_one_seed']:,.1f} | {row['runs']:,.1f} | {row['launches']:,.0f} |"
            )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = harness.parser("kernel_launches", __doc__)
    parser.add_argument("--programs", nargs="+", choices=list(PROGRAMS), default=None, metavar="NAME",
                        help=f"programs to count (default: all; --quick: {', '.join(QUICK_PROGRAMS)})")  # fmt: skip
    parser.add_argument(
        "--iters", type=int, default=None, help="hyperiterations measured (default: a cell's; --quick 1)"
    )
    parser.add_argument("--set", action="append", metavar="PATH=VALUE", help="override every program's config")
    args = parser.parse_args(argv)
    harness.select_device(args.device)
    return harness.finish(args, "kernel_launches", run(args), markdown)


if __name__ == "__main__":
    main()
