"""The bad-input catalogue: every kind of bad input across the API, the config and the command line
gets an error that names the value and what is allowed, and leaves finished results untouched."""

import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from poison_jax import engine
from poison_jax.engine import RMD
from poison_jax.experiments import presets, store
from poison_jax.poisoning import attack, data, models


def _losses():
    x = jnp.ones((4, 2))
    inner = lambda w, th: jnp.sum((x @ w) ** 2) + jnp.exp(th) * jnp.sum(w**2)
    outer = lambda w, th: jnp.sum(x @ w)
    return inner, outer


def _npz(tmp_path, name, drop=(), **arrays):
    """A features file with the documented keys, some replaced by ``arrays`` or left out (``drop``)."""
    x = np.random.default_rng(0).random((20, 3))
    y = (np.arange(20) % 2).astype(float)
    contents = {**dict(X_train=x, y_train=y, X_test=x, y_test=y), **arrays}
    path = tmp_path / name
    np.savez(path, **{k: v for k, v in contents.items() if k not in drop})
    return str(path)


def _nan_features():
    x = np.random.default_rng(0).random((20, 3))
    x[2, 1] = np.nan
    return x


API_CASES = {
    # bilevel engine
    "steps zero": (
        lambda t: engine.hypergrad(engine.RMD(steps=0, lr=0.1), *_losses(), jnp.zeros(2), jnp.asarray(0.0)),
        ValueError,
        "steps must be a positive integer, got 0",
    ),
    "lr nan": (
        lambda t: engine.GradientDescent(steps=3, lr=float("nan")),
        ValueError,
        "lr must be a finite number > 0, got nan",
    ),
    "cg_iters negative": (
        lambda t: engine.IFT(steps=3, lr=0.1, cg_iters=-2),
        ValueError,
        "cg_iters must be a positive integer, got -2",
    ),
    "non-scalar loss": (
        lambda t: engine.hypergrad(engine.RMD(steps=3, lr=0.1), _losses()[0], lambda w, th: w, jnp.zeros(2), 0.0),
        ValueError,
        "outer_loss must return a scalar (shape ()), got (2,)",
    ),
    "integer weights (dtype)": (
        lambda t: engine.hypergrad(engine.RMD(steps=3, lr=0.1), *_losses(), jnp.zeros(2, jnp.int32), jnp.asarray(0.0)),
        TypeError,
        "w0 must have a floating dtype, got int32",
    ),
    "weights of the wrong shape": (
        lambda t: engine.hypergrad(engine.RMD(steps=3, lr=0.1), *_losses(), jnp.zeros(3), jnp.asarray(0.0)),
        ValueError,
        "inner_loss(w, theta) failed for w with structure",
    ),
    # data
    "unknown source": (
        lambda t: data.load_dataset("cifar"),
        ValueError,
        "Unknown data source 'cifar'; allowed: synthetic, digits",
    ),
    "unknown class": (
        lambda t: data.load_dataset("digits", classes=(0, 11)),
        ValueError,
        "class 11 is outside the range 0..9",
    ),
    "equal classes": (
        lambda t: data.load_dataset("digits", classes=(3, 3)),
        ValueError,
        "classes must be two different classes, got (3, 3)",
    ),
    "more points than the pool": (
        lambda t: data.sample_splits(data.load_dataset("digits"), [0], 300, 100),
        ValueError,
        "n_train=300 + n_val=100 = 400 points but the pool of 'digits 0 v 8' holds 282",
    ),
    "NaN features": (
        lambda t: data.load_dataset("npz", path=_npz(t, "nan.npz", X_train=_nan_features())),
        ValueError,
        "1 non-finite feature values (NaN or inf) in the pool set, the first at row 2, column 1",
    ),
    "labels neither classes nor targets in [0, 1]": (
        lambda t: data.load_dataset("npz", path=_npz(t, "lab.npz", y_train=(np.arange(20) % 3) * 0.75)),
        ValueError,
        "lab: pool targets must be finite and in [0, 1] (labels that are not integers 0..K-1 are regression targets)",
    ),
    "npz missing keys": (
        lambda t: data.load_dataset("npz", path=_npz(t, "miss.npz", drop=("X_test",))),
        ValueError,
        "lacks the keys ['X_test']",
    ),
    "pickled npz": (
        lambda t: data.load_dataset("npz", path=_npz(t, "obj.npz", X_train=np.array([{"a": 1}] * 20))),
        ValueError,
        "object/pickled arrays are not allowed",
    ),
    "corrupt npz": (
        lambda t: (
            Path(t / "corrupt.npz").write_bytes(b"PK\x03\x04garbage" * 10),
            data.load_dataset("npz", path=str(t / "corrupt.npz")),
        ),
        ValueError,
        "is not a readable .npz archive",
    ),
    "empty data": (
        lambda t: data.load_dataset("npz", path=_npz(t, "empty.npz", X_train=np.zeros((0, 3)), y_train=np.zeros(0))),
        ValueError,
        "the pool set is empty",
    ),
    "labels and features disagree": (
        lambda t: data.load_dataset("npz", path=_npz(t, "shape.npz", y_train=np.zeros(5))),
        ValueError,
        "pool labels must have shape (20,) to match the features (20, 3), got (5,)",
    ),
    # models and attack
    "model size zero": (lambda t: models.mlp(0), ValueError, "d must be a positive integer, got 0"),
    "attack box inverted": (
        lambda t: attack.AttackSettings(
            models.logistic_regression(2), RMD(steps=3, lr=0.1), 0.5, 0.5, x_box=(1.0, 0.0), lam_box=(-8.0, 1.0)
        ),
        ValueError,
        "x_box must be a pair (low, high) of finite numbers with low < high, got (1.0, 0.0)",
    ),
    # config
    "unknown preset": (lambda t: presets.preset("cifar-lr"), ValueError, "unknown preset 'cifar-lr': choose one of"),
    "unknown field": (
        lambda t: presets.preset("digits-lr", {"victim.epoch": 3}),
        ValueError,
        "victim 'sgd' has no field 'epoch' (its fields: lr, epochs, batch)",
    ),
    "negative count": (
        lambda t: presets.preset("digits-lr", {"sweep.n_val": -1}),
        ValueError,
        "sweep.n_val must be a positive integer, got -1",
    ),
    "fraction above 1": (
        lambda t: presets.preset("digits-lr", {"attack.poison_batch": 60, "attack.num_batches": 4}),
        ValueError,
        "attack.poison_batch * attack.num_batches = 240 does not exceed sweep.n_train (200)",
    ),
    "inverted λ bounds": (
        lambda t: presets.preset("digits-lr", {"attack.log_lam_box": (3.0, -8.0)}),
        ValueError,
        "attack.log_lam_box must be a pair (low, high) of finite numbers with low < high, got (3.0, -8.0)",
    ),
    "non-positive step": (
        lambda t: presets.preset("digits-lr", {"attack.beta": -0.1}),
        ValueError,
        "attack.beta must be a finite number > 0, got -0.1",
    ),
    # output folder
    "unwritable output folder": (
        lambda t: (
            Path(t / "a_file").write_text("x"),
            store.ResultsStore(t / "a_file" / "out", presets.preset("digits-lr")),
        ),
        PermissionError,
        "cannot create the output folder",
    ),
}


@pytest.mark.parametrize("name", sorted(API_CASES))
def test_bad_input_is_refused_clearly(name, tmp_path):
    call, error, message = API_CASES[name]
    with pytest.raises(error) as info:
        call(tmp_path)
    assert message in str(info.value)


# -- the command line, against a folder of finished results that must stay intact ----------

TINY = [
    arg
    for field in (
        "sweep.num_seeds=1",
        "attack.iters_fixed=2",
        "attack.iters_clean=2",
        "attack.iters_multi=2",
        "attack.num_batches=1",
        "victim.epochs=2",
        "method.steps=10",
        "sweep.cv_log_lam_grid=(-8, 1, 2)",
        "sweep.cv_folds=2",
        "sweep.settings=small",
    )
    for arg in ("--set", field)
]


def _cli(*args):
    script = Path(sys.executable).parent / "poison-jax"
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def finished_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    done = _cli("run", "--preset", "digits-lr", *TINY, "--out", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr
    return out


CLI_CASES = {
    "results of another config": (
        ["run", "--preset", "digits-lr", *TINY, "--set", "attack.alpha=0.5"],
        "holds results of another config",
    ),
    "unknown preset": (["run", "--preset", "nope"], "invalid choice: 'nope'"),
    "bad --set syntax": (
        ["run", "--preset", "digits-lr", "--set", "num_seeds"],
        "--set takes PATH=VALUE (e.g. sweep.num_seeds=3), got 'num_seeds'",
    ),
    "bad --set value": (
        ["run", "--preset", "digits-lr", *TINY, "--set", "method=fmd"],
        "method must be one of rmd, ift, implicit, got 'fmd'",
    ),
    "devices zero": (["run", "--preset", "digits-lr", "--devices", "0"], "--devices must be a positive integer, got 0"),
    "plot of a damaged file": (["plot"], "is not valid JSON"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_bad_command_lines_leave_results_intact(name, finished_folder, tmp_path):
    args, message = CLI_CASES[name]
    before = (finished_folder / "results.jsonl").read_bytes()
    if name == "plot of a damaged file":
        damaged = tmp_path / "results.jsonl"
        damaged.write_bytes(before + b'{"setting": "sm')
        args = ["plot", str(damaged)]
    elif args[0] == "run":
        args = [*args, "--out", str(finished_folder)]
    done = _cli(*args)
    assert done.returncode == 2, done.stdout
    assert message in done.stderr and "Traceback" not in done.stderr
    assert (finished_folder / "results.jsonl").read_bytes() == before
