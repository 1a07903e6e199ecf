"""Figures of the paper's kinds from a sweep's records (matplotlib, PNG and PDF).

* :func:`error_figure` -- test error vs poisoning fraction, one curve per Λ setting: the mean over
  seeds as a line, every seed as a dot (the paper's Fig. 2 and 4);
* :func:`lambda_norm_figure` -- log λ and ``||w||²`` vs poisoning fraction (Fig. 3, 6, 8), per layer
  for a network;
* :func:`class_figure` -- for more than two classes: the test error of each class without poison
  and at the largest fraction, and the confusion matrix there, per Λ setting;
* :func:`objective_figure` -- the attacker's objective against hyperiteration, one panel per Λ
  setting, cells concatenated (from the sweep's diagnostics, :func:`poison_jax.experiments.store.read_diagnostics`);
* :func:`synthetic_figure` -- the maps of Fig. 1.

:func:`diagnostics_check` says, from the same diagnostics, whether the inner problem converged (IFT's
assumption). Several results folders (e.g. an RMD and an IFT run) go into one figure through
:func:`label_source`: their curves are labelled by method and folder and never merged.

Importing this module leaves matplotlib's backend alone (a notebook keeps its inline backend);
without a display matplotlib falls back to Agg by itself, and :func:`save` closes what it writes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from poison_jax.face._records import by_setting, diagnostics_of, is_regression, label_source, seed_values
from poison_jax.face._report import diagnostics_check, summary_table

__all__ = [
    "class_figure",
    "diagnostics_check",
    "error_figure",
    "label_source",
    "lambda_norm_figure",
    "objective_figure",
    "save",
    "summary_table",
    "synthetic_figure",
    "write_figures",
]

_COLOURS = {"small": "tab:red", "large": "tab:green", "clean": "tab:orange", "learned": "tab:blue"}
# Distinct markers and dashes keep curves that coincide (e.g. λ_CLEAN at the grid's edge = log λ = -8) visible.
_STYLES = {"small": "o-", "large": "s-", "clean": "x--", "learned": "D-"}
_ERROR_LEGEND = "line: mean over seeds; dots: each seed"
_SOURCE_DASHES = ("--", ":", "-.")


def _line_style(setting: str, source: int = 0) -> dict:
    """Colour, marker and dashes of a curve: the colour says the setting, the dashes the folder."""
    style = _STYLES.get(setting, "o-")
    out = {"color": _COLOURS.get(setting), "marker": style[0], "linestyle": style[1:]}
    if source > 0:
        dashes = [d for d in _SOURCE_DASHES if d != out["linestyle"]]  # never the first folder's own
        out["linestyle"] = dashes[(source - 1) % len(dashes)]
        out["markerfacecolor"] = "none"
    return out


def _seed_offsets(x, num_seeds: int) -> np.ndarray:
    """Horizontal offsets, one per seed position, so that seeds with equal values stay apart.

    Evenly spread (not random: the figure is the same every time) over ±15 % of the smallest gap
    between fractions, and the same for a seed in every cell.
    """
    gaps = np.diff(np.unique(x))
    half_width = 0.15 * (gaps.min() if gaps.size else 1.0)
    return np.linspace(-half_width, half_width, num_seeds) if num_seeds > 1 else np.zeros(num_seeds)


def error_figure(records, title: str = ""):
    """Test error (%) vs poisoning fraction (%) per Λ setting; returns the figure (test MSE, as is,
    for a regression's records).

    Each seed is a faint dot (failed seeds, ``None``, are left out) and the line is the mean over
    the seeds that did not fail; the legend's title says so. Dots and line both stay within the
    error's range [0, 100], and an outlying seed shows as itself instead of widening a band.
    """
    fig, ax = plt.subplots(figsize=(6.8, 3.6))
    scale = 1.0 if is_regression(records) else 100.0
    for (source, setting), rs in by_setting(records).items():
        x = np.array([100 * r["fraction"] for r in rs])
        line = _line_style(setting, source)
        colour, marker = line["color"], line["marker"]
        offsets = _seed_offsets(x, max(len(r["per_seed"]["error"]) for r in rs))
        dots_x, dots_y = [], []
        for xi, r in zip(x, rs, strict=False):
            for i, e in enumerate(r["per_seed"]["error"]):
                if e is not None:
                    dots_x.append(xi + offsets[i])
                    dots_y.append(scale * e)
        # Unclipped: a seed at exactly 0 % error sits on the axis and should show in full.
        hollow = source > 0 and marker not in "x+|_"  # another folder's dots: open markers
        ax.scatter(
            dots_x,
            dots_y,
            s=14,
            marker=marker,
            alpha=0.35,
            linewidths=0.8,
            clip_on=False,
            **({"facecolors": "none", "edgecolors": colour} if hollow else {"color": colour}),
        )
        errs = [scale * seed_values(r, "error") for r in rs]
        mean = np.array([e.mean() if e.size else np.nan for e in errs])
        ax.plot(x, mean, label=rs[0]["label"], clip_on=False, **line)
    ax.set_xlabel("poisoning points (%)")
    ax.set_ylabel("test MSE" if scale == 1.0 else "test error (%)")
    ax.set_ylim(
        0, max(ax.get_ylim()[1], 1.0 if scale == 100.0 else 0.0)
    )  # at least 0-1 %, so that all-zero errors get sensible ticks
    ax.set_title(title)
    ax.grid(alpha=0.3)
    # Outside the axes, so that it never hides a seed's dot.
    ax.legend(
        title=_ERROR_LEGEND,
        title_fontsize="small",
        fontsize="small",
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
    )
    fig.tight_layout()
    return fig


def lambda_norm_figure(records, title: str = ""):
    """log λ and ``||w||²`` (log scale) vs poisoning fraction; returns the figure.

    One line per setting (and per layer, and for an elastic-net penalty per λ: L1's and L2's): the
    mean over the seeds that did not fail, as the legend's title says.
    """
    fig, (ax_lam, ax_norm) = plt.subplots(1, 2, figsize=(9, 3.6))
    for (source, setting), rs in by_setting(records).items():
        x = np.array([100 * r["fraction"] for r in rs])
        lam = np.array([r["mean"]["log_lam"] or [np.nan] for r in rs], np.float64)
        num_layers = max(len(r["mean"]["sq_norm"] or [0]) for r in rs)
        per_layer = max(lam.shape[1] // num_layers, 1)  # elastic-net: an L1 and an L2 log λ per layer
        norm_key = "sq_norm_per_weight" if num_layers > 1 else "sq_norm"
        norm = np.array([r["mean"][norm_key] or [np.nan] * num_layers for r in rs], np.float64)

        def style(layer, kind=0):
            line = _line_style(setting, source)
            if (
                num_layers > 1 or per_layer > 1
            ):  # the dashes say the layer or the λ's kind (open markers another folder)
                k = layer + kind * num_layers
                line.update(marker="os^D"[k % 4], linestyle=["-", "--", ":", "-."][k % 4])
            return line

        for j in range(lam.shape[1]):
            kind, layer = divmod(j, num_layers)
            suffix = (f", {('L1', 'L2')[kind]}" if per_layer > 1 else "") + (
                f", layer {layer + 1}" if num_layers > 1 else ""
            )
            ax_lam.plot(x, lam[:, j], label=rs[0]["label"] + suffix, **style(layer, kind))
        for layer in range(num_layers):
            suffix = f", layer {layer + 1}" if num_layers > 1 else ""
            ax_norm.plot(x, norm[:, layer], label=rs[0]["label"] + suffix, **style(layer))
    ax_lam.set_ylabel("log λ")
    ax_norm.set_ylabel("||w||² per weight" if any(len(r["mean"]["sq_norm"] or [0]) > 1 for r in records) else "||w||²")
    for ax in (ax_lam, ax_norm):
        ax.set_xlabel("poisoning points (%)")
        ax.grid(alpha=0.3)
    ax_norm.set_yscale("log")
    ax_lam.legend(title="mean over seeds", title_fontsize="small", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _is_multiclass(records) -> bool:
    return any(r["mean"].get("confusion") is not None for r in records)


def class_figure(records, title: str = ""):
    """Per class, for records of more than two classes (their ``confusion``): one column per Λ
    setting; top, the test error (%) of each true class at fraction 0 and at the largest fraction;
    bottom, the confusion matrix at the largest fraction, each row (true class) in % of its test
    points. Means over the seeds that did not fail. Returns the figure."""
    curves = {key: rs for key, rs in by_setting(records).items() if rs[-1]["mean"].get("confusion") is not None}
    fig, axes = plt.subplots(2, len(curves), figsize=(3.4 * len(curves), 6.4), squeeze=False)
    for column, rs in enumerate(curves.values()):
        first, last = rs[0], rs[-1]
        confusion = np.asarray(last["mean"]["confusion"], np.float64)
        classes = np.arange(confusion.shape[0])
        ax_bar, ax_conf = axes[:, column]
        for offset, r, shade in ((-0.2, first, 0.35), (0.2, last, 1.0)):
            per_class = r["mean"].get("per_class_error")
            if per_class is not None:
                label = f"{100 * r['fraction']:.1f} % poison"
                ax_bar.bar(classes + offset, 100 * np.asarray(per_class), width=0.4, alpha=shade, label=label)
        ax_bar.set_title(last["label"], fontsize="medium")
        ax_bar.set_xticks(classes)
        ax_bar.set_xlabel("true class")
        ax_bar.set_ylabel("test error (%)")
        ax_bar.grid(alpha=0.3, axis="y")
        ax_bar.legend(fontsize="small")
        share = 100 * confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1e-12)
        image = ax_conf.imshow(share, cmap="Blues", vmin=0, vmax=100)
        ax_conf.set_xticks(classes)
        ax_conf.set_yticks(classes)
        ax_conf.set_xlabel("predicted class")
        ax_conf.set_ylabel("true class")
        ax_conf.set_title(f"confusion at {100 * last['fraction']:.1f} % (% of row)", fontsize="small")
        fig.colorbar(image, ax=ax_conf, fraction=0.046)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def synthetic_figure(maps: dict):
    """The paper's Fig. 1: validation error over the poison point's position, without and with
    regularisation, and the λ chosen by grid search at each position.

    ``maps`` is what :func:`poison_jax.experiments.synthetic.synthetic_maps` returns.
    """
    xs, ys = maps["grid_x"], maps["grid_y"]
    extent = (xs[0], xs[-1], ys[0], ys[-1])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = [
        ("val_error_noreg", f"validation error, log λ = {maps['log_lam_noreg']:.0f}", "viridis"),
        ("val_error_reg", f"validation error, λ = {np.exp(maps['log_lam_reg']):.0f}", "viridis"),
        ("best_log_lam", "log λ chosen by grid search", "magma"),
    ]
    for ax, (key, title, cmap) in zip(axes, panels, strict=False):
        image = ax.imshow(np.asarray(maps[key]).T, origin="lower", extent=extent, cmap=cmap, aspect="auto")
        fig.colorbar(image, ax=ax)
        x_val, y_val = np.asarray(maps["x_val"]), np.asarray(maps["y_val"])
        ax.scatter(*x_val[y_val == 0].T, s=6, c="tab:blue", edgecolors="white", linewidths=0.3)
        ax.scatter(*x_val[y_val == 1].T, s=6, c="tab:red", edgecolors="white", linewidths=0.3)
        ax.set_title(title)
    for ax, key in ((axes[0], "path_noreg"), (axes[1], "path_reg")):
        path = np.asarray(maps[key])
        ax.plot(path[:, 0], path[:, 1], "w.-", lw=1, ms=2)
        ax.plot(*path[-1], "w*", ms=10)
    fig.tight_layout()
    return fig


def save(fig, path_stem: Path) -> list[Path]:
    """Write ``fig`` as PNG and PDF next to each other, then close it; return both paths."""
    path_stem = Path(path_stem)
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [path_stem.with_suffix(".png"), path_stem.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths


def write_figures(records, out_dir: Path, title: str = "", diagnostics: dict | None = None) -> list[Path]:
    """Write the error and log λ/``||w||²`` figures of ``records`` under ``out_dir``, the
    ``per_class`` figure (:func:`class_figure`) for more than two classes, and the
    ``attack_objective`` figure when ``diagnostics`` (see :func:`objective_figure`) hold a
    hyperiteration of them; return their paths."""
    out_dir = Path(out_dir)
    paths = save(error_figure(records, title), out_dir / "error_vs_fraction") + save(
        lambda_norm_figure(records, title), out_dir / "lambda_norm_vs_fraction"
    )
    if _is_multiclass(records):
        paths += save(class_figure(records, title), out_dir / "per_class")
    if diagnostics and _objective_curves(records, diagnostics):
        paths += save(objective_figure(records, diagnostics, title), out_dir / "attack_objective")
    return paths


def _objective_curves(records, diagnostics: dict) -> dict:
    """``{(folder index, setting): [(record, objective (num_seeds, T)), ...]}`` for the cells that have
    hyperiterations and diagnostics, in cell order."""
    curves = {}
    for key, rs in by_setting(records).items():
        cells = []
        for r in rs:
            d = diagnostics_of(diagnostics, r)
            objective = None if d is None else d.get("objective")
            if objective is not None and np.ndim(objective) == 2 and np.shape(objective)[1] > 0:
                cells.append((r, np.asarray(objective, np.float64)))
        if cells:
            curves[key] = cells
    return curves


def _finite_mean(values: np.ndarray) -> np.ndarray:
    """Mean over axis 0 of the finite entries (a seed whose training diverged drops out), NaN where none is."""
    ok = np.isfinite(values)
    count = ok.sum(axis=0)
    total = np.where(ok, values, 0.0).sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


_OBJECTIVE_LEGEND = (
    "bold line: mean over seeds; faint lines: each seed; dotted: a cell (new poison batch) starts, "
    "its poisoning % at the bottom"
)


def objective_figure(records, diagnostics: dict, title: str = ""):
    """The attacker's objective (validation loss at the start of each hyperiteration) against
    hyperiteration, one panel per Λ setting; returns the figure.

    A setting's cells are concatenated in order (for ``learned`` cell 0 is λ learned on clean
    data); a dotted line marks where a cell starts, labelled with its poisoning fraction. Each
    seed is a faint line and the mean over seeds a bold one, as the figure's footnote says.
    ``diagnostics`` map ``(setting, cell)`` to a cell's arrays
    (:func:`poison_jax.experiments.store.read_diagnostics`), or, for records of several folders
    (:func:`label_source`), ``(folder index, setting, cell)``: then each panel has one bold line per
    folder, labelled by it. Cells without diagnostics or hyperiterations are left out.
    """
    curves = _objective_curves(records, diagnostics)
    settings = list(dict.fromkeys(setting for _, setting in curves))
    fig, axes = plt.subplots(1, max(len(settings), 1), figsize=(max(4.8, 3.6 * len(settings)), 3.9), squeeze=False)
    for ax, setting in zip(axes[0], settings, strict=False):  # no axes left over
        _objective_panel(ax, setting, {key: cells for key, cells in curves.items() if key[1] == setting})
    axes[0][0].set_ylabel("attacker's objective (validation loss)")
    if not settings:
        axes[0][0].text(0.5, 0.5, "no diagnostics", ha="center", va="center", transform=axes[0][0].transAxes)
    fig.suptitle(title)
    fig.text(0.5, 0.01, _OBJECTIVE_LEGEND, ha="center", va="bottom", fontsize="small")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def _objective_panel(ax, setting: str, mine: dict) -> None:
    """One setting's panel: per folder of ``mine`` (``{(folder, setting): cells}``) a faint line per
    seed and a bold mean, cells concatenated; a dotted line where a cell starts."""
    from matplotlib.ticker import MaxNLocator

    boundaries: dict[float, float] = {}
    for (source, _), cells in mine.items():
        line = _line_style(setting, source)
        line.pop("marker")
        xs, start = [], 0
        for r, objective in cells:
            boundaries.setdefault(start + 0.5, r["fraction"])
            xs.append(np.arange(start + 1, start + objective.shape[1] + 1))
            start += objective.shape[1]
        x = np.concatenate(xs)
        num_seeds = min(objective.shape[0] for _, objective in cells)
        y = np.concatenate([objective[:num_seeds] for _, objective in cells], axis=1)
        for row in y:
            ax.plot(x, row, color=line["color"], linestyle=line["linestyle"], alpha=0.3, lw=0.7, label="_nolegend_")
        first = cells[0][0]
        label = first["label"] if "_source" in first else "mean over seeds"
        ax.plot(x, _finite_mean(y), lw=1.8, label=label, **line)
    for x0, fraction in sorted(boundaries.items()):
        ax.axvline(x0, color="grey", linestyle=":", lw=0.8, label="_nolegend_")
        transform = ax.get_xaxis_transform()
        ax.text(x0, 0.02, f" {100 * fraction:.1f}%", transform=transform, fontsize=6, color="grey", va="bottom")
    first = next(iter(mine.values()))[0][0]
    ax.set_title(first.get("_base_label", first["label"]), fontsize="medium")
    ax.set_xlabel("hyperiteration (cells in order)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if len(mine) > 1 or "_source" in first:  # several folders: say which line is which
        ax.legend(fontsize="x-small")
