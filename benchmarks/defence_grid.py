"""The defences' grid: every sanitiser, oracle and data-dependent, against the strong attack and the
attacks that adapt to it, with log λ = -8 and with λ learned, on one data set and model a run.

    python -m benchmarks.defence_grid --grid NAME [--quick] [--out docs/benchmarks]

writes ``defence_grid_NAME.{json,md,png}``. The grids (6 seeds, the strong attack: converged
implicit hypergradients, Armijo steps, a converged victim; each row one ``run_sweep``, its command
line in the JSON):

* ``digits-lr``, ``digits-svm``: scikit-learn's digits 0 v 8, logistic regression and the smoothed
  hinge (the SVM), every row of :data:`ROWS`;
* ``mnist17-lr``: MNIST 1 v 7 of the offline sample (``mnist5k17-lr-strong``), the rows that
  ``benchmarks.defences`` (the first grid: sphere, slab, k-NN, the projection and concentration)
  does not run; ``mnist17-svm`` the same data with the smoothed hinge, the main rows;
* ``ridge``: ridge regression (the squared loss) on diabetes and on MNIST 1 v 7's 0/1 labels, TRIM,
  SEVER and the loss sanitiser against learned λ.

The figure draws test error against the poison fraction, a panel per defence. ``--quick``: 2
seeds, one poison batch, one hyperiteration a cell, three rows (seconds). ``--rows NAME ...``
reruns those rows alone, merged into the grid's JSON already in ``--out``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import harness  # noqa: E402
from poison_jax.experiments import presets, sweep  # noqa: E402

SEEDS = {"sweep.num_seeds": 6, "sweep.settings": ("small", "learned")}
QUICK = {"sweep.num_seeds": 2, "attack.num_batches": 1, "attack.iters_fixed": 1, "attack.iters_multi": 1}
# The strong attack on presets that are not strong already (digits, diabetes).
STRONG = presets.STRONG_ATTACK
SVM = {"loss": "smoothed-hinge"}
RIDGE = {"loss": "squared"}


def _sanitiser(kind: str, statistics: str, **fields) -> dict:
    return {"defence": kind, "defence.statistics": statistics, "defence.rule": "percentile", **fields}


#: ``{row: overrides}``: no defence, each sanitiser (radius at the 90th percentile of the reference
#: class's scores), and the attacks that adapt to them.
ROWS = {
    "no defence": {},
    **{
        f"{kind}, {stats}": _sanitiser(kind, stats)
        for kind in ("sphere", "slab", "loss", "knn", "svd")
        for stats in ("oracle", "data-dependent")
    },
    "sever": {"defence": "sever", "defence.f": 0.1},
    "label": {"defence": "label"},
    "sphere, data-dependent; attack projects": {**_sanitiser("sphere", "data-dependent"), "attack.adaptive": "project"},
    "sphere, data-dependent; attack relaxes": {**_sanitiser("sphere", "data-dependent"), "attack.adaptive": "relax"},
    "slab, data-dependent; attack projects": {**_sanitiser("slab", "data-dependent"), "attack.adaptive": "project"},
    "slab, data-dependent; attack relaxes": {**_sanitiser("slab", "data-dependent"), "attack.adaptive": "relax"},
    "knn, data-dependent; attack relaxes": {**_sanitiser("knn", "data-dependent"), "attack.adaptive": "relax"},
    "knn, data-dependent; attack concentrates": {**_sanitiser("knn", "data-dependent"), "attack.concentrate": 1},
    "svd, data-dependent; attack concentrates": {**_sanitiser("svd", "data-dependent"), "attack.concentrate": 1},
    # copies of one point are each other's nearest neighbours: they outvote the relabelling
    "label; attack concentrates": {"defence": "label", "attack.concentrate": 1},
}
#: The rows ``benchmarks.defences`` has not run on MNIST 1 v 7.
_NEW_ON_MNIST = [
    "loss, oracle", "loss, data-dependent", "knn, oracle", "svd, oracle", "svd, data-dependent", "sever", "label",
    "sphere, data-dependent; attack relaxes", "slab, data-dependent; attack relaxes",
    "knn, data-dependent; attack relaxes", "svd, data-dependent; attack concentrates", "label; attack concentrates",
]  # fmt: skip
_MAIN = [
    "no defence", "sphere, oracle", "sphere, data-dependent", "slab, data-dependent", "loss, data-dependent",
    "sever", "sphere, data-dependent; attack projects", "sphere, data-dependent; attack relaxes",
]  # fmt: skip
_RIDGE_ROWS = {
    "no defence": {},
    "trim": {"defence": "trim", "defence.f": 0.2},
    "sever": {"defence": "sever", "defence.f": 0.2},
    "loss, data-dependent": _sanitiser("loss", "data-dependent"),
}
#: ``{grid: [(panel label, preset, overrides, rows)]}``.
GRIDS = {
    "digits-lr": [("digits 0 v 8, logistic", "digits-lr", STRONG, ROWS)],
    "digits-svm": [("digits 0 v 8, smoothed hinge", "digits-lr", {**STRONG, **SVM}, ROWS)],
    "mnist17-lr": [("MNIST 1 v 7, logistic", "mnist5k17-lr-strong", {}, {k: ROWS[k] for k in _NEW_ON_MNIST})],
    "mnist17-svm": [("MNIST 1 v 7, smoothed hinge", "mnist5k17-lr-strong", SVM, {k: ROWS[k] for k in _MAIN})],
    "ridge": [
        ("diabetes, ridge", "diabetes-ridge", STRONG, _RIDGE_ROWS),
        ("MNIST 1 v 7 (0/1 targets), ridge", "mnist5k17-lr-strong", {**RIDGE, "sweep.log_lam_large": 1.6}, _RIDGE_ROWS),
    ],
}


def summarise(records: list[dict]) -> dict:
    """``{setting: {fractions, error, error_std, recall, fpr, relabelled, log_lam}}`` (means over seeds,
    per cell; ``relabelled``: the poison points label sanitisation relabelled, NaN for the others)."""
    out = {}
    for r in sorted(records, key=lambda r: r["cell"]):
        per_seed = r["per_seed"]
        cell = out.setdefault(
            r["setting"], {k: [] for k in ("fractions", "error", "error_std", "recall", "fpr", "relabelled", "log_lam")}
        )
        cell["fractions"].append(r["fraction"])
        cell["error"].append(float(np.mean(per_seed["error"])))
        cell["error_std"].append(float(np.std(per_seed["error"])))
        cell["recall"].append(float(np.mean(per_seed.get("defence_recall", [np.nan]))))
        cell["fpr"].append(float(np.mean(per_seed.get("defence_false_positive_rate", [np.nan]))))
        cell["relabelled"].append(float(np.mean(per_seed.get("defence_poison_relabelled", [np.nan]))))
        cell["log_lam"].append(float(np.mean(per_seed["log_lam"])))
    return out


def _command(preset: str, overrides: dict) -> str:
    sets = " ".join(
        f"--set {k}={v!r}".replace(" ", "") if isinstance(v, tuple) else f"--set {k}={v}" for k, v in overrides.items()
    )
    return f"poison-jax run --preset {preset} {sets}"


def _dataset(config):
    """The config's data; with the squared loss on a classification source, its 0/1 labels taken as
    regression targets (the least-squares classifier judged by test MSE: MNIST regression)."""
    ds = config.data.load()
    if config.loss.kind == "squared" and ds.task == "classification":
        ds = ds._replace(task="regression", name=f"{ds.name} (0/1 targets)")
    return ds


def run_rows(preset: str, overrides: dict, rows: dict, quick: bool) -> dict:
    """Each row's :func:`summarise`, its seconds and its command line."""
    base = {**SEEDS, **overrides, **(QUICK if quick else {})}
    out = {}
    for name, row in list(rows.items())[: 3 if quick else None]:
        config = presets.preset(preset, {**base, **row})
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            records = sweep.run_sweep(config, folder, dataset=_dataset(config), progress=False, log=lambda _: None)
        out[name] = {
            **summarise(records),
            "seconds": time.perf_counter() - start,
            "command": _command(preset, {**base, **row}),
        }
        print(f"{name}: {out[name]['seconds']:.0f} s", flush=True)
        # Each row compiles its own programs; dropping them keeps one process under the kernel's
        # limit on memory maps (LLVM's "Cannot allocate memory" after a dozen rows otherwise).
        jax.clear_caches()
    return out


def run(args) -> dict:
    """Every panel of the grid; with ``--rows``, only those rows, merged into the grid's JSON already
    in ``--out`` (the other rows kept as they were)."""
    path = Path(args.out) / f"defence_grid_{args.grid}.json"
    before = {p["label"]: p["rows"] for p in json.loads(path.read_text())["panels"]} if args.rows else {}
    panels = []
    for label, preset, overrides, rows in GRIDS[args.grid]:
        chosen = {k: v for k, v in rows.items() if not args.rows or k in args.rows}
        done = run_rows(preset, overrides, chosen, args.quick)
        merged = {**before.get(label, {}), **done}
        panels.append({"label": label, "preset": preset, "rows": {k: merged[k] for k in rows if k in merged}})
    return {"grid": args.grid, "panels": panels}


def _shown(value) -> bool:
    return value is not None and bool(np.isfinite(value))


def _cell(row: dict, setting: str, i: int, regression: bool) -> str:
    r = row[setting]
    e, sd, recall = r["error"][i], r["error_std"][i], r["recall"][i]
    relabelled = r.get("relabelled", [None] * (i + 1))[i]
    value = f"{e:.4f} ± {sd:.4f}" if regression else f"{100 * e:.1f} ± {100 * sd:.1f}"
    if i and _shown(relabelled):
        return value + f" [{100 * recall:.0f}; {relabelled:.1f} relabelled]"
    return value + (f" [{100 * recall:.0f}]" if _shown(recall) and i else "")


def markdown(result: dict) -> str:
    lines = []
    for panel in result["panels"]:
        regression = "ridge" in panel["label"]
        metric = "test MSE" if regression else "test error (%)"
        for setting, label in (("small", "log λ = -8"), ("learned", "λ learned")):
            first = next(iter(panel["rows"].values()))[setting]
            lines += [
                f"{panel['label']}, {label}: {metric}, mean ± std over seeds; in brackets the share of the poison "
                "points the defence removed (%):",
                "",
                "| defence; attack | " + " | ".join(f"{100 * f:.1f} %" for f in first["fractions"]) + " |",
                "|---|" + "---:|" * len(first["fractions"]),
            ]
            for name, row in panel["rows"].items():
                cells = [_cell(row, setting, i, regression) for i in range(len(first["fractions"]))]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """Test error against the poison fraction: a panel per data set and defence (its oracle and
    data-dependent rows and the attacks adapting to it), log λ = -8 solid, λ learned dashed; the
    undefended victim in grey in every panel."""
    panels = [
        (p, family, [n for n in p["rows"] if n.split(",")[0].split(";")[0] == family])
        for p in result["panels"]
        for family in dict.fromkeys(n.split(",")[0].split(";")[0] for n in p["rows"] if n != "no defence")
    ]
    cols = min(4, len(panels))
    fig, axes = plt.subplots(-(-len(panels) // cols), cols, figsize=(4 * cols, 3.2 * -(-len(panels) // cols)),
                             squeeze=False)  # fmt: skip
    for ax, (panel, family, names) in zip(axes.flat, panels, strict=False):
        scale = 1 if "ridge" in panel["label"] else 100
        for name, colour in [("no defence", "grey"), *zip(names, plt.cm.tab10.colors, strict=False)]:
            row = panel["rows"].get(name)
            for setting, style in (("small", "-"), ("learned", "--")) if row else ():
                r = row[setting]
                label = name if setting == "small" else None
                ax.plot(100 * np.array(r["fractions"]), scale * np.array(r["error"]), style, color=colour, label=label)
        ax.set_title(f"{panel['label']}: {family}", fontsize=9)
        ax.set_xlabel("poison (%)")
        ax.set_ylabel("test MSE" if scale == 1 else "test error (%)")
        ax.set_yscale("log" if scale == 1 else "linear")  # ridge at log λ = -8 on MNIST is 100x the rest
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle("solid: log λ = -8; dashed: λ learned", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    p = harness.parser("defence_grid", __doc__)
    p.add_argument("--grid", choices=sorted(GRIDS), required=True, help="which data set and model")
    p.add_argument("--rows", nargs="+", help="rerun only these rows, merged into the grid's JSON in --out")
    args = p.parse_args(argv)
    harness.select_device(args.device)
    return harness.finish(args, f"defence_grid_{args.grid}", run(args), markdown, plot)


if __name__ == "__main__":
    main()
