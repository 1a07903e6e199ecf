"""Figures of the paper's kinds from a sweep's records (matplotlib, PNG and PDF).

* :func:`error_figure` -- test error vs poisoning fraction, one curve per Λ setting: the mean over
  seeds as a line, every seed as a dot (the paper's Fig. 2 and 4);
* :func:`lambda_norm_figure` -- log λ and ``||w||²`` vs poisoning fraction (Fig. 3, 6, 8), per layer
  for a network;
* :func:`synthetic_figure` -- the maps of Fig. 1.

Importing this module leaves matplotlib's backend alone (a notebook keeps its inline backend);
without a display matplotlib falls back to Agg by itself, and :func:`save` closes what it writes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["error_figure", "lambda_norm_figure", "save", "summary_table", "synthetic_figure", "write_figures"]

_COLOURS = {"small": "tab:red", "large": "tab:green", "clean": "tab:orange", "learned": "tab:blue"}
# Distinct markers and dashes keep curves that coincide (e.g. λ_CLEAN at the grid's edge = log λ = -8) visible.
_STYLES = {"small": "o-", "large": "s-", "clean": "x--", "learned": "D-"}
_ERROR_LEGEND = "line: mean over seeds; dots: each seed"


def _by_setting(records):
    out = {}
    for r in records:
        out.setdefault(r["setting"], []).append(r)
    return {s: sorted(rs, key=lambda r: r["cell"]) for s, rs in out.items()}


def _seed_values(record, metric):
    values = [v for v in record["per_seed"][metric] if v is not None]
    return np.asarray(values, np.float64)


def _seed_offsets(x, num_seeds: int) -> np.ndarray:
    """Horizontal offsets, one per seed position, so that seeds with equal values stay apart.

    Evenly spread (not random: the figure is the same every time) over ±15 % of the smallest gap
    between fractions, and the same for a seed in every cell.
    """
    gaps = np.diff(np.unique(x))
    half_width = 0.15 * (gaps.min() if gaps.size else 1.0)
    return np.linspace(-half_width, half_width, num_seeds) if num_seeds > 1 else np.zeros(num_seeds)


def error_figure(records, title: str = ""):
    """Test error (%) vs poisoning fraction (%) per Λ setting; returns the figure.

    Each seed is a faint dot (failed seeds, ``None``, are left out) and the line is the mean over
    the seeds that did not fail; the legend's title says so. Dots and line both stay within the
    error's range [0, 100], and an outlying seed shows as itself instead of widening a band.
    """
    fig, ax = plt.subplots(figsize=(6.8, 3.6))
    for setting, rs in _by_setting(records).items():
        x = np.array([100 * r["fraction"] for r in rs])
        colour, style = _COLOURS.get(setting), _STYLES.get(setting, "o-")
        offsets = _seed_offsets(x, max(len(r["per_seed"]["error"]) for r in rs))
        dots_x, dots_y = [], []
        for xi, r in zip(x, rs):
            for i, e in enumerate(r["per_seed"]["error"]):
                if e is not None:
                    dots_x.append(xi + offsets[i])
                    dots_y.append(100 * e)
        # Unclipped: a seed at exactly 0 % error sits on the axis and should show in full.
        ax.scatter(dots_x, dots_y, s=14, marker=style[0], color=colour, alpha=0.35, linewidths=0.8, clip_on=False)
        errs = [100 * _seed_values(r, "error") for r in rs]
        mean = np.array([e.mean() if e.size else np.nan for e in errs])
        ax.plot(x, mean, style, color=colour, label=rs[0]["label"], clip_on=False)
    ax.set_xlabel("poisoning points (%)")
    ax.set_ylabel("test error (%)")
    ax.set_ylim(0, max(ax.get_ylim()[1], 1.0))  # at least 0-1 %, so that all-zero errors get sensible ticks
    ax.set_title(title)
    ax.grid(alpha=0.3)
    # Outside the axes, so that it never hides a seed's dot.
    ax.legend(title=_ERROR_LEGEND, title_fontsize="small", fontsize="small", loc="upper left",
              bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def lambda_norm_figure(records, title: str = ""):
    """log λ and ``||w||²`` (log scale) vs poisoning fraction; returns the figure.

    One line per setting (and per layer): the mean over the seeds that did not fail, as the
    legend's title says.
    """
    fig, (ax_lam, ax_norm) = plt.subplots(1, 2, figsize=(9, 3.6))
    for setting, rs in _by_setting(records).items():
        x = np.array([100 * r["fraction"] for r in rs])
        colour = _COLOURS.get(setting)
        lam = np.array([r["mean"]["log_lam"] or [np.nan] for r in rs], np.float64)
        multi_layer = lam.shape[1] > 1
        norm_key = "sq_norm_per_weight" if multi_layer else "sq_norm"
        norm = np.array([r["mean"][norm_key] or [np.nan] * lam.shape[1] for r in rs], np.float64)
        for layer in range(lam.shape[1]):
            suffix = f", layer {layer + 1}" if multi_layer else ""
            style = _STYLES.get(setting, "o-") if not multi_layer else ["o-", "s--", "^:"][layer % 3]
            ax_lam.plot(x, lam[:, layer], style, color=colour, label=rs[0]["label"] + suffix)
            ax_norm.plot(x, norm[:, layer], style, color=colour, label=rs[0]["label"] + suffix)
    ax_lam.set_ylabel("log λ")
    ax_norm.set_ylabel("||w||² per weight" if any(len(r["mean"]["log_lam"] or [0]) > 1 for r in records) else "||w||²")
    for ax in (ax_lam, ax_norm):
        ax.set_xlabel("poisoning points (%)")
        ax.grid(alpha=0.3)
    ax_norm.set_yscale("log")
    ax_lam.legend(title="mean over seeds", title_fontsize="small", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def synthetic_figure(maps: dict):
    """The paper's Fig. 1: validation error over the poison point's position, without and with
    regularisation, and the λ chosen by grid search at each position.

    ``maps`` is what :func:`poison_jax.experiment.synthetic_maps` returns.
    """
    xs, ys = maps["grid_x"], maps["grid_y"]
    extent = (xs[0], xs[-1], ys[0], ys[-1])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = [("val_error_noreg", f"validation error, log λ = {maps['log_lam_noreg']:.0f}", "viridis"),
              ("val_error_reg", f"validation error, λ = {np.exp(maps['log_lam_reg']):.0f}", "viridis"),
              ("best_log_lam", "log λ chosen by grid search", "magma")]
    for ax, (key, title, cmap) in zip(axes, panels):
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


def write_figures(records, out_dir: Path, title: str = "") -> list[Path]:
    """Write the error and log λ/``||w||²`` figures of ``records`` under ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    return (save(error_figure(records, title), out_dir / "error_vs_fraction")
            + save(lambda_norm_figure(records, title), out_dir / "lambda_norm_vs_fraction"))


def summary_table(records) -> str:
    """Markdown table: one row per fraction, per setting the mean test error ± std (%) and mean log-λ."""
    by_setting = _by_setting(records)
    settings = list(by_setting)
    fractions = sorted({(r["cell"], r["fraction"]) for r in records})
    head = "| poison (%) | " + " | ".join(f"{by_setting[s][0]['label']}: error (%) | log λ" for s in settings) + " |"
    rule = "|---:|" + "---:|---:|" * len(settings)
    rows = [head, rule]
    for cell, fraction in fractions:
        cols = []
        for s in settings:
            r = next((r for r in by_setting[s] if r["cell"] == cell), None)
            err = _seed_values(r, "error") if r else np.array([])
            lam = r["mean"]["log_lam"] if r else None
            cols.append(f"{100 * err.mean():.1f} ± {100 * err.std():.1f}" if err.size else "–")
            cols.append(", ".join(f"{v:.2f}" for v in lam) if lam else "–")
        rows.append(f"| {100 * fraction:.1f} | " + " | ".join(cols) + " |")
    return "\n".join(rows)
