"""Floor 2: configs, presets, the sweep runner and the results store."""

import json
import math

import numpy as np
import pytest

from poison_jax.experiments import config, presets, store, sweep, synthetic
from poison_jax.experiments.config import ConfigError

TINY = dict(
    num_seeds=2,
    iters_fixed=3,
    iters_clean=3,
    iters_multi=3,
    num_batches=2,
    eval_epochs=5,
    inner_steps=30,
    cv_log_lam_grid=(-8.0, 1.0, 4),
    cv_folds=2,
)


def tiny(**overrides):
    return presets.preset("digits-lr", **{**TINY, **overrides})


# -- configs ---------------------------------------------------------------------------------


def test_presets_hold_the_papers_settings():
    mnist = presets.preset("mnist-lr")
    assert (mnist.n_train, mnist.n_val, mnist.inner_steps, mnist.inner_lr) == (512, 171, 150, 0.1)
    assert (mnist.iters_fixed, mnist.iters_clean, mnist.iters_multi, mnist.alpha, mnist.beta) == (
        100,
        50,
        100,
        0.99,
        0.8,
    )
    assert mnist.log_lam_box == (-8.0, math.log(200)) and mnist.eval_epochs == 200 and mnist.eval_batch == 64
    assert [round(100 * f, 1) for f in mnist.fractions] == [0.0, 3.3, 6.6, 10.0, 13.3, 16.6]
    mlp = presets.preset("imagenet-mlp")
    assert (mlp.model, mlp.inner_steps, mlp.iters_multi, mlp.beta, mlp.eval_epochs) == ("mlp", 600, 150, 0.03, 4000)
    assert "clean" not in mlp.settings  # the paper omits CV for the DNN
    assert presets.preset("mnist5k-lr").source == "mnist5k"
    assert set(presets.PRESETS) == {
        "mnist-lr",
        "mnist5k-lr",
        "mnist5k-lr-strong",
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
        (dict(n_train=-5), r"'n_train' = -5 is not allowed: a positive integer"),
        (dict(num_seeds=0), r"'num_seeds' = 0 is not allowed: a positive integer"),
        (
            dict(poison_batch=100, num_batches=3),
            r"'num_batches' = 3 is not allowed: poison_batch \* num_batches = 300 "
            r"must not exceed n_train \(200\)",
        ),
        (dict(x_box=(1.0, 0.0)), r"'x_box' = \(1.0, 0.0\) is not allowed: low < high"),
        (dict(log_lam_box=(2.0, 2.0)), r"'log_lam_box' = \(2.0, 2.0\) is not allowed: low < high"),
        (dict(alpha=0.0), r"'alpha' = 0.0 is not allowed: a finite number > 0"),
        (dict(inner_lr=-0.1), r"'inner_lr' = -0.1 is not allowed: a finite number > 0"),
        (dict(eval_lr=float("nan")), r"'eval_lr' = nan is not allowed"),
        (dict(model="cnn"), r"'model' = 'cnn' is not allowed: one of lr, mlp"),
        (dict(hypergrad="fmd"), r"'hypergrad' = 'fmd' is not allowed: one of rmd, ift"),
        (dict(settings=("learned", "best")), r"'settings' = \('learned', 'best'\) is not allowed"),
    ],
)
def test_config_validation_names_field_and_value(overrides, message):
    with pytest.raises(ConfigError, match=message):
        presets.preset("digits-lr", **overrides)


def test_unknown_preset_and_field():
    with pytest.raises(ConfigError, match=r"unknown preset 'mnist-dnn': choose one of mnist-lr, "):
        presets.preset("mnist-dnn")
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) 'learning_rate': the fields are "):
        presets.preset("digits-lr", learning_rate=0.1)


def test_parse_overrides():
    parsed = config.parse_overrides(
        [
            "num_seeds=3",
            "log_lam_box=(-8, log(200))",
            "settings=learned",
            "hypergrad=ift",
            "x_box=[0, 1]",
            "n_test=None",
        ]
    )
    assert parsed == {
        "num_seeds": 3,
        "log_lam_box": (-8, math.log(200)),
        "settings": ("learned",),
        "hypergrad": "ift",
        "x_box": (0, 1),
        "n_test": None,
    }
    with pytest.raises(ConfigError, match=r"--set takes field=value, got 'num_seeds'"):
        config.parse_overrides(["num_seeds"])


def test_config_hash_ignores_name_and_settings_only():
    a = tiny()
    assert a.hash() == tiny(settings=("learned",)).hash()
    assert a.hash() != tiny(alpha=0.5).hash()


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
    assert cells == {(s, c) for s in config.SETTINGS for c in range(3)}
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
    sweep.run_sweep(tiny(settings=("small", "learned")), tmp_path, progress=False, log=lambda _: None)
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
    with pytest.raises(ValueError, match=r"holds results of another config .* alpha: 0.99 there, 0.5 here"):
        sweep.run_sweep(tiny(alpha=0.5), out, progress=False, log=lambda _: None)
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
        num_seeds=2,
        num_batches=1,
        iters_fixed=1,
        iters_clean=2,
        iters_multi=2,
        inner_steps=10,
        eval_epochs=2,
        settings=("small", "learned"),
    )
    assert sweep.build_model(config, 784).name == "mlp 784x128x32x1"
    assert "clean" not in presets.preset("mnist5k-mlp").settings  # as the paper's DNN experiment
    records = sweep.run_sweep(config, tmp_path, progress=False, log=lambda _: None)
    assert len(records) == 4 and not any(r["failures"] for r in records)
    learned = [r for r in records if r["setting"] == "learned"]
    for r in records:
        assert len(r["mean"]["log_lam"]) == 3 and len(r["mean"]["sq_norm_per_weight"]) == 3
    lams = np.asarray(learned[-1]["mean"]["log_lam"])
    assert np.all(lams != config.log_lam_init) and len(set(lams.round(6).tolist())) == 3  # each layer its own λ
    from poison_jax.face import plots

    fig = plots.lambda_norm_figure(records)
    ax_lam, ax_norm = fig.axes
    assert [line.get_label() for line in ax_lam.get_lines()][3:] == [f"λ learned, layer {k}" for k in (1, 2, 3)]
    assert len(ax_norm.get_lines()) == 6 and ax_norm.get_ylabel() == "||w||² per weight"
    plots.plt.close(fig)
