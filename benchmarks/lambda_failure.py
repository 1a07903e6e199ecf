"""Where learned λ fails, and why: the learned log λ against the validation-loss and the test-error
minimisers of each poisoned training set (the defences work, item 5).

For each setting, the learned-λ sweep under the strong attack (``run_sweep`` in this process, Λ
setting ``learned`` only: a converged, warm-started inner solve, the implicit hypergradient, Armijo
steps on Xp and log λ, the converged victim). Then, for every cell and seed, the poisoned training
set from the cell's saved state, and the converged victim fitted at ``GRID`` values of log λ
evenly over the config's box, and at the learned log λ itself: its validation loss on that seed's
validation split (what the defender minimises: the mean loss, no penalty), its loss on the test set
(data the attacker never saw) and its test error (test MSE for a regression). The poison stays as
the attack left it: each grid point is the victim a defender would get by choosing another λ after
the attack. All cells, seeds and grid points of a setting are one jitted call: the grid vmapped,
the (cell, seed) rows in lanes over the CPU devices.

Settings: diabetes ridge (10 features), digits 0 v 8 logistic with the preset's 200 training
points and with 50, MNIST 1 v 7 logistic (``mnist5k17-lr-strong``), and the box's part: diabetes
with its top lowered to log 1 and raised to log 5000, MNIST 1 v 7 with it raised to log 5000.

    python -m benchmarks.lambda_failure [--quick] [--out benchmarks/results]

``--quick``: digits with 50 training points, 2 seeds, one poison batch, two hyperiterations a cell,
a 5-point grid (seconds after compiling).
"""

from __future__ import annotations

import functools
import math
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness
from poison_jax.experiments import devices, presets, store, sweep
from poison_jax.poisoning import attack, seeds, victims

GRID = 41  # log λ values over the box: steps of 1/3 on the presets' (-8, log 200)
TOP_TOL = 1e-3  # a learned log λ this close to the box's top sits at it

# The strong attack on the small offline sets (the flags of the digits runs in docs: Results).
_STRONG_SMALL = {  # the strong attack with the presets' own step sizes (no Armijo floor)
    k: v
    for k, v in presets.STRONG_ATTACK.items()
    if k not in ("attack.xp_step.min_scale", "attack.alpha", "attack.beta")
}
# The strong diabetes run of docs: Results ("Ridge regression: regression poisoning on diabetes").
_STRONG_DIABETES = {
    "method": "implicit",
    "victim": "converged",
    "method.solver.tol": 1e-5,
    "victim.solver.tol": 1e-5,
    "attack.xp_step": "armijo",
    "attack.lam_step": "armijo",
}
_LEARNED = {"sweep.settings": ("learned",)}

_MNIST17 = {"sweep.num_seeds": 6}
_DIABETES = {**_STRONG_DIABETES, "sweep.num_seeds": 6}
_TOP = lambda top: {"attack.log_lam_box": (-8.0, math.log(top))}  # noqa: E731

#: ``{name: (preset, overrides)}`` of the full run: the box's top is log 200 unless named.
SETTINGS = {
    "diabetes ridge": ("diabetes-ridge", _DIABETES),
    "digits 0 v 8, n_train 200": ("digits-lr", {**_STRONG_SMALL, "sweep.num_seeds": 6}),
    "digits 0 v 8, n_train 50": (
        "digits-lr",
        {**_STRONG_SMALL, "sweep.num_seeds": 6, "sweep.n_train": 50, "attack.poison_batch": 2},
    ),
    "MNIST 1 v 7": ("mnist5k17-lr-strong", _MNIST17),
    "diabetes ridge, box top log 1": ("diabetes-ridge", {**_DIABETES, **_TOP(1.0)}),
    "diabetes ridge, box top log 5000": ("diabetes-ridge", {**_DIABETES, **_TOP(5000.0)}),
    "MNIST 1 v 7, box top log 5000": ("mnist5k17-lr-strong", {**_MNIST17, **_TOP(5000.0)}),
}
QUICK = {
    "digits 0 v 8, n_train 50": (
        "digits-lr",
        {
            **_STRONG_SMALL,
            **{"sweep.num_seeds": 2, "attack.num_batches": 1, "attack.iters_clean": 2, "attack.iters_multi": 2},
            **{"sweep.n_train": 50, "attack.poison_batch": 2},
        },
    ),
}


def _test_error(model, scores, y):
    """The victims' test metric: mean squared error for a regression, else the 0/1 error (two classes)."""
    if model.loss.task == "regression":
        return jnp.mean((scores - y) ** 2)
    return victims.classification_metrics(scores, y)[0]


@functools.partial(jax.jit, static_argnames=("model", "victim", "lanes"))
def grid_fits(model, victim, lanes, x, y, weights, log_lams, keys, x_val, y_val, x_test, y_test):
    """The converged victim of every row at every log λ: ``(val_loss, test_loss, error, converged)``, each
    ``(R, G)``; the losses are the mean of ``model.loss`` (no penalty), as the defender's objective.

    Rows are (cell, seed) pairs: ``x (R, n, d)``, ``y``, ``weights (R, n)`` their poisoned training
    sets, ``log_lams (R, G)`` the log λ to fit at (vmapped), ``keys (R, 2)``, ``x_val (R, m, d)``,
    ``y_val (R, m)`` each row's validation split; ``x_test (t, d)``, ``y_test (t,)`` shared.
    """

    def one(x, y, w, lams, key, xv, yv):
        def at(lam):
            params, converged = victim.train(model, x, y, w, lam[None], key)
            val_loss = jnp.mean(model.loss(model.apply(params, xv), yv))
            scores = model.apply(params, x_test)
            return val_loss, jnp.mean(model.loss(scores, y_test)), _test_error(model, scores, y_test), converged

        return jax.vmap(at)(lams)

    return seeds.over_seeds(one, x, y, weights, log_lams, keys, x_val, y_val, lanes=lanes)


def poisoned_sets(config, folder: str):
    """``(Sweep, x, y, weights, learned log λ)`` of every learned cell saved in ``folder``: the
    poisoned training sets ``(C, S, n, d)``, ``(C, S, n)``, ``(C, S, n)`` and ``(C, S)``."""
    s = sweep.Sweep(config)
    template = s.fresh_state(config.attack.log_lam_init)
    xs, ys, ws, lams = [], [], [], []
    for cell in range(config.attack.num_batches + 1):
        state = s.placed(store.load_attack_state(Path(folder) / "state" / f"learned-{cell}.npz", template))
        x, y, w = attack.poisoned_training_set(s.splits, state, s.settings.mode)
        w = jnp.ones(y.shape, x.dtype) if w is None else w
        x, y, w, lam = s.sharding.gather((x, y, w, state.log_lam[:, 0]))
        xs.append(x), ys.append(y), ws.append(w), lams.append(lam)
    return s, np.stack(xs), np.stack(ys), np.stack(ws), np.stack(lams)


def fit_grid(config, folder: str, grid_size: int) -> dict:
    """Every cell's and seed's victim on the log-λ grid and at its learned log λ (numpy, ``(C, S, ...)``)."""
    s, x, y, w, learned = poisoned_sets(config, folder)
    cells, num_seeds = learned.shape
    low, high = config.attack.log_lam_box
    grid = np.linspace(low, high, grid_size, dtype=np.float32)
    lams = np.concatenate([np.broadcast_to(grid, (cells, num_seeds, grid_size)), learned[..., None]], axis=-1)
    x_val, y_val = (np.asarray(a)[:num_seeds] for a in (s.splits.x_val, s.splits.y_val))
    # (seed, cell) order: each device's lane gets every cell of its seeds, the slow late cells shared.
    rows = lambda a: np.swapaxes(a, 0, 1).reshape(cells * num_seeds, *a.shape[2:])  # noqa: E731
    tile = lambda a: np.broadcast_to(a[:, None], (num_seeds, cells, *a.shape[1:])).reshape(-1, *a.shape[1:])  # noqa: E731
    keys = jax.random.split(jax.random.PRNGKey(config.sweep.seed), cells * num_seeds)
    lanes = s.sharding.num_devices if (cells * num_seeds) % s.sharding.num_devices == 0 else None
    start = time.perf_counter()
    out = grid_fits(
        s.model, s.victim, lanes, rows(x), rows(y), rows(w), rows(lams), keys, tile(x_val), tile(y_val),
        np.asarray(s.splits.x_test), np.asarray(s.splits.y_test),
    )  # fmt: skip
    by_cell = (np.swapaxes(np.asarray(a).reshape(num_seeds, cells, -1), 0, 1) for a in out)
    val_loss, test_loss, error, converged = by_cell
    return {
        "grid": grid,
        "learned": learned,
        "val_loss": val_loss,
        "test_loss": test_loss,
        "error": error,
        "converged": converged,
        "seconds": time.perf_counter() - start,
    }


def summarise_cell(fits: dict, cell: int, top: float, sweep_error) -> dict:
    """One cell's per seed: the learned log λ, the grid's minimisers of the validation loss, the test
    loss and the test error, the test error at each; their means over seeds; and the best common log λ
    (the minimiser of the seeds' mean test error)."""
    grid, g = fits["grid"], len(fits["grid"])
    val, err = fits["val_loss"][cell], fits["error"][cell]  # (S, G + 1): the grid, then the learned λ
    rows = np.arange(val.shape[0])
    val_idx, test_idx = np.argmin(val[:, :g], axis=1), np.argmin(fits["test_loss"][cell][:, :g], axis=1)
    best = err[:, :g].min(axis=1)
    ties = np.isclose(err[:, :g], best[:, None], rtol=1e-6, atol=1e-9)  # a 0/1 error ties on many λ
    per_seed = {
        "learned_log_lam": fits["learned"][cell],
        "at_top": fits["learned"][cell] >= top - TOP_TOL,
        "val_loss_opt_log_lam": grid[val_idx],
        "test_loss_opt_log_lam": grid[test_idx],
        "error_opt_log_lam": np.array([np.median(grid[t]) for t in ties]),  # the middle of the tied ones
        "error_opt_log_lam_range": np.array([[grid[t].min(), grid[t].max()] for t in ties]),
        "error_at_learned": err[:, g],
        "error_at_val_loss_opt": err[rows, val_idx],
        "error_at_test_loss_opt": err[rows, test_idx],
        "error_at_error_opt": best,
        "val_loss_excess": val[:, g] - val[rows, val_idx],  # what the learned λ leaves on the grid's minimum
        "val_loss_excess_at_top": val[:, g - 1] - val[rows, val_idx],
        "sweep_error_at_learned": np.array([np.nan if e is None else e for e in sweep_error], np.float64),
    }
    mean = {k: float(np.mean(v)) for k, v in per_seed.items() if k != "error_opt_log_lam_range"}
    mean["at_top"] = int(np.sum(per_seed["at_top"]))
    for k in ("error_at_learned", "error_at_val_loss_opt", "error_at_test_loss_opt", "error_at_error_opt"):
        mean[f"{k}_std"] = float(np.std(per_seed[k]))
    common = int(np.argmin(err[:, :g].mean(axis=0)))
    mean |= {"common_log_lam": float(grid[common]), "error_at_common": float(err[:, common].mean())}
    mean["error_at_common_std"] = float(err[:, common].std())
    return {"per_seed": {k: np.asarray(v).tolist() for k, v in per_seed.items()}, "mean": mean}


def _cli_value(value) -> str:
    """A value as ``--set`` reads it: names joined by commas, numbers as a tuple without spaces."""
    if isinstance(value, tuple):
        return ",".join(value) if all(isinstance(v, str) for v in value) else f"({','.join(map(repr, value))})"
    return str(value)


def run_setting(preset: str, overrides: dict, grid_size: int) -> dict:
    """The learned-λ sweep of one setting, then its grid; the per-cell summaries and the curves' means."""
    overrides = {**overrides, **_LEARNED}
    config = presets.preset(preset, overrides)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        records = sweep.run_sweep(config, folder, progress=False, log=lambda _: None, compilation_cache=False)
        sweep_seconds = time.perf_counter() - start
        fits = fit_grid(config, folder, grid_size)
    top = config.attack.log_lam_box[1]
    by_cell = {r["cell"]: r for r in records}
    cells = [
        {"fraction": by_cell[c]["fraction"], **summarise_cell(fits, c, top, by_cell[c]["per_seed"]["error"])}
        for c in range(len(by_cell))
    ]
    sets = " ".join(f"--set {k}={_cli_value(v)}" for k, v in overrides.items())
    return {
        "command": f"poison-jax run --preset {preset} {sets}",
        "regression": config.loss.kind == "squared",
        "lam_box": list(config.attack.log_lam_box),
        "n_train": config.sweep.n_train,
        "num_seeds": config.sweep.num_seeds,
        "grid": fits["grid"].tolist(),
        "cells": cells,
        "mean_val_loss_curve": fits["val_loss"][..., :-1].mean(axis=1).tolist(),
        "mean_test_loss_curve": fits["test_loss"][..., :-1].mean(axis=1).tolist(),
        "mean_error_curve": fits["error"][..., :-1].mean(axis=1).tolist(),
        "unconverged_fits": int(np.sum(~fits["converged"])),
        "fits": int(fits["converged"].size),
        "sweep_seconds": sweep_seconds,
        "grid_seconds": fits["seconds"],
        "seconds": time.perf_counter() - start,
    }


def run(args) -> dict:
    start = time.perf_counter()
    chosen = QUICK if args.quick else SETTINGS
    grid_size = 5 if args.quick else GRID
    results = {name: run_setting(preset, overrides, grid_size) for name, (preset, overrides) in chosen.items()}
    return {"settings": results, "grid_size": grid_size, "wall_seconds": time.perf_counter() - start}


def _cell_row(cell: dict, regression: bool) -> str:
    m = cell["mean"]
    if regression:
        err = lambda k: f"{m[k]:.4f} ± {m[k + '_std']:.4f}"  # noqa: E731
    else:
        err = lambda k: f"{100 * m[k]:.1f} ± {100 * m[k + '_std']:.1f}"  # noqa: E731
    values = (
        f"{100 * cell['fraction']:.1f}",
        f"{m['learned_log_lam']:.2f} [{m['at_top']}]",
        *(f"{m[k]:.2f}" for k in ("val_loss_opt_log_lam", "test_loss_opt_log_lam", "error_opt_log_lam")),
        *(err(k) for k in ("error_at_learned", "error_at_val_loss_opt", "error_at_test_loss_opt")),
        err("error_at_error_opt"),
        f"{err('error_at_common')} ({m['common_log_lam']:.2f})",
        f"{m['val_loss_excess']:.2g}",
    )
    return "| " + " | ".join(values) + " |"


def markdown(result: dict) -> str:
    lines = [
        f"The learned log λ against the minimisers, on a grid of {result['grid_size']} log λ over the box, of each "
        "seed's validation loss (what the defender minimises), test loss and test error, and the test error at "
        "each (means ± std over seeds). [n]: seeds whose learned log λ is at the box's top. Error-opt is an "
        "oracle chosen on the test set; 'common' is the one log λ with the least mean test error over the "
        "seeds (in brackets). Last column: validation loss at the learned λ minus the grid's minimum. "
        f"Wall time {result['wall_seconds']:.0f} s.",
        "",
    ]
    for name, r in result["settings"].items():
        unit = "test MSE" if r["regression"] else "test error (%)"
        lines += [
            f"**{name}** (n_train {r['n_train']}, {r['num_seeds']} seeds, box ({r['lam_box'][0]:.2f}, "
            f"{r['lam_box'][1]:.2f}); {r['sweep_seconds']:.0f} s sweep, {r['grid_seconds']:.0f} s grid, "
            f"{r['unconverged_fits']} of {r['fits']} fits unconverged): `{r['command']}`",
            "",
            "| poison (%) | learned log λ [top] | log λ min. val loss | min. test loss | min. test error "
            f"| {unit} at learned | at val-loss opt | at test-loss opt | at error opt | common (log λ) "
            "| val loss excess |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *(_cell_row(c, r["regression"]) for c in r["cells"]),
            "",
        ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    devices.use_cpu_cores()  # one XLA device per core, before JAX's first computation
    return harness.main("lambda_failure", __doc__, run, markdown, argv)


if __name__ == "__main__":
    main()
