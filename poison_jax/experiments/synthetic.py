"""The paper's Fig. 1 maps on two 2-D Gaussians (the ``synthetic`` preset; drawn by
:func:`poison_jax.face.plots.synthetic_figure`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from poison_jax import engine
from poison_jax.engine import checks
from poison_jax.experiments import sections
from poison_jax.experiments.checked import ConfigError
from poison_jax.experiments.presets import preset
from poison_jax.experiments.sweep import Sweep
from poison_jax.poisoning import attack, victims

__all__ = ["synthetic_maps"]


def synthetic_maps(grid_size: int = 60, seed: int = 0, lam_grid_size: int = 15) -> dict:
    """The maps of the paper's Fig. 1 on two 2-D Gaussians (the ``synthetic`` preset).

    One poison point is cloned from a validation point of class 0 ("blue") with its label flipped
    and replaces one of the 32 training points. For every position of the poison point on a
    ``grid_size`` x ``grid_size`` grid over Φ(Dp) = [-9.5, 9.5]², logistic regression is trained
    (T = 500, η = 0.2) and its validation error measured, with log λ = -8 and λ = 20; the third
    map is the log λ in [-8, 6] with the lowest validation loss at each position. The attack's path
    (α = 0.4, T_Dp = 50 hyperiterations) is traced for both λ.

    Returns:
      A dict of lists (JSON-ready): ``grid_x``, ``grid_y``, ``val_error_noreg``, ``val_error_reg``,
      ``best_log_lam`` (grid_size x grid_size, indexed ``[x][y]``), ``path_noreg``, ``path_reg``
      (T_Dp + 1 positions), ``x_val``, ``y_val``, ``log_lam_noreg``, ``log_lam_reg``.
    """
    grid_size = checks.integer("grid_size", grid_size, low=2, error=ConfigError)
    config = preset(
        "synthetic",
        {"sweep.seed": seed, "sweep.num_seeds": 1, "attack.poison_batch": 1, "attack.num_batches": 1},
    )
    sweep = Sweep(config, devices=jax.devices()[:1])
    small, large = config.sweep.log_lam_small, config.sweep.log_lam_large
    state = _one_poison_point(sweep, small)
    lo, hi = sweep.x_box
    axis = jnp.linspace(lo, hi, grid_size)
    positions = jnp.stack(jnp.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    per_position = jax.jit(jax.vmap(_position_losses(sweep, state), in_axes=(0, None)))
    err_noreg, _ = per_position(positions, small)
    err_reg, _ = per_position(positions, large)
    lam_grid = jnp.linspace(*config.attack.log_lam_box, lam_grid_size)
    _, loss_grid = jax.jit(jax.vmap(per_position, in_axes=(None, 0)))(positions, lam_grid)
    best = lam_grid[jnp.argmin(loss_grid, axis=0)]

    grid = lambda a: np.asarray(a).reshape(grid_size, grid_size).tolist()
    return {
        "grid_x": np.asarray(axis).tolist(),
        "grid_y": np.asarray(axis).tolist(),
        "val_error_noreg": grid(err_noreg),
        "val_error_reg": grid(err_reg),
        "best_log_lam": grid(best),
        "path_noreg": _attack_path(sweep, state, small).tolist(),
        "path_reg": _attack_path(sweep, state, large).tolist(),
        "x_val": np.asarray(sweep.splits.x_val[0]).tolist(),
        "y_val": np.asarray(sweep.splits.y_val[0]).tolist(),
        "log_lam_noreg": small,
        "log_lam_reg": large,
    }


def _one_poison_point(sweep: Sweep, log_lam: float) -> attack.AttackState:
    """The sweep's attack state (one seed, one poison point) with the point cloned from the first
    validation point of class 0, flipped: the poison point is labelled 1."""
    state = sweep.fresh_state(log_lam)
    blue = int(np.flatnonzero(np.asarray(sweep.splits.y_val[0]) == 0)[0])
    clone = state._replace(xp=sweep.splits.x_val[:, blue : blue + 1], yp=jnp.ones((1, 1)))
    return attack.set_poison_count(clone, 1, 1)


def _position_losses(sweep: Sweep, state: attack.AttackState):
    """``(position, log_lam) -> (validation error, validation loss)`` of logistic regression trained
    with the poison point at ``position`` (the first seed's split)."""
    splits, model, method = sweep.splits, sweep.model, sweep.config.method
    if not isinstance(method, (sections.RMD, sections.IFT)):  # the preset trains by gradient steps
        raise ConfigError(f"the synthetic maps train by gradient steps (method rmd or ift), got {method!r}")
    one = jax.tree_util.tree_map(lambda a: a[0], state)
    x_tr, y_tr, x_v, y_v = (a[0] for a in (splits.x_train, splits.y_train, splits.x_val, splits.y_val))
    inner_solver = engine.GradientDescent(steps=method.steps, lr=method.lr)

    @jax.jit
    def losses_at(position, log_lam):
        s = one._replace(xp=position[None, :])
        inner, outer = attack.make_losses(model, x_tr, y_tr, x_v, y_v, s)
        theta = {"xp": s.xp, "log_lam": jnp.full((1,), log_lam)}
        w = inner_solver.solve(lambda w: inner(w, theta), model.init(one.key)).w
        error, _, _ = victims.classification_metrics(model.apply(w, x_v), y_v)
        return error, outer(w, theta)

    return losses_at


def _attack_path(sweep: Sweep, state: attack.AttackState, log_lam: float) -> np.ndarray:
    """The poison point's positions over ``attack.iters_fixed`` hyperiterations at fixed ``log_lam``."""
    s = state._replace(log_lam=jnp.full_like(state.log_lam, log_lam))
    points = [np.asarray(s.xp[0, 0])]
    for _ in range(sweep.config.attack.iters_fixed):
        s, _ = attack.poison_step(sweep.settings, sweep.splits, s, update_xp=True, update_lam=False)
        points.append(np.asarray(s.xp[0, 0]))
    return np.stack(points)
