"""The paper's Fig. 1 maps on two 2-D Gaussians (the ``synthetic`` preset; drawn by
:func:`poison_jax.face.plots.synthetic_figure`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from poison_jax import engine
from poison_jax.experiments.config import ConfigError, _is_int
from poison_jax.experiments.presets import preset
from poison_jax.experiments.sweep import _INIT, Sweep, seed_keys
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
    if not _is_int(grid_size) or grid_size < 2:
        raise ConfigError(f"grid_size must be an integer >= 2, got {grid_size!r}")
    config = preset("synthetic", seed=seed, num_seeds=1)
    sweep = Sweep(config, devices=jax.devices()[:1])
    settings, splits = sweep.settings, sweep.splits
    keys = seed_keys(config, _INIT)
    state = attack.init_attack(settings, keys, splits, 1, config.log_lam_small)
    # Clone from class 0 of the validation set: flipped, the poison point is labelled 1.
    y_val = np.asarray(splits.y_val[0])
    blue = int(np.flatnonzero(y_val == 0)[0])
    state = attack.set_poison_count(state._replace(xp=splits.x_val[:, blue : blue + 1], yp=jnp.ones((1, 1))), 1, 1)

    lo, hi = sweep.x_box
    axis = jnp.linspace(lo, hi, grid_size)
    positions = jnp.stack(jnp.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    lam_grid = jnp.linspace(config.log_lam_box[0], config.log_lam_box[1], lam_grid_size)
    one = jax.tree_util.tree_map(lambda a: a[0], state)
    x_tr, y_tr, x_v, y_v = (a[0] for a in (splits.x_train, splits.y_train, splits.x_val, splits.y_val))

    @jax.jit
    def losses_at(position, log_lam):
        s = one._replace(xp=position[None, :])
        inner, outer = attack.make_losses(sweep.model, x_tr, y_tr, x_v, y_v, s)
        theta = {"xp": s.xp, "log_lam": jnp.full((1,), log_lam)}
        w = engine.unroll(inner, sweep.model.init(one.key), theta, steps=config.inner_steps, lr=config.inner_lr)
        error, _, _ = victims.classification_metrics(sweep.model.apply(w, x_v), y_v)
        return error, outer(w, theta)

    per_position = jax.jit(jax.vmap(losses_at, in_axes=(0, None)))
    err_noreg, _ = per_position(positions, config.log_lam_small)
    err_reg, _ = per_position(positions, config.log_lam_large)
    _, loss_grid = jax.jit(jax.vmap(per_position, in_axes=(None, 0)))(positions, lam_grid)
    best = lam_grid[jnp.argmin(loss_grid, axis=0)]

    def path(log_lam):
        s = state._replace(log_lam=jnp.full_like(state.log_lam, log_lam))
        points = [np.asarray(s.xp[0, 0])]
        for _ in range(config.iters_fixed):
            s, _ = attack.poison_step(settings, splits, s, update_xp=True, update_lam=False)
            points.append(np.asarray(s.xp[0, 0]))
        return np.stack(points)

    grid = lambda a: np.asarray(a).reshape(grid_size, grid_size).tolist()
    return {
        "grid_x": np.asarray(axis).tolist(),
        "grid_y": np.asarray(axis).tolist(),
        "val_error_noreg": grid(err_noreg),
        "val_error_reg": grid(err_reg),
        "best_log_lam": grid(best),
        "path_noreg": path(config.log_lam_small).tolist(),
        "path_reg": path(config.log_lam_large).tolist(),
        "x_val": np.asarray(x_v).tolist(),
        "y_val": y_val.tolist(),
        "log_lam_noreg": config.log_lam_small,
        "log_lam_reg": config.log_lam_large,
    }
