"""Diagnostics of every finished cell (objective, inner gradient norm, CG residual per hyperiteration)
and ``poison-jax plot`` of several results folders side by side (RMD and IFT)."""

import json
import shutil

import numpy as np
import pytest

from poison_jax.experiments import store, sweep
from poison_jax.face import cli, plots
from poison_jax.poisoning import attack
from tests.tiny import tiny as shared_tiny

# A tiny digits sweep; its cross-validation picks log λ = -8, so λ_CLEAN's
# attack cell is a copy of log λ = -8's (reused_from).


def tiny(overrides):
    return shared_tiny({"attack.num_batches": 1, **overrides})


def _run(config, out):
    return sweep.run_sweep(config, out, progress=False, log=lambda _: None)


@pytest.fixture(scope="module")
def rmd(tmp_path_factory):
    out = tmp_path_factory.mktemp("rmd")
    config = tiny({"sweep.settings": ("small", "clean", "learned")})
    return config, out, _run(config, out)


@pytest.fixture(scope="module")
def ift(tmp_path_factory):
    out = tmp_path_factory.mktemp("ift")
    config = tiny({"sweep.settings": ("learned",), "method": "ift"})
    return config, out, _run(config, out)


def _iters(config, record):
    if record["cell"] == 0:
        return config.attack.iters_clean if record["setting"] == "learned" else 0
    return config.attack.iters_multi if record["setting"] == "learned" else config.attack.iters_fixed


@pytest.mark.slow
def test_every_finished_cell_has_its_diagnostics(rmd):
    config, out, records = rmd
    found = store.read_diagnostics(out)
    assert set(found) == {(r["setting"], r["cell"]) for r in records}
    for r in records:
        d = found[(r["setting"], r["cell"])]
        shape = (config.sweep.num_seeds, _iters(config, r))
        # RMD solves no adjoint system: no adjoint stats; a cell without hyperiterations has no steps.
        expected = (
            set(store.DIAGNOSTICS)
            - {"adjoint_steps", "adjoint_residual"}
            - ({"inner_steps"} if not shape[1] else set())
        )
        assert set(d) == expected, (r["setting"], r["cell"])
        for name in expected - {"seeds", "inner_grad_norm_init"}:
            assert d[name].shape == shape, (r["setting"], r["cell"], name)
        assert np.isfinite(d["objective"]).all() and np.isfinite(d["inner_grad_norm"]).all()
        assert (d["inner_grad_norm"] >= 0).all() and d["finite"].all()
        if shape[1]:
            assert np.all(d["inner_steps"] == config.method.steps)
        assert d["seeds"].tolist() == r["seeds"]
        assert d["inner_grad_norm_init"].shape == (config.sweep.num_seeds,) and (d["inner_grad_norm_init"] > 0).all()
        # Trained weights are more stationary than w(0).
        if shape[1]:
            assert (d["inner_grad_norm"][:, -1] < d["inner_grad_norm_init"]).all()
    # results.jsonl's lines are unchanged: no array (nor a diagnostics field) in them.
    first = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert "diagnostics" not in first and "objective" not in first


def test_first_objective_is_the_attacks(rmd):
    """learned's cell 0 starts from the fresh state: its first objective is attack_objective of it."""
    config, out, _ = rmd
    runner = sweep.Sweep(config)
    state = attack.set_poison_count(runner.fresh_state(config.attack.log_lam_init), 0, 0)
    expected = runner.sharding.gather(attack.attack_objective(runner.settings, runner.splits, state))
    objective = store.read_diagnostics(out)[("learned", 0)]["objective"]
    np.testing.assert_allclose(objective[:, 0], expected, rtol=1e-5)
    # Later hyperiterations of the attack move the objective (the poison points were optimised).
    attacked = store.read_diagnostics(out)[("learned", 1)]["objective"]
    assert not np.allclose(attacked[:, 0], attacked[:, -1])


def test_a_copied_cell_copies_its_diagnostics(rmd):
    _, out, records = rmd
    copied = next(r for r in records if r["setting"] == "clean" and r["cell"] == 1)
    assert copied["reused_from"] == "small"
    assert (out / "diagnostics" / "clean-1.npz").read_bytes() == (out / "diagnostics" / "small-1.npz").read_bytes()


@pytest.mark.slow
def test_resume_writes_the_diagnostics_of_the_cells_it_runs(rmd, tmp_path):
    config, out, records = rmd
    folder = tmp_path / "old"
    shutil.copytree(out, folder)
    shutil.rmtree(folder / "diagnostics")  # a folder written before diagnostics existed ...
    lines = (folder / "results.jsonl").read_text().splitlines()
    (folder / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # ... and interrupted
    resumed = sweep.run_sweep(config, folder, resume=True, progress=False, log=lambda _: None)
    assert len(resumed) == len(records)
    found = store.read_diagnostics(folder)
    assert set(found) == {("learned", 1)}
    np.testing.assert_allclose(
        found[("learned", 1)]["objective"], store.read_diagnostics(out)[("learned", 1)]["objective"], rtol=1e-6
    )


def test_a_folder_without_diagnostics_still_plots(rmd, tmp_path, capsys):
    _, out, _ = rmd
    folder = tmp_path / "old"
    shutil.copytree(out, folder)
    shutil.rmtree(folder / "diagnostics")
    assert cli.main(["plot", str(folder)]) == 0
    printed = capsys.readouterr().out
    assert "no diagnostics" in printed and "| poison (%) |" in printed
    assert (folder / "figures" / "error_vs_fraction.png").exists()
    assert not (folder / "figures" / "attack_objective.png").exists()


@pytest.mark.slow
def test_plot_draws_the_objective_and_checks_the_inner_problem(rmd, ift, tmp_path, capsys):
    _, out, _ = rmd
    assert cli.main(["plot", str(out), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "Inner convergence check" in printed and "RMD" in printed
    assert "λ learned: inner gradient norm max" in printed
    for suffix in (".png", ".pdf"):
        assert (tmp_path / "figures" / f"attack_objective{suffix}").stat().st_size > 5_000
    _, ift_out, _ = ift
    assert cli.main(["plot", str(ift_out), "--out", str(tmp_path / "ift")]) == 0
    printed = capsys.readouterr().out
    assert "IFT assumption check" in printed and "CG residual max" in printed and "cg_tol 1e-06" in printed
    residual = store.read_diagnostics(ift_out)[("learned", 1)]["adjoint_residual"]
    assert residual.shape == (2, 2) and np.isfinite(residual).all() and (residual > 0).all()


def test_objective_figure_one_panel_per_setting(rmd):
    _, out, records = rmd
    fig = plots.objective_figure(records, store.read_diagnostics(out), "t")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [r["label"] for r in records if r["cell"] == 1]
    learned = fig.axes[titles.index("λ learned")]
    lines = [line for line in learned.lines if line.get_linestyle() != ":"]  # without the cell boundaries
    assert len(lines) == 2 + 1  # each seed faint, the mean bold
    assert len(lines[-1].get_xdata()) == 4  # T_λ on clean data, then T_mul, concatenated
    notes = " ".join(text.get_text() for text in fig.texts)
    assert "mean over seeds" in notes and "each seed" in notes
    assert learned.get_xlabel() and fig.axes[0].get_ylabel()
    plots.plt.close(fig)


def _labels(fig):
    return [line.get_label() for ax in fig.axes for line in ax.lines if not line.get_label().startswith("_")]


def test_plot_of_two_folders_keeps_them_apart(rmd, ift, tmp_path, capsys, monkeypatch):
    _, rmd_out, _ = rmd
    _, ift_out, _ = ift
    seen = {}
    save = plots.save

    def saving(fig, stem):
        seen[stem.name] = _labels(fig)
        return save(fig, stem)

    monkeypatch.setattr(plots, "save", saving)
    compare = tmp_path / "compare"
    assert cli.main(["plot", str(rmd_out), str(ift_out), "--out", str(compare)]) == 0
    printed = capsys.readouterr().out
    for name in ("error_vs_fraction", "lambda_norm_vs_fraction", "attack_objective"):
        assert (compare / "figures" / f"{name}.png").exists() and (compare / "figures" / f"{name}.pdf").exists()
    # One table per folder, with a heading naming the folder and the method.
    assert f"## {rmd_out}: RMD" in printed and f"## {ift_out}: IFT" in printed
    assert printed.count("| poison (%) |") == 2
    # Both folders have λ learned: two lines, never one merged curve.
    for name in ("error_vs_fraction", "attack_objective"):
        learned = [label for label in seen[name] if label.startswith("λ learned")]
        assert sorted(learned) == sorted([f"λ learned — rmd ({rmd_out})", f"λ learned — ift ({ift_out})"]), name
    assert not (rmd_out / "figures" / "attack_objective.png").exists()  # nothing written into the inputs


def test_same_setting_of_two_folders_is_two_lines(rmd):
    _, out, records = rmd
    diagnostics = store.read_diagnostics(out)
    tagged = plots.label_source(records, 0, "rmd (a)") + plots.label_source(records, 1, "ift (b)")
    both = {(i, *key): value for i in (0, 1) for key, value in diagnostics.items()}
    fig = plots.error_figure(tagged)
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert labels.count("λ learned — rmd (a)") == 1 and labels.count("λ learned — ift (b)") == 1
    plots.plt.close(fig)
    fig = plots.objective_figure(tagged, both)
    assert len(fig.axes) == 3  # one panel per setting, not per folder
    learned = next(ax for ax in fig.axes if ax.get_title() == "λ learned")
    assert sorted(_labels_of(learned)) == ["λ learned — ift (b)", "λ learned — rmd (a)"]
    styles = {line.get_label(): line.get_linestyle() for line in learned.lines}
    assert styles["λ learned — rmd (a)"] != styles["λ learned — ift (b)"]
    plots.plt.close(fig)


def _labels_of(ax):
    return [line.get_label() for line in ax.lines if not line.get_label().startswith("_")]


def test_one_folder_keeps_its_labels(rmd):
    _, out, records = rmd
    fig = plots.error_figure(records)
    assert _labels_of(fig.axes[0]) == [r["label"] for r in records if r["cell"] == 0]
    plots.plt.close(fig)


def test_several_folders_need_out(rmd, capsys):
    _, out, _ = rmd
    assert cli.main(["plot", str(out), str(out)]) == 2
    assert "need --out" in capsys.readouterr().err


def test_damaged_diagnostics_are_skipped(tmp_path):
    (tmp_path / "diagnostics").mkdir()
    (tmp_path / "diagnostics" / "small-1.npz").write_bytes(b"not a zip")
    np.savez(tmp_path / "diagnostics" / "learned-0.npz", objective=np.zeros((2, 3)))
    assert list(store.read_diagnostics(tmp_path)) == [("learned", 0)]
    assert store.read_diagnostics(tmp_path / "nowhere") == {}


def test_check_flags_a_diverged_seed_and_an_unmet_cg_tolerance():
    record = {"setting": "learned", "label": "λ learned", "cell": 1, "hypergrad": "ift"}
    d = {
        "inner_grad_norm": np.array([[1e-2, 1e-3], [1e-2, np.nan]]),
        "adjoint_residual": np.array([[0, 1e-7], [0, 1e-3]]),
        "inner_grad_norm_init": np.array([1.0, 1.0]),
        "inner_converged": np.ones((2, 2), bool),
    }
    lines = plots.diagnostics_check([record], {("learned", 1): d}, {"method": "ift", "method.cg_tol": 1e-6})
    assert "inner gradient norm max inf" in lines[1] and "NOT met" in lines[1]
    d["inner_grad_norm"][1, 1] = 2e-3
    d["adjoint_residual"][1, 1] = 5e-7
    lines = plots.diagnostics_check([record], {("learned", 1): d}, {"method": "ift", "method.cg_tol": 1e-6})
    assert "max 2.0e-03 (0.2 % of its value at w(0))" in lines[1] and "≤ cg_tol 1e-06" in lines[1]
    assert "NOT" not in lines[1]
