"""Sanitisers against the strong attack and the attack that projects onto their feasible set, and
what each costs (the defences work, first grid).

(a) ``mnist5k17-lr-strong`` (``mnist5k-lr-strong`` on MNIST 1 v 7), 6 seeds, Λ settings log λ = -8 and
learned, poison fractions 0-16.6 %: the victim's test error with no sanitiser, and with the sphere
and the slab, oracle and data-dependent (removal at the 90th percentile of the reference class's
scores), each against the strong (non-adaptive) attack and against the attack that projects its
points onto the sphere ∩ slab ∩ box with the same statistics (``attack.adaptive=project``); and the
data-dependent k-NN sanitiser (k = 5) against the strong attack and against the attack that ties each
batch's points of a label into one (``attack.concentrate=1``). Each run
is ``run_sweep`` in this process (the command line equivalent is in the table's caption).

(b) Costs, measured on (a)'s data: one strong hyperiteration of the Xp step (log λ = -8, all
seeds, 17 active poison points) with the projection and with the relaxed sphere, slab and k-NN
(oracle and data-dependent), over one without; and each defence on the poisoned sets of all
seeds (the geometric sanitisers, the loss defence, TRIM, SEVER and label sanitisation, the
model-based ones fitting the converged victim), over one hyperiteration.

    python -m benchmarks.defences [--quick] [--costs-only] [--out benchmarks/results]

``--costs-only`` runs (b) alone and writes ``defence_costs.{json,md}``.

``--quick``: 2 seeds, one poison batch, one hyperiteration a cell, the sphere only (seconds).
"""

from __future__ import annotations

import functools
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness
from poison_jax.experiments import config as configs
from poison_jax.experiments import presets, sweep
from poison_jax.poisoning import attack, defences, model_defences

BASE = {"sweep.num_seeds": 6, "sweep.settings": ("small", "learned")}
QUICK = {**BASE, "sweep.num_seeds": 2, "attack.num_batches": 1, "attack.iters_fixed": 1, "attack.iters_multi": 1}
PRESET = "mnist5k17-lr-strong"  # MNIST 1 v 7 under the strong attack
DEFENCES = ("sphere", "slab")
STATISTICS = ("oracle", "data-dependent")


def grid(quick: bool) -> dict[str, dict]:
    """``{row name: overrides}``: no defence, then each sanitiser x statistics x (plain, projected)."""
    rows = {"no sanitiser": {}}
    for defence in DEFENCES[:1] if quick else DEFENCES:
        for stats in STATISTICS:
            sanitiser = {"defence": defence, "defence.statistics": stats, "defence.rule": "percentile"}
            rows[f"{defence}, {stats}"] = sanitiser
            rows[f"{defence}, {stats}; attack projects"] = {
                **sanitiser, "attack.adaptive": "project", "attack.adaptive.statistics": stats,
            }  # fmt: skip
    if not quick:  # the nearest-neighbour sanitiser, and the attack that concentrates its points against it
        knn = {"defence": "knn", "defence.statistics": "data-dependent", "defence.rule": "percentile"}
        rows["knn, data-dependent"] = knn
        rows["knn, data-dependent; attack concentrates"] = {**knn, "attack.concentrate": 1}
    return rows


def _row(records: list[dict]) -> dict:
    out = {}
    for r in records:
        per_seed = r["per_seed"]
        cell = out.setdefault(r["setting"], {"fractions": [], "error": [], "error_std": [], "recall": [], "fpr": []})
        cell["fractions"].append(r["fraction"])
        cell["error"].append(float(np.mean(per_seed["error"])))
        cell["error_std"].append(float(np.std(per_seed["error"])))
        cell["recall"].append(float(np.mean(per_seed.get("defence_recall", [np.nan]))))
        cell["fpr"].append(float(np.mean(per_seed.get("defence_false_positive_rate", [np.nan]))))
    return out


def results_grid(quick: bool) -> dict:
    base = QUICK if quick else BASE
    rows = {}
    for name, overrides in grid(quick).items():
        config = presets.preset(PRESET, {**base, **overrides})
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            records = sweep.run_sweep(config, folder, progress=False, log=lambda _: None)
        sets = " ".join(
            f"--set {k}={v!r}".replace(" ", "") if isinstance(v, tuple) else f"--set {k}={v}"
            for k, v in {**base, **overrides}.items()
        )
        rows[name] = {
            **_row(records),
            "seconds": time.perf_counter() - start,
            "command": f"poison-jax run --preset {PRESET} {sets}",
        }
    return rows


def _steps(s: sweep.Sweep, plain, state) -> dict:
    """``{name: call}``: one Xp step of every seed, plain, projecting and relaxed."""
    adaptive = {"strong": {}}
    for st in STATISTICS:
        adaptive[f"projects, {st}"] = {"attack.adaptive": "project", "attack.adaptive.statistics": st}
        for kind in ("sphere", "slab", "knn"):
            sanitiser = {"defence": kind, "defence.statistics": st, "defence.rule": "percentile"}
            adaptive[f"relaxes {kind}, {st}"] = {**sanitiser, "attack.adaptive": "relax"}
    steps = {}
    for name, overrides in adaptive.items():
        settings = configs.override(plain, overrides).attack_settings(s.model, x_box=s.x_box)
        settings = settings.__class__(**{**settings.__dict__, "seed_lanes": s.seed_lanes})
        steps[name] = lambda st=settings: attack.poison_step(st, s.splits, state, update_xp=True, update_lam=False)[0]
    return steps


def _defences(s: sweep.Sweep, state) -> dict:
    """``{name: call}``: each defence on the poisoned sets of all seeds (one jitted, vmapped call)."""
    x, y, _ = attack.poisoned_training_set(s.splits, state, s.settings.mode)
    present = jnp.ones(y.shape, bool)
    values = {
        f"{type(score).__name__.lower()}, {st}": defences.Sanitiser(score, defences.Percentile(90.0), st)
        for score in (defences.Sphere(), defences.Slab(), defences.KNN(), defences.SVD())
        for st in STATISTICS
    }
    values |= {f"loss, {st}": model_defences.LossSanitiser(defences.Percentile(90.0), st) for st in STATISTICS}
    values |= {
        "trim": model_defences.Trim(0.1),
        "sever": model_defences.Sever(0.1),
        "label": model_defences.LabelSanitiser(),
    }
    victim, keys = s.victim, jax.random.split(jax.random.PRNGKey(0), len(s.seeds))

    def one(defence, x, y, xc, yc, log_lam, key):
        learner = model_defences.Learner(s.model, victim, log_lam, key)
        return defence.sanitise(x, y, present[0], xc, yc, s.model.num_classes, learner)

    calls = {}
    for name, defence in values.items():
        fn = jax.jit(jax.vmap(functools.partial(one, defence)))
        calls[name] = lambda fn=fn: fn(x, y, s.splits.x_train, s.splits.y_train, state.log_lam, keys)
    return calls


def costs(quick: bool) -> dict:
    base = QUICK if quick else BASE
    plain = presets.preset(PRESET, base)
    s = sweep.Sweep(plain)
    state = s.placed(attack.set_poison_count(s.fresh_state(jnp.full((len(s.seeds), 1), -8.0)), 17, 17))
    steps, sanitise = _steps(s, plain, state), _defences(s, state)
    times = harness.time_calls({**steps, **sanitise}, repeats=3 if quick else 7)
    step = times["strong"].median
    return {
        "hyperiteration_ms": 1e3 * step,
        "adaptive_over_strong": {k: times[k].median / step for k in steps if k != "strong"},
        "defence_over_hyperiteration": {k: times[k].median / step for k in sanitise},
    }


def costs_markdown(c: dict) -> str:
    return (
        f"One strong hyperiteration (Xp step, log λ = -8, all seeds): {c['hyperiteration_ms']:.1f} ms. "
        "Adaptive attacks' hyperiteration, over it: "
        + ", ".join(f"{k} {v:.2f}x" for k, v in c["adaptive_over_strong"].items())
        + ". Each defence on every seed's poisoned set, over one hyperiteration: "
        + ", ".join(f"{k} {v:.3f}" for k, v in c["defence_over_hyperiteration"].items())
        + "."
    )


def run(args) -> dict:
    return {"grid": results_grid(args.quick), "costs": costs(args.quick), "quick": args.quick}


def markdown(result: dict) -> str:
    lines = []
    for setting, label in (("small", "log λ = -8"), ("learned", "λ learned")):
        first = next(iter(result["grid"].values()))[setting]
        head = " | ".join(f"{100 * f:.1f} %" for f in first["fractions"])
        lines += [
            f"Test error (%, mean ± std over seeds) with {label}; in brackets the share of the poison points "
            "the sanitiser removed:",
            "",
            f"| sanitiser; attack | {head} |",
            "|---|" + "---:|" * len(first["fractions"]),
        ]
        for name, row in result["grid"].items():
            r = row[setting]
            cells = [
                f"{100 * e:.1f} ± {100 * sd:.1f}"
                + (f" [{100 * rc:.0f}]" if rc is not None and np.isfinite(rc) and i else "")
                for i, (e, sd, rc) in enumerate(zip(r["error"], r["error_std"], r["recall"], strict=True))
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join([*lines, costs_markdown(result["costs"])])


def main(argv=None) -> dict:
    p = harness.parser("defences", __doc__)
    p.add_argument("--costs-only", action="store_true", help="only the costs (b): defence_costs.{json,md}")
    args = p.parse_args(argv)
    harness.select_device(args.device)
    if args.costs_only:
        return harness.finish(args, "defence_costs", {"costs": costs(args.quick)}, lambda r: costs_markdown(r["costs"]))
    return harness.finish(args, "defences", run(args), markdown)


if __name__ == "__main__":
    main()
