"""Figures of the paper's kinds from a sweep's records (matplotlib, PNG and PDF).

* :func:`error_figure` -- test error vs poisoning fraction, one curve per Λ setting, spread over
  seeds (the paper's Fig. 2 and 4);
* :func:`lambda_norm_figure` -- λ and ``||w||²`` vs poisoning fraction (Fig. 3, 6, 8), per layer
  for a network;
* :func:`synthetic_figure` -- the maps of Fig. 1.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["error_figure", "lambda_norm_figure", "save", "summary_table", "synthetic_figure", "write_figures"]

_COLOURS = {"small": "tab:red", "large": "tab:green", "clean": "tab:orange", "learned": "tab:blue"}
# Distinct markers and dashes keep curves that coincide (e.g. λ_CLEAN at the grid's edge = λ = -8) visible.
_STYLES = {"small": "o-", "large": "s-", "clean": "x--", "learned": "D-"}


def _by_setting(records):
    out = {}
    for r in records:
        out.setdefault(r["setting"], []).append(r)
    return {s: sorted(rs, key=lambda r: r["cell"]) for s, rs in out.items()}


def _seed_values(record, metric):
    values = [v for v in record["per_seed"][metric] if v is not None]
    return np.asarray(values, np.float64)


def error_figure(records, title: str = ""):
    """Test error (%) vs poisoning fraction (%) per Λ setting: mean over seeds, band = ± one std."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for setting, rs in _by_setting(records).items():
        x = np.array([100 * r["fraction"] for r in rs])
        errs = [100 * _seed_values(r, "error") for r in rs]
        mean = np.array([e.mean() if e.size else np.nan for e in errs])
        std = np.array([e.std() if e.size else np.nan for e in errs])
        colour = _COLOURS.get(setting)
        ax.plot(x, mean, _STYLES.get(setting, "o-"), color=colour, label=rs[0]["label"])
        ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.2)
    ax.set_xlabel("poisoning points (%)")
    ax.set_ylabel("test error (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def lambda_norm_figure(records, title: str = ""):
    """λ (log scale) and ``||w||²`` vs poisoning fraction: one line per setting (and per layer)."""
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
    ax_lam.legend(fontsize="small")
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
    panels = [("val_error_noreg", f"validation error, λ = {maps['lam_noreg']:.0f}", "viridis"),
              ("val_error_reg", f"validation error, λ = log {np.exp(maps['lam_reg']):.0f}", "viridis"),
              ("best_log_lam", "λ chosen by grid search", "magma")]
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
    """Write ``fig`` as PNG and PDF next to each other; return both paths."""
    path_stem = Path(path_stem)
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [path_stem.with_suffix(".png"), path_stem.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths


def write_figures(records, out_dir: Path, title: str = "") -> list[Path]:
    """The error and λ/``||w||²`` figures of ``records`` under ``out_dir``."""
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
