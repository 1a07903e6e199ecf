"""A researcher's own model and data, as the guide (docs/pages/own-model-and-data.md) uses them:
a flax module of the test's own, arrays in memory, the Python entry with resume, the CLI with an
npz from another preset, and the mistakes a newcomer makes refused with messages naming the fix."""

from __future__ import annotations

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from poison_jax.engine import RMD
from poison_jax.experiments import config, presets, sources, store, sweep
from poison_jax.experiments.checked import ConfigError
from poison_jax.face import cli
from poison_jax.poisoning import _progress, attack, data, losses, models
from tests.tiny import tiny, tiny_sets


class TwoLayer(nn.Module):
    """The guide's network: ``outputs`` scores per example (1 squeezed away when ``squeeze``)."""

    outputs: int = 1
    squeeze: bool = True

    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Dense(8, name="hidden")(x))
        out = nn.Dense(self.outputs, name="out")(h)
        return out[:, 0] if self.squeeze and self.outputs == 1 else out


class WithBatchNorm(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(nn.BatchNorm(use_running_average=False)(x))[:, 0]


def tabular(n=260, d=6, seed=0):
    """Features in [0, 1] and binary labels, as a user's own table."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, d))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0.75).astype(np.int64)
    return x, y


# -- models.from_flax ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module, num_classes",
    [(TwoLayer(), 2), (TwoLayer(squeeze=False), 2), (TwoLayer(outputs=2), 2), (TwoLayer(outputs=4), 4)],
    ids=["(n,)", "(n, 1)", "(n, 2)", "(n, 4)"],
)
def test_from_flax_accepts_the_allowed_output_shapes(module, num_classes):
    x, _ = tabular(10)
    model = models.from_flax(module, x[:3])
    assert model.num_classes == num_classes and model.layers == ("hidden", "out")
    params = model.init(jax.random.PRNGKey(0))
    scores = model.apply(params, jnp.asarray(x, jnp.float32))
    assert scores.shape == ((10,) if num_classes == 2 else (10, num_classes))
    assert models.penalty(model, params, jnp.zeros(2)).shape == ()
    # a fresh random initialisation for every key, as the attack re-initialises each hyperiteration
    other = model.init(jax.random.PRNGKey(1))
    assert not np.allclose(params["hidden"]["kernel"], other["hidden"]["kernel"])


def test_two_logits_become_one_score_with_the_softmax_loss():
    x, y = tabular(12)
    model = models.from_flax(TwoLayer(outputs=2), x[:2])
    params = model.init(jax.random.PRNGKey(0))
    logits = TwoLayer(outputs=2).apply({"params": params}, jnp.asarray(x, jnp.float32))
    softmax = losses.Logistic()(logits, jnp.asarray(y, jnp.float32))  # softmax cross-entropy on (n, 2)
    one_score = model.loss(model.apply(params, jnp.asarray(x, jnp.float32)), jnp.asarray(y, jnp.float32))
    np.testing.assert_allclose(one_score, softmax, rtol=1e-5, atol=1e-6)


class Wrong(nn.Module):
    shape: str

    @nn.compact
    def __call__(self, x):
        out = nn.Dense(3)(x)
        return {"(n, 3, 1)": out[..., None], "(1,)": out[:1, 0], "()": out.sum()}[self.shape]


@pytest.mark.parametrize("shape, got", [("(n, 3, 1)", "(5, 3, 1)"), ("(1,)", "(1,)"), ("()", "()")])
def test_from_flax_refuses_other_output_shapes_naming_them(shape, got):
    x, _ = tabular(5)
    message = f"Wrong returns shape {got} for example_x of shape (5, 6); allowed: (n,) or (n, 1): one score"
    with pytest.raises(ValueError, match=rf"^{message.replace('(', '[(]').replace(')', '[)]')}"):
        models.from_flax(Wrong(shape), x)


def test_from_flax_layers_override_and_refusals():
    x, _ = tabular(4)
    assert models.from_flax(TwoLayer(), x, layers=["out"]).num_lams == 1
    with pytest.raises(
        ValueError,
        match=r"layers \['nope'\] are not modules with a kernel in TwoLayer's parameters; "
        r"allowed: hidden, out",
    ):
        models.from_flax(TwoLayer(), x, layers=["nope"])
    with pytest.raises(ValueError, match=r"variable collections \['batch_stats'\] besides 'params'"):
        models.from_flax(WithBatchNorm(), x)
    with pytest.raises(TypeError, match=r"from_flax takes a flax.linen.Module or a flax.nnx.Module, got function"):
        models.from_flax(lambda p, x: x, x)
    with pytest.raises(ValueError, match=r"has no multiclass form here: TwoLayer returns 4 scores"):
        models.from_flax(TwoLayer(outputs=4), x, loss=losses.SmoothedHinge())


class NnxNet(nnx.Module):
    def __init__(self, d, rngs):
        self.first = nnx.Linear(d, 5, rngs=rngs)
        self.last = nnx.Linear(5, 1, rngs=rngs)

    def __call__(self, x):
        return self.last(jax.nn.tanh(self.first(x)))


def test_from_flax_takes_an_nnx_module():
    x, y = tabular(20)
    net = NnxNet(6, nnx.Rngs(0))
    model = models.from_flax(net, x[:2])
    assert model.layers == ("first", "last") and model.num_classes == 2
    params = model.init(jax.random.PRNGKey(3))  # the module's own parameters, whatever the key
    xs = jnp.asarray(x, jnp.float32)
    np.testing.assert_allclose(model.apply(params, xs), net(xs)[:, 0], rtol=1e-6)
    grad = jax.jit(jax.grad(lambda p: jnp.mean(model.loss(model.apply(p, xs), jnp.asarray(y, jnp.float32)))))(params)
    assert grad["first"]["kernel"].shape == (6, 5) and np.isfinite(grad["first"]["kernel"]).all()


def test_a_hand_built_model_with_a_wrong_shape_is_refused_before_any_nan():
    """The issue's failure: logits (n, 1) broadcast against labels (n,) into meaningless losses."""
    module = TwoLayer(squeeze=False)
    x, _ = tabular(40)
    params0 = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 6)))["params"]
    bad = models.Model(
        "my (n, 1) net", lambda k: params0, lambda p, x: module.apply({"params": p}, x), ("hidden", "out"), True
    )
    ds = data.from_arrays(x[:30], (x[:30, 0] > 0.5).astype(int), x[30:], (x[30:, 0] > 0.5).astype(int))
    splits = data.sample_splits(ds, [0], n_train=20, n_val=10)
    settings = attack.AttackSettings(bad, RMD(steps=5, lr=0.1), alpha=0.5, beta=0.5, x_box=(0.0, 1.0), lam_box=(-8, 5))
    with pytest.raises(
        ValueError,
        match=r"my \(n, 1\) net: apply\(params, x\) with x of shape \(20, 6\) returns shape "
        r"\(20, 1\), but the model must return \(20,\), one score per example",
    ):
        attack.init_attack(settings, jax.random.split(jax.random.PRNGKey(0), 1), splits, 2, 0.0)
    ten = data.from_arrays(x[:30], np.arange(30) % 3, x[30:], np.arange(10) % 3)  # three classes, one score
    lr_settings = dataclasses.replace(settings, model=models.logistic_regression(6))
    with pytest.raises(
        ValueError,
        match=r"classifies 2 classes \(labels 0..1\), but splits.y_train holds the labels "
        r"\{0, 1, 2\}: build the model with num_classes=3",
    ):
        attack.init_attack(
            lr_settings,
            jax.random.split(jax.random.PRNGKey(0), 1),
            data.sample_splits(ten, [0], n_train=20, n_val=10),
            2,
            0.0,
        )
    with pytest.raises(TypeError, match=r"got TwoLayer: wrap a flax module with poison_jax.poisoning.models.from_flax"):
        attack.AttackSettings(module, RMD(steps=5, lr=0.1), alpha=0.5, beta=0.5, x_box=(0.0, 1.0), lam_box=(-8, 5))


# -- the poison box ---------------------------------------------------------------------------


def test_data_outside_the_box_are_refused_naming_the_features():
    x, y = tabular(40)
    x[:, 2] *= 10.0  # one feature in [0, 10]
    with pytest.raises(
        ValueError,
        match=r"the data 'mine' lie outside the poison box x_box = \(0.0, 1.0\): 1 of 6 "
        r"feature\(s\), feature 2 in \[0.\d+, 9.\d+\]",
    ):
        attack.check_box(x, (0.0, 1.0), "the data 'mine'")
    attack.check_box(x, (0.0, 10.0))  # a box holding the data passes


def test_poison_points_start_inside_the_box():
    x, y = tabular(60)
    ds = data.from_arrays(4.0 * x[:40] - 2.0, y[:40], x[40:], y[40:])  # features in [-2, 2]
    splits = data.sample_splits(ds, [0, 1], n_train=20, n_val=20)
    model = models.logistic_regression(6)
    settings = attack.AttackSettings(
        model, RMD(steps=5, lr=0.1), alpha=0.5, beta=0.5, x_box=(-0.5, 0.5), lam_box=(-8, 5)
    )
    state = attack.init_attack(settings, jax.random.split(jax.random.PRNGKey(0), 2), splits, 10, 0.0)
    assert float(state.xp.min()) >= -0.5 and float(state.xp.max()) <= 0.5
    assert float(jnp.abs(state.xp).max()) == 0.5  # some clones were clipped: they lay outside


# -- run_attack's progress --------------------------------------------------------------------


def test_run_attack_reports_every_hyperiteration_without_changing_results_or_recompiling(trace_counter, monkeypatch):
    x, y = tabular(80)
    splits = data.sample_splits(data.from_arrays(x[:60], y[:60], x[60:], y[60:]), [0, 1], n_train=30, n_val=20)
    lr = models.logistic_regression(6)
    counting_apply = trace_counter(lr.apply)
    model = models.Model(lr.name, lr.init, counting_apply, lr.layers, lr.random_init)
    settings = attack.AttackSettings(model, RMD(steps=10, lr=0.5), alpha=0.5, beta=0.5, x_box=(0, 1), lam_box=(-8, 5))
    state = attack.init_attack(settings, jax.random.split(jax.random.PRNGKey(0), 2), splits, 4, 0.0)
    state = attack.set_poison_count(state, 4, 4)
    silent, _ = attack.run_attack(settings, splits, state, num_iters=5)
    first, second, third = [], [], []
    reported, _ = attack.run_attack(settings, splits, state, num_iters=5, progress=first.append)
    traced = counting_apply.count
    again, _ = attack.run_attack(settings, splits, state, num_iters=5, progress=second.append)
    assert first == [1, 2, 3, 4, 5]  # the first call of these settings reports every hyperiteration
    # millisecond steps are reported every few (about 20 reports a second), the last always
    assert second[-1] == 5 and second == sorted(set(second)) and set(second) <= {1, 2, 3, 4, 5}
    monkeypatch.setattr(_progress, "REPORT_SECONDS", 0.0)  # as if every step were slow
    attack.run_attack(settings, splits, state, num_iters=5, progress=third.append)
    assert third == [1, 2, 3, 4, 5]
    assert counting_apply.count == traced  # a new progress function or interval is not a new program
    np.testing.assert_array_equal(reported.xp, silent.xp)
    np.testing.assert_array_equal(again.log_lam, silent.log_lam)

    def stop(done):
        if done == 2:
            raise KeyboardInterrupt  # a notebook's stop button

    with pytest.raises(KeyboardInterrupt):
        attack.run_attack(settings, splits, state, num_iters=5, progress=stop)


# -- the Python entry -------------------------------------------------------------------------

#: The tiny sweep on the guide's 200-row pool: smaller splits and batches of 4 poison points.
SMALL_SPLITS = {"sweep.n_train": 80, "sweep.n_val": 40, "attack.poison_batch": 4}


@pytest.fixture(scope="module")
def own():
    """The guide's run: a flax module of our own on arrays of our own, every Λ setting."""
    x, y = tabular()
    dataset = data.from_arrays(x[:200], y[:200], x[200:], y[200:], name="my table")
    model = models.from_flax(TwoLayer(), x[:4])
    return dataset, model, tiny(SMALL_SPLITS)


def test_run_sweep_with_own_model_and_arrays_resumes_to_the_same_records(own, tmp_path):
    dataset, model, cfg = own
    progress = []
    records = sweep.run_sweep(
        cfg,
        tmp_path / "full",
        dataset=dataset,
        model=model,
        progress=False,
        callback=lambda d, t: progress.append((d, t)),
    )
    assert [(r["setting"], r["cell"]) for r in records] == [(s, c) for s in config.SETTINGS for c in range(3)]
    assert {r["data"] for r in records} == {"my table"} and records[0]["model"] == model.name
    assert all(not r["failures"] for r in records) and all(0 <= r["mean"]["error"] <= 1 for r in records)
    total = progress[-1][1]
    assert progress[-1][0] == total == 2 + 4 * 2 * 2  # T_λ + 2 attacked cells of 2 hyperiterations a setting
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    saved = json.loads((tmp_path / "full" / "config.json").read_text())
    assert saved["config"]["data"]["kind"] == "arrays" and saved["config"]["data"]["x_box"] is None
    assert "my table, 200+60 rows, sha256" in saved["identity"]["data"] and "TwoLayer" in saved["identity"]["model"]

    # Interrupted after its 7th hyperiteration, then resumed: the same records.
    class Stop(Exception):
        pass

    def stop_at_seven(done, total):
        if done >= 7:
            raise Stop

    with pytest.raises(Stop):
        sweep.run_sweep(cfg, tmp_path / "cut", dataset=dataset, model=model, progress=False, callback=stop_at_seven)
    finished = (tmp_path / "cut" / "results.jsonl").read_text().splitlines()
    assert 0 < len(finished) < len(records)
    resumed = sweep.run_sweep(cfg, tmp_path / "cut", dataset=dataset, model=model, resume=True, progress=False)
    for a, b in zip(records, resumed, strict=True):
        assert a["per_seed"]["error"] == b["per_seed"]["error"] and a["per_seed"]["log_lam"] == b["per_seed"]["log_lam"]

    # The same folder with other data is refused, naming what differs.
    other = data.from_arrays(
        dataset.x_pool[::-1], dataset.y_pool[::-1], dataset.x_test, dataset.y_test, name="my table"
    )
    with pytest.raises(ValueError, match=r"holds results of another config .* the data: 'my table, 200\+60 rows"):
        sweep.run_sweep(cfg, tmp_path / "full", dataset=other, model=model, progress=False)


def test_attack_state_saves_and_loads(own, tmp_path):
    dataset, model, cfg = own
    run = sweep.Sweep(config.override(cfg, {"data": "arrays"}), dataset=dataset, model=model)
    state = run.fresh_state(1.0)
    path = tmp_path / "attack.npz"
    store.save_attack_state(path, state)
    loaded = store.load_attack_state(path, state)
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(loaded), strict=True):
        np.testing.assert_array_equal(a, b)
    smaller = dataclass_like = run.fresh_state(1.0)._replace(xp=state.xp[:, :2])
    with pytest.raises(ValueError, match=r"'xp' is float32\[2, 8, 6\], the template's float32\[2, 2, 6\]"):
        store.load_attack_state(path, dataclass_like)
    del smaller
    with pytest.raises(FileNotFoundError, match="no saved attack state"):
        store.load_attack_state(tmp_path / "none.npz", state)


def test_mismatched_model_and_data_are_refused_naming_the_fix(own, tmp_path):
    dataset, model, cfg = own
    four = models.from_flax(TwoLayer(outputs=4), dataset.x_pool[:2])
    with pytest.raises(
        ConfigError,
        match=r"the data 'my table' have 2 classes but the model .* gives 4 scores "
        r"per example: it must give one score \(or two logits\)",
    ):
        sweep.run_sweep(cfg, tmp_path, dataset=dataset, model=four, progress=False)
    targets = data.from_arrays(dataset.x_pool, dataset.x_pool[:, 0], dataset.x_test, dataset.x_test[:, 0], name="reg")
    with pytest.raises(
        ConfigError,
        match=r"the data 'reg' are a regression .* the config's loss is 'logistic': set loss=squared",
    ):
        sweep.run_sweep(cfg, tmp_path, dataset=targets, progress=False)
    with pytest.raises(
        ConfigError,
        match=r"sweep.n_train = 200 and sweep.n_val = 70 ask for 270 points, but the pool of "
        r"'my table' holds 200",
    ):
        sweep.run_sweep(presets.preset("digits-lr"), tmp_path, dataset=dataset, progress=False)
    with pytest.raises(TypeError, match=r"dataset must be a poison_jax.poisoning.data.Dataset or a tuple"):
        sweep.run_sweep(cfg, tmp_path, dataset={"x": 1}, progress=False)
    assert not (tmp_path / "results.jsonl").exists()


# -- the CLI with an npz, from another preset ---------------------------------------------------


def test_cli_runs_a_users_npz_from_another_preset(tmp_path, monkeypatch, capsys):
    x, y = tabular(300)
    np.savez(tmp_path / "mine.npz", X_train=x[:240], y_train=y[:240], X_test=x[240:], y_test=y[240:])
    monkeypatch.chdir(tmp_path)
    sets = tiny_sets(SMALL_SPLITS)
    argv = ["run", "--preset", "mnist5k-lr", "--data", "mine.npz", *sets, "--set", "sweep.settings=small,learned"]
    assert cli.main([*argv, "--no-progress"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "mine (mnist5k-lr settings): 2 seed(s)" in out
    records = [json.loads(line) for line in (tmp_path / "results" / "mine" / "results.jsonl").read_text().splitlines()]
    assert (
        len(records) == 6
        and {r["data"] for r in records} == {"mine"}
        and {r["preset"] for r in records} == {"mnist5k-lr"}
    )
    saved = json.loads((tmp_path / "results" / "mine" / "config.json").read_text())["config"]
    assert saved["data"]["kind"] == "npz" and saved["data"]["x_box"] is None  # the preset's data fields reset
    assert "classes" not in saved["data"] and "n_test" not in saved["data"]
    assert (tmp_path / "results" / "mine" / "figures" / "error_vs_fraction.png").exists()

    # --set data=npz on a preset of another source works the same way (the preset's data fields reset)
    config_via_set = presets.preset("digits-lr", {"data": "npz", "data.path": "mine.npz"})
    assert config_via_set.data == sources.Npz(path="mine.npz") and config_via_set.num_classes == 2
    assert config_via_set.run_name == "mine"

    # A box the data lie outside of is refused, naming the feature and the fix.
    x[:, 3] *= 10.0
    np.savez(tmp_path / "wide.npz", X_train=x[:240], y_train=y[:240], X_test=x[240:], y_test=y[240:])
    assert cli.main(["run", "--data", "wide.npz", "--set", "data.x_box=(0, 1)", *sets]) == 2
    err = capsys.readouterr().err
    assert "lie outside the poison box x_box = (0.0, 1.0): 1 of 6 feature(s), feature 3 in" in err
    assert "outside_box='clip'" in err and "Traceback" not in err
    assert not (tmp_path / "results" / "wide").exists()
