"""The figures: importing them changes no global state, and the spread they show stays in range."""

import os
import subprocess
import sys

import numpy as np
import pytest

from poison_jax.face import plots

# One seed of four far above the others (the digits run that reached 43 %): mean ± std would dip below 0.
ERRORS = {0: [0.02, 0.0, 0.01, 0.03], 1: [0.05, 0.43, 0.02, 0.1], 2: [0.08, 0.1, None, 0.06]}


def _record(setting, cell, errors):
    """A sweep record as :func:`poison_jax.experiments.sweep.run_sweep` writes it (the fields the figures read)."""
    ok = [e for e in errors if e is not None]
    per_seed = {
        "error": list(errors),
        "log_lam": [None if e is None else [-8.0 + e] for e in errors],
        "sq_norm": [None if e is None else [1.0 + e] for e in errors],
    }
    mean = {k: np.mean([v for v in vs if v is not None], axis=0).tolist() if ok else None for k, vs in per_seed.items()}
    mean["error_std"] = float(np.std(ok)) if ok else None
    return {
        "setting": setting,
        "label": f"{setting} label",
        "cell": cell,
        "fraction": 0.035 * cell,
        "per_seed": per_seed,
        "mean": mean,
    }


@pytest.fixture
def records():
    return [_record(s, cell, errs) for s in ("small", "learned") for cell, errs in ERRORS.items()]


def _plotted_y(ax):
    """Every y value drawn on ``ax``: the lines' data and the scatter collections' offsets."""
    ys = [np.asarray(line.get_ydata(), float) for line in ax.lines]
    ys += [np.asarray(c.get_offsets(), float)[:, 1] for c in ax.collections]
    return np.concatenate(ys)


def test_importing_plots_keeps_the_backend():
    code = "import matplotlib; matplotlib.use('svg'); import poison_jax.face.plots; print(matplotlib.get_backend())"
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"


def test_error_figure_stays_in_range_and_shows_each_seed(records):
    fig = plots.error_figure(records, "outlier")
    ax = fig.axes[0]
    y = _plotted_y(ax)
    assert np.all((y >= 0) & (y <= 100)), y
    assert ax.get_ylim()[0] >= 0
    # Every seed that did not fail is a dot, the outlier included.
    dots = np.concatenate([np.asarray(c.get_offsets(), float)[:, 1] for c in ax.collections])
    assert dots.size == 2 * sum(e is not None for errs in ERRORS.values() for e in errs)
    assert np.isclose(dots, 43.0).sum() == 2
    # The lines are the means over seeds.
    means = [100 * np.mean([e for e in errs if e is not None]) for errs in ERRORS.values()]
    assert any(np.allclose(line.get_ydata(), means) for line in ax.lines)
    legend = ax.get_legend()
    text = " ".join([legend.get_title().get_text(), ax.get_title()] + [t.get_text() for t in legend.get_texts()])
    assert "mean" in text and "each seed" in text
    plots.plt.close(fig)


def test_a_failed_seed_is_skipped(records):
    fig = plots.error_figure(records)
    dots = [np.asarray(c.get_offsets(), float) for c in fig.axes[0].collections]
    assert all(np.isfinite(d).all() for d in dots)
    plots.plt.close(fig)
    # A cell whose seeds all failed draws nothing there and still does not fail.
    failed = records + [_record("clean", 0, [None, None])]
    plots.plt.close(plots.error_figure(failed))
    plots.plt.close(plots.lambda_norm_figure(failed))


def test_write_figures_saves_and_closes(records, tmp_path):
    before = set(plots.plt.get_fignums())
    paths = plots.write_figures(records, tmp_path, "title")
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    assert set(plots.plt.get_fignums()) == before


def test_elastic_net_records_plot_an_l1_and_an_l2_lambda_per_layer(records):
    """An elastic-net results file (two log λ per layer, one norm per layer) plots without flags."""
    for r in records:
        r["mean"]["log_lam"] = [r["mean"]["log_lam"][0], r["mean"]["log_lam"][0] + 1.0]
    fig = plots.lambda_norm_figure(records)
    ax_lam, ax_norm = fig.axes
    labels = [line.get_label() for line in ax_lam.get_lines()]
    assert labels == ["small label, L1", "small label, L2", "learned label, L1", "learned label, L2"]
    assert len(ax_norm.get_lines()) == 2 and ax_norm.get_ylabel() == "||w||²"
    assert "-7.98, -6.98" in plots.summary_table(records)
    plots.plt.close(fig)
