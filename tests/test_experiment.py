"""Floor 2: configs, presets, the sweep runner and the results store."""

import dataclasses
import json
import math

import numpy as np
import pytest

from poison_jax.experiments import config, overrides, presets, sections, sources, store, sweep, synthetic
from poison_jax.experiments.checked import ConfigError
from tests.tiny import tiny

# -- configs ---------------------------------------------------------------------------------


def test_presets_hold_the_papers_settings():
    mnist = presets.preset("mnist-lr")
    assert (mnist.sweep.n_train, mnist.sweep.n_val, mnist.method.steps, mnist.method.lr) == (512, 171, 150, 0.1)
    a = mnist.attack
    assert (a.iters_fixed, a.iters_clean, a.iters_multi, a.alpha, a.beta) == (100, 50, 100, 0.99, 0.8)
    assert a.log_lam_box == (-8.0, math.log(200)) and mnist.victim == sections.SGD(lr=1e-2, epochs=200, batch=64)
    assert [round(100 * f, 1) for f in mnist.fractions] == [0.0, 3.3, 6.6, 10.0, 13.3, 16.6]
    mlp = presets.preset("imagenet-mlp")
    assert mlp.model == sections.MLP(hidden=(128, 32)) and mlp.method.steps == 600
    assert (mlp.attack.iters_multi, mlp.attack.beta, mlp.victim.epochs) == (150, 0.03, 4000)
    assert "clean" not in mlp.sweep.settings  # the paper omits CV for the DNN
    assert presets.preset("mnist5k-lr").data == sources.Mnist5k(classes=(0, 8), n_test=317, x_box=(0.0, 1.0))
    strong = presets.preset("mnist5k-lr-strong")
    assert strong.method.solver == sections.NewtonCG(tol=1e-4) == strong.victim.solver
    assert strong.attack.xp_step == sections.ArmijoStep(min_scale=0.25)
    assert all(p.name == name and p.summary for name, p in presets.PRESETS.items())
    assert set(presets.PRESETS) == {
        "mnist-lr",
        "mnist5k-lr",
        "mnist5k-lr-strong",
        "mnist5k17-lr-strong",
        "fmnist-lr",
        "imagenet-lr",
        "imagenet-mlp",
        "synthetic",
        "digits-lr",
        "digits10-lr",
        "mnist5k10-lr",
        "mnist5k-mlp",
        "diabetes-ridge",
    }


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"sweep.n_train": -5}, r"sweep.n_train must be a positive integer, got -5"),
        ({"sweep.num_seeds": 0}, r"sweep.num_seeds must be a positive integer, got 0"),
        (
            {"attack.poison_batch": 100, "attack.num_batches": 3},
            r"attack.num_batches must be such that attack.poison_batch \* attack.num_batches = 300 "
            r"does not exceed sweep.n_train \(200\)",
        ),
        ({"data.x_box": (1.0, 0.0)}, r"data.x_box must be a pair \(low, high\) .* low < high, got \(1.0, 0.0\)"),
        ({"attack.log_lam_box": (2.0, 2.0)}, r"attack.log_lam_box must be .* low < high, got \(2.0, 2.0\)"),
        ({"attack.alpha": 0.0}, r"attack.alpha must be a finite number > 0, got 0.0"),
        ({"method.lr": -0.1}, r"method.lr must be a finite number > 0, got -0.1"),
        ({"victim.lr": float("nan")}, r"victim.lr must be a finite number > 0, got nan"),
        ({"model": "cnn"}, r"model must be one of lr, mlp, got 'cnn'"),
        ({"method": "fmd"}, r"method must be one of rmd, ift, implicit, got 'fmd'"),
        ({"sweep.settings": ("learned", "best")}, r"sweep.settings must be .*, got \('learned', 'best'\)"),
        ({"data.classes": (0, 1, 1)}, r"data.classes must be distinct classes \(1 appear twice\)"),
    ],
)
def test_config_validation_names_path_and_value(overrides, message):
    with pytest.raises(ConfigError, match=message):
        presets.preset("digits-lr", overrides)


def test_a_field_the_choice_does_not_read_cannot_be_written():
    with pytest.raises(ConfigError, match=r"method 'rmd' has no field 'cg_iters' \(its fields: steps, lr, check"):
        presets.preset("digits-lr", {"method.cg_iters": 50})
    with pytest.raises(ConfigError, match=r"data 'digits' has no field 'path' .* switch data first"):
        presets.preset("digits-lr", {"data.path": "my.npz"})
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'solver'"):
        sections.RMD(solver=sections.LBFGS())  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match=r"the config has no section 'learning' \(its fields: name, data, "):
        presets.preset("digits-lr", {"learning.rate": 0.1})
    with pytest.raises(ConfigError, match=r"unknown preset 'mnist-dnn': choose one of mnist-lr, "):
        presets.preset("mnist-dnn")


def test_switching_a_choice_keeps_what_it_shares_and_sets_its_fields():
    base = presets.preset("digits-lr")
    ift = config.override(base, {"method": "ift", "method.cg_iters": 30})
    assert ift.method == sections.IFT(steps=100, lr=0.5, cg_iters=30)  # steps and lr kept from rmd
    implicit = config.override(base, {"method.solver": "lbfgs", "method": "implicit", "method.solver.iters": 7})
    assert implicit.method == sections.Implicit(solver=sections.LBFGS(iters=7))
    npz = config.override(base, {"data": "npz", "data.path": "my.npz"})
    assert npz.data == sources.Npz(path="my.npz") and npz.run_name == "my"  # another source starts afresh
    whole = config.override(base, {"victim": sections.Converged(solver=sections.LBFGS())})
    assert whole.victim.build(200).solver.maxiter == 100
    assert config.ExperimentConfig.from_dict(implicit.to_dict()) == implicit
    with pytest.raises(ConfigError, match=r"method must be one of rmd, ift, implicit, got 'newton'"):
        config.override(base, {"method": "newton"})


def test_parse_overrides():
    parsed = overrides.parse_overrides(
        [
            "sweep.num_seeds=3",
            "attack.log_lam_box=(-8, log(200))",
            "sweep.settings=learned",
            "method=ift",
            "method.solver=newton-cg",
            "data.x_box=[0, 1]",
            "data.n_test=None",
            "data.path=results/my data.npz",
        ]
    )
    assert parsed == {
        "sweep.num_seeds": 3,
        "attack.log_lam_box": (-8, math.log(200)),
        "sweep.settings": "learned",
        "method": "ift",
        "method.solver": "newton-cg",
        "data.x_box": (0, 1),
        "data.n_test": None,
        "data.path": "results/my data.npz",
    }
    settings = {"sweep.settings": parsed["sweep.settings"]}  # one name for a tuple of names
    assert config.override(presets.preset("digits-lr"), settings).sweep.settings == ("learned",)
    assert overrides.parse_value("__import__('os')") == "__import__('os')"  # never evaluated: text
    with pytest.raises(ConfigError, match=r"--set takes PATH=VALUE \(e.g. sweep.num_seeds=3\), got 'num_seeds'"):
        overrides.parse_overrides(["num_seeds"])
    with pytest.raises(ConfigError, match=r"log\(x\) takes a positive number, got log\(0\)"):
        overrides.parse_overrides(["attack.log_lam_init=log(0)"])


def test_config_hash_ignores_name_and_settings_only():
    a = tiny()
    assert a.hash() == tiny({"sweep.settings": ("learned",)}).hash()
    assert a.hash() == dataclasses.replace(a, name="other").hash()
    assert a.hash() != tiny({"attack.alpha": 0.5}).hash()
    assert a.hash() != tiny({"attack.lam_step": "armijo", "attack.lam_step.min_scale": 0.5}).hash()  # new field


def test_every_field_of_a_preset_is_described():
    text = presets.describe_preset("mnist5k-lr-strong")
    for path in ("data.classes", "method.solver.tol", "attack.xp_step.min_scale", "victim.solver", "sweep.n_val"):
        assert f"  {path} " in text
    assert "attack.xp_step.min_scale" in text and "floor of each line search" in text
    assert "method.steps" not in text  # the implicit method has no steps


# -- the sweep and the store -----------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    config = tiny()
    records = sweep.run_sweep(config, out, progress=False, log=lambda _: None)
    return config, out, records


@pytest.mark.slow
def test_results_file_has_one_line_per_cell(finished):
    config, out, records = finished
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(records) == 4 * 3
    cells = {(r["setting"], r["cell"]) for r in map(json.loads, lines)}
    assert cells == {(s, c) for s in config.sweep.settings for c in range(3)}
    for r in records:
        assert r["config_hash"] == config.hash() and r["hypergrad"] == "rmd" and r["num_seeds"] == 2
        assert r["n_poison"] == 7 * r["cell"] and r["fraction"] == pytest.approx(7 * r["cell"] / 200)
        assert len(r["per_seed"]["error"]) == 2 and r["failures"] == []
        assert r["mean"]["error"] == pytest.approx(np.mean(r["per_seed"]["error"]))
        assert len(r["mean"]["log_lam"]) == 1 and r["wall_time_s"] >= 0
    by = {(r["setting"], r["cell"]): r for r in records}
    assert by[("small", 1)]["mean"]["log_lam"] == [-8.0]
    assert by[("large", 2)]["mean"]["log_lam"] == pytest.approx([math.log(200)])


def test_finished_sweep_does_nothing_and_says_so(finished):
    config, out, records = finished
    before = (out / "results.jsonl").read_bytes()
    said = []
    again = sweep.run_sweep(config, out, resume=True, progress=False, log=said.append)
    assert said == [f"all 12 cells of {out / 'results.jsonl'} are already finished: nothing to do"]
    assert (out / "results.jsonl").read_bytes() == before and again == records


@pytest.mark.slow
def test_resume_after_an_interruption_equals_an_uninterrupted_run(finished, tmp_path):
    config, _, records = finished
    # Interrupt: run only two settings, then drop the last finished cell as if killed before writing it.
    sweep.run_sweep(tiny({"sweep.settings": ("small", "learned")}), tmp_path, progress=False, log=lambda _: None)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    (tmp_path / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(FileExistsError, match=r"already holds 5 of 12 finished cells of this config: pass --resume"):
        sweep.run_sweep(config, tmp_path, progress=False, log=lambda _: None)
    resumed = sweep.run_sweep(config, tmp_path, resume=True, progress=False, log=lambda _: None)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("wall_time_s", "compile_time_s")} for r in rs]
    assert strip(resumed) == strip(records)


def test_results_of_another_config_are_refused(finished):
    _, out, _ = finished
    before = (out / "results.jsonl").read_bytes()
    with pytest.raises(ValueError, match=r"holds results of another config .* attack.alpha: 0.99 there, 0.5 here"):
        sweep.run_sweep(tiny({"attack.alpha": 0.5}), out, progress=False, log=lambda _: None)
    assert (out / "results.jsonl").read_bytes() == before


def test_second_writer_is_refused_by_the_lock(tmp_path):
    config = tiny()
    first = store.ResultsStore(tmp_path, config)
    try:
        with pytest.raises(RuntimeError, match=r"another poison-jax run \(pid \d+\) is writing to"):
            store.ResultsStore(tmp_path, config)
    finally:
        first.release()
    store.ResultsStore(tmp_path, config).release()  # free again once released


def test_damaged_results_line_is_named(tmp_path):
    config = tiny()
    store.ResultsStore(tmp_path, config).release()
    (tmp_path / "results.jsonl").write_text(
        '{"config_hash": "' + config.hash() + '", "setting": "small", "cell": 0}\n{"trunc'
    )
    with pytest.raises(ValueError, match=r"results.jsonl, line 2, is damaged"):
        store.ResultsStore(tmp_path, config)


@pytest.mark.slow
def test_synthetic_maps():
    maps = synthetic.synthetic_maps(grid_size=6, seed=0, lam_grid_size=4)
    noreg, reg = np.asarray(maps["val_error_noreg"]), np.asarray(maps["val_error_reg"])
    assert noreg.shape == reg.shape == (6, 6)
    assert noreg.max() >= reg.max()  # regularisation limits what one point can do
    best = np.asarray(maps["best_log_lam"])
    assert best.min() >= -8.0 and best.max() <= 6.0
    path = np.asarray(maps["path_noreg"])
    assert path.shape == (51, 2) and np.abs(path).max() <= 9.5


@pytest.mark.slow
def test_the_offline_mnist_mlp_preset_learns_a_lambda_per_layer(tmp_path):
    """mnist5k-mlp: the paper's 784x128x32x1 network on the offline MNIST sample, one log λ per layer,
    and its figure of per-layer log λ and ||W_l||² per weight against the fraction."""
    config = presets.preset(
        "mnist5k-mlp",
        {
            "sweep.num_seeds": 2,
            "attack.num_batches": 1,
            "attack.iters_fixed": 1,
            "attack.iters_clean": 2,
            "attack.iters_multi": 2,
            "method.steps": 10,
            "victim.epochs": 2,
            "sweep.settings": ("small", "learned"),
        },
    )
    assert sweep.build_model(config, 784).name == "mlp 784x128x32x1"
    assert "clean" not in presets.preset("mnist5k-mlp").sweep.settings  # as the paper's DNN experiment
    records = sweep.run_sweep(config, tmp_path, progress=False, log=lambda _: None)
    assert len(records) == 4 and not any(r["failures"] for r in records)
    learned = [r for r in records if r["setting"] == "learned"]
    for r in records:
        assert len(r["mean"]["log_lam"]) == 3 and len(r["mean"]["sq_norm_per_weight"]) == 3
    lams = np.asarray(learned[-1]["mean"]["log_lam"])
    assert np.all(lams != config.attack.log_lam_init) and len(set(lams.round(6).tolist())) == 3  # each layer its own λ
    from poison_jax.face import plots

    fig = plots.lambda_norm_figure(records)
    ax_lam, ax_norm = fig.axes
    assert [line.get_label() for line in ax_lam.get_lines()][3:] == [f"λ learned, layer {k}" for k in (1, 2, 3)]
    assert len(ax_norm.get_lines()) == 6 and ax_norm.get_ylabel() == "||w||² per weight"
    plots.plt.close(fig)
