"""The library a JAX engineer expects: data as traced arguments (one compilation for many data sets),
one ``Result`` for every hypergradient, and ``import poison_jax`` exports."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from poison_jax import engine
from poison_jax.engine import IFT, RMD, Implicit, Warm
from poison_jax.poisoning import attack, data, models


def _bce(logits, y):
    return jnp.mean(jax.nn.softplus(logits) - y * logits)


def inner_loss(w, theta, x, y):
    """Logistic regression whose first rows are the poison points ``theta["xp"]``; data as arguments."""
    features = x.at[: theta["xp"].shape[0]].set(theta["xp"])
    return _bce(features @ w["w"] + w["b"], y) + jnp.exp(theta["log_lam"]) / 2 * jnp.sum(w["w"] ** 2)


def outer_loss(w, theta, x, y):
    return _bce(x @ w["w"] + w["b"], y)


def _data_set(seed, n=40, d=5, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x @ rng.normal(size=d) > 0).astype(float)
    return jnp.asarray(x, dtype), jnp.asarray(y, dtype)


def _theta(x, n_p=4, dtype=jnp.float32):
    return {"xp": x[:n_p] + 0.1, "log_lam": jnp.asarray(-1.0, dtype)}


def _w0(d=5, dtype=jnp.float32):
    return {"w": jnp.zeros(d, dtype), "b": jnp.zeros((), dtype)}


METHODS = {
    "rmd": RMD(steps=30, lr=0.5),
    "rmd_ckpt": RMD(steps=30, lr=0.5, checkpoint=True),
    "ift": IFT(steps=30, lr=0.5, cg_iters=20),
    "implicit_newton": Implicit(engine.NewtonCG(tol=1e-5, maxiter=50)),
    "implicit_lbfgs": Implicit(engine.LBFGS(tol=1e-5, maxiter=200)),
}


def _calls(inner, outer):
    """Every method through the one entry point, cold and warm, as ``f(w0, theta, x, y)``."""
    calls = {}
    for name, method in METHODS.items():
        calls[f"hypergrad[{name}]"] = (lambda m: lambda w0, th, x, y: engine.hypergrad(m, inner, outer, w0, th, x, y))(
            method
        )
        calls[f"warm[{name}]"] = (
            lambda m: lambda w0, th, x, y: engine.hypergrad(m, inner, outer, w0, th, x, y, warm=Warm(w0, w0))
        )(method)
    return calls


def test_a_loop_over_data_sets_compiles_once(trace_counter):
    inner, outer = trace_counter(inner_loss), trace_counter(outer_loss)
    calls = _calls(inner, outer)
    x, y = _data_set(0)
    for call in calls.values():
        jax.block_until_ready(call(_w0(), _theta(x), x, y))  # compiles
    counts = (inner.count, outer.count)
    for seed in (1, 2, 3):  # new data sets of the same shapes
        x, y = _data_set(seed)
        for call in calls.values():
            jax.block_until_ready(call(_w0(), _theta(x), x, y))
    assert (inner.count, outer.count) == counts


@pytest.mark.parametrize("name", sorted(METHODS))
def test_data_as_arguments_equals_data_by_closure(x64, name):
    x, y = _data_set(5, dtype=jnp.float64)
    theta, w0 = _theta(x, dtype=jnp.float64), _w0(dtype=jnp.float64)
    closed_inner = lambda w, th: inner_loss(w, th, x, y)  # noqa: E731
    closed_outer = lambda w, th: outer_loss(w, th, x, y)  # noqa: E731
    v1, g1 = engine.hypergrad(METHODS[name], inner_loss, outer_loss, w0, theta, x, y)[:2]
    v2, g2 = engine.hypergrad(METHODS[name], closed_inner, closed_outer, w0, theta)[:2]
    np.testing.assert_allclose(v1, v2, rtol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2), strict=False):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_data_arguments_are_differentiated_against_central_differences(x64):
    """The hypergradient with data as arguments is the derivative of the objective (float64)."""
    x, y = _data_set(7, dtype=jnp.float64)
    theta, w0 = _theta(x, dtype=jnp.float64), _w0(dtype=jnp.float64)
    solve = engine.NewtonCG(tol=1e-12, maxiter=100)

    def objective(log_lam):
        th = {**theta, "log_lam": log_lam}
        return outer_loss(solve.solve(lambda w: inner_loss(w, th, x, y), w0).w, th, x, y)

    result = engine.hypergrad(Implicit(solve, cg_tol=1e-12), inner_loss, outer_loss, w0, theta, x, y, throw=True)
    g = result.grad
    eps = 1e-5
    fd = (objective(theta["log_lam"] + eps) - objective(theta["log_lam"] - eps)) / (2 * eps)
    np.testing.assert_allclose(g["log_lam"], fd, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(_calls(inner_loss, outer_loss)))
def test_every_hypergradient_returns_one_result(name):
    x, y = _data_set(0)
    theta = _theta(x)
    result = _calls(inner_loss, outer_loss)[name](_w0(), theta, x, y)
    assert isinstance(result, engine.Result) and isinstance(result.warm, Warm)
    assert jnp.shape(result.value) == ()
    assert jax.tree_util.tree_structure(result.grad) == jax.tree_util.tree_structure(theta)
    assert jax.tree_util.tree_structure(result.warm.w) == jax.tree_util.tree_structure(_w0())
    assert result.status.dtype == jnp.int32 and float(result.stats["inner_grad_norm"]) >= 0


def test_rmd_stats_say_what_is_known():
    x, y = _data_set(0)
    result = engine.hypergrad(RMD(steps=30, lr=0.5), inner_loss, outer_loss, _w0(), _theta(x), x, y)
    grads = jax.grad(inner_loss)(result.warm.w, _theta(x), x, y)
    expected = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree_util.tree_leaves(grads)))
    np.testing.assert_allclose(result.stats["inner_grad_norm"], expected, rtol=1e-5)
    assert set(result.stats) == {"inner_steps", "inner_grad_norm"} and int(result.stats["inner_steps"]) == 30


@pytest.mark.slow
def test_the_attack_passes_data_as_arguments(trace_counter):
    """Two different digits splits of the same shapes: the attack's losses are traced once."""
    ds = data.load_dataset("digits")
    model = models.logistic_regression(64)
    inner, outer = attack.poisoning_losses(model)
    assert attack.poisoning_losses(model) == (inner, outer)  # the same objects for the same model
    counted_inner, counted_outer = trace_counter(inner), trace_counter(outer)
    method = RMD(steps=10, lr=0.5)
    for seed in (0, 1, 2):
        splits = data.sample_splits(ds, seeds=[seed], n_train=60, n_val=30)
        settings = attack.AttackSettings(model, method, alpha=0.5, beta=0.5, x_box=(0.0, 1.0), lam_box=(-8.0, 5.0))
        state = attack.init_attack(settings, jax.random.PRNGKey(0)[None], splits, n_poison=3, log_lam=0.0)
        one = jax.tree_util.tree_map(lambda a: a[0], attack.set_poison_count(state, 3, 3))
        d = attack.poison_data(splits.x_train[0], splits.y_train[0], splits.x_val[0], splits.y_val[0], one)
        theta = {"xp": one.xp, "log_lam": one.log_lam}
        value = engine.hypergrad(method, counted_inner, counted_outer, model.init(one.key), theta, d).value
        closed = attack.make_losses(model, splits.x_train[0], splits.y_train[0], splits.x_val[0], splits.y_val[0], one)
        np.testing.assert_allclose(value, engine.hypergrad(method, *closed, model.init(one.key), theta)[0], rtol=1e-6)
        if seed == 0:
            counts = (counted_inner.count, counted_outer.count)
    assert (counted_inner.count, counted_outer.count) == counts


def test_import_poison_jax_exports_the_floors_without_plots_or_tfds():
    script = (
        "import sys, poison_jax as pj\n"
        "assert callable(pj.engine.hypergrad) and callable(pj.poisoning.attack.run_attack)\n"
        "assert callable(pj.experiments.sweep.run_sweep)\n"
        "heavy = ('matplotlib', 'tensorflow_datasets', 'poison_jax.face')\n"
        "heavy = [m for m in sys.modules if m.startswith(heavy)]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_package_ships_its_annotations():
    import importlib.resources
    from pathlib import Path

    assert importlib.resources.files("poison_jax").joinpath("py.typed").is_file()
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert '[tool.setuptools.package-data]\npoison_jax = ["py.typed"]' in pyproject


FLOORS = {"engine": 0, "poisoning": 1, "experiments": 2, "face": 3}  # DESIGN.md: a folder per floor


def _imported_floors(tree) -> set[str]:
    import ast

    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "poison_jax":
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("poison_jax."):
            imported.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            imported |= {a.name.split(".")[1] for a in node.names if a.name.startswith("poison_jax.")}
    return imported


def test_no_module_imports_a_floor_above_its_own():
    import ast
    from pathlib import Path

    package = Path(__file__).parent.parent / "poison_jax"
    assert {p.parent.name for p in package.glob("*/*.py")} == set(FLOORS), "a folder without a floor"
    assert {p.name for p in package.glob("*.py")} == {"__init__.py"}, "a module outside the floors' folders"
    for path in package.glob("*/*.py"):
        floor = FLOORS[path.parent.name]
        above = {m for m in _imported_floors(ast.parse(path.read_text())) if FLOORS.get(m, -1) > floor}
        assert not above, f"{path.relative_to(package)} (floor {floor}) imports {above}"
