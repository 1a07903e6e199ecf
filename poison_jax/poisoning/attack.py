"""Algorithm 1 of the paper: projected hypergradient ascent on the poison points, descent on Λ.

The attacker replaces ``n_p`` training points by poison points whose labels are flipped and fixed
(:func:`wrong_labels`: ``1 − y`` for two classes, a uniformly drawn wrong class for more) and whose
features ``Xp`` live in a box; the defender's regularisation ``Λ`` (one log-λ per layer)
is learned on the validation set at the same time (the multiobjective attack), kept fixed (the
classical attack), or learned on clean data (no poison active).

Everything here works on a leading *seed* axis: ``Splits`` from :mod:`poison_jax.poisoning.data` stacks the
random train/validation splits, :class:`AttackState` stacks one attack per split, and
:func:`poison_step` / :func:`run_attack` advance all of them in one jitted, vmapped call.

Cumulative poisoning compiles once: ``Xp`` always holds the largest number of poison points, and
masks say which are in the training set (``active``) and which are being optimised
(``trainable``, the current batch; earlier batches are frozen). See :func:`set_poison_count`.

Example (digits 0 v 8, 2 seeds, one batch of 5 points)::

    >>> import jax
    >>> from poison_jax.poisoning import attack, data, models
    >>> from poison_jax.engine import RMD
    >>> ds = data.load_dataset("digits")
    >>> splits = data.sample_splits(ds, seeds=[0, 1], n_train=100, n_val=50)
    >>> settings = attack.AttackSettings(models.logistic_regression(64), RMD(steps=50, lr=0.5),
    ...                                  alpha=0.5, beta=0.5, x_box=(0.0, 1.0), lam_box=(-8.0, 5.0))
    >>> keys = jax.random.split(jax.random.PRNGKey(0), 2)
    >>> state = attack.init_attack(settings, keys, splits, n_poison=5, log_lam=1.6)
    >>> state = attack.set_poison_count(state, n_active=5, batch_size=5)
    >>> state, info = attack.run_attack(settings, splits, state, num_iters=10, update_xp=True, update_lam=True)
    >>> state.log_lam.shape, info.val_loss.shape
    ((2, 1), (2, 10))
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from optax import projections

from poison_jax import engine
from poison_jax.engine import RESULTS, Warm
from poison_jax.poisoning import defences, seeds
from poison_jax.poisoning._init import check_box, init_attack, seed_axis, set_poison_count
from poison_jax.poisoning._problem import (
    MODES,
    Add,
    PoisonData,
    Replace,
    make_losses,
    poison_data,
    poison_rows,
    poisoned_training_set,
    poisoning_losses,
    prepared_inner_loss,
    wrong_labels,
)
from poison_jax.poisoning._progress import NO_TOKEN, report_every, with_progress
from poison_jax.poisoning._state import AttackSettings, AttackState, StepInfo

__all__ = [
    "MODES",
    "Add",
    "AttackSettings",
    "AttackState",
    "PoisonData",
    "Replace",
    "StepInfo",
    "attack_objective",
    "check_box",
    "init_attack",
    "make_losses",
    "poison_data",
    "poison_rows",
    "poison_step",
    "poisoned_training_set",
    "poisoning_losses",
    "run_attack",
    "set_poison_count",
    "wrong_labels",
]


def _all_finite(*trees) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(trees)]))


def _keep_if(ok, new, old):
    """``new`` where ``ok`` (a scalar bool), else ``old``, leaf by leaf."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)


def _inner_converged(status: jax.Array) -> jax.Array:
    return (status != RESULTS.inner_max_steps) & (status != RESULTS.inner_nonfinite)


def _start(settings: AttackSettings, state: AttackState, key: jax.Array) -> Warm:
    """Where a hyperiteration's solve starts: the carried warm start of a warm-starting method, else
    the model's init (the paper restarts training from w(0): a fresh random init for the MLP)."""
    if settings.method.warm_start and state.warm is not None:
        return state.warm
    return Warm(settings.model.init(key), None)


def _split_data(settings: AttackSettings, state: AttackState, split) -> PoisonData:
    return poison_data(split.x_train, split.y_train, split.x_val, split.y_val, state, settings.mode)


def _unprepared(theta: dict, data: PoisonData) -> dict:
    return theta


def _losses(settings: AttackSettings):
    """``(prepare, inner_loss, outer_loss)``: the inner loss reads ``prepare(theta, data)``, which holds
    what depends on ``theta`` alone (the relaxed sanitiser's weights), computed once per solve."""
    inner_loss, outer_loss = poisoning_losses(settings.model)
    if settings.relaxed is None:
        return _unprepared, inner_loss, outer_loss
    return (*prepared_inner_loss(settings.model, settings.relaxed), outer_loss)


def _hypergrad(settings: AttackSettings, data: PoisonData, theta: dict, warm: Warm) -> engine.Result:
    prepare, inner_loss, outer_loss = _losses(settings)
    if settings.relaxed is None:
        return engine.hypergrad(settings.method, inner_loss, outer_loss, warm.w, theta, data, warm=warm)
    prepared, chain = jax.vjp(lambda th: prepare(th, data), theta)
    result = engine.hypergrad(settings.method, inner_loss, outer_loss, warm.w, prepared, data, warm=warm)
    return result._replace(grad=chain(result.grad)[0])  # through the weights to Xp and log λ


def _move(settings: AttackSettings, data: PoisonData, theta: dict, opt, warm: Warm, *, name: str, mask):
    """One update of ``theta[name]`` (``"xp"``: ascent by ``xp_step``; ``"log_lam"``: descent by
    ``lam_step``), kept only if its hypergradient is finite. A warm-started method starts its next
    solve from the solution at the trial point the rule took."""
    on_xp = name == "xp"
    rule, lr, box = (settings.xp_step, settings.alpha, settings.x_box) if on_xp else (
        settings.lam_step, settings.beta, settings.lam_box)  # fmt: skip
    if on_xp and (settings.feasible is not None or settings.concentrate is not None):
        # The adaptive attacker's points start each step feasible (a rejected step, e.g. a line search
        # that accepts no trial, then keeps a feasible point too), and every trial is projected.
        box = _xp_projection(settings, data, theta["xp"], box, mask)
        theta = {**theta, "xp": box(theta["xp"])}
    result = _hypergrad(settings, data, theta, warm)
    carried = result.warm if settings.method.warm_start else warm
    prepare, inner_loss, outer_loss = _losses(settings)

    penalty = _stealth_penalty(settings, data, mask) if on_xp else None

    def objective_at(x):  # the attacker's objective at a line search's trial point, and the solution there
        trial = {**theta, name: x}
        w = settings.method.fit(inner_loss, carried.w, prepare(trial, data), data)
        value = outer_loss(w, trial, data)
        return (value if penalty is None else value - penalty(x)), w

    g, value = result.grad[name], result.value
    if penalty is not None:  # the stealthy attacker ascends A(Xp) - γ D(Xp)
        p, p_grad = jax.value_and_grad(penalty)(theta[name])
        g, value = g - p_grad, value - p
    x, new_opt, w = rule.step_and_aux(
        theta[name], g, opt, lr=lr, ascent=on_xp, box=box, mask=mask, value=value, value_fn=objective_at,
        aux=carried.w,
    )  # fmt: skip
    if settings.method.warm_start:
        carried = carried._replace(w=w)
    ok = _all_finite(result.value, g)
    x, opt, warm = _keep_if(ok, (x, new_opt, carried), (theta[name], opt, warm))
    return {**theta, name: x}, opt, warm, ok, result


def _stealth_penalty(settings: AttackSettings, data: PoisonData, mask):
    """``x -> γ D(x)`` (``None`` when ``settings.stealth`` is 0): ``D`` the trainable poison points'
    mean squared distance to their class's centroid in the clean training set, each over that
    class's mean squared distance of its clean points (1: as typical as a clean point)."""
    if not settings.stealth:
        return None
    num_classes, y = settings.model.num_classes, data.y_train
    mu = defences.centroids(data.x_train, y, jnp.ones(y.shape, bool), num_classes)
    labels, clean = data.yp.astype(jnp.int32), jnp.sum((data.x_train - mu[y.astype(jnp.int32)]) ** 2, axis=1)
    members = y.astype(jnp.int32)[:, None] == jnp.arange(num_classes)[None, :]
    spread = jnp.sum(members * clean[:, None], 0) / jnp.maximum(members.sum(0), 1)  # (K,)
    trainable = jnp.broadcast_to(mask, data.yp.shape + (1,))[:, 0].astype(data.x_train.dtype)

    def penalty(x):
        distance = jnp.sum((x - mu[labels]) ** 2, axis=1) / jnp.maximum(spread[labels], 1e-12)
        return settings.stealth * jnp.sum(trainable * distance) / jnp.maximum(jnp.sum(trainable), 1.0)

    return penalty


def _xp_projection(settings: AttackSettings, data: PoisonData, xp, box, mask):
    """The adaptive attacker's projection of the trainable poison points: tied into groups
    (``settings.concentrate``), then onto their class's sphere ∩ slab ∩ box (``settings.feasible``),
    bounds from the clean training set (oracle) or from the poisoned set as it stands
    (data-dependent: recomputed each hyperiteration), else onto the box."""
    feasible, trainable = settings.feasible, jnp.broadcast_to(mask, xp.shape)[:, 0]
    if feasible is None:
        project = lambda x: projections.projection_box(x, *box)  # noqa: E731
    else:
        if feasible.statistics == "oracle":
            reference = (data.x_train, data.y_train, jnp.ones(data.y_train.shape, bool))
        else:
            reference = (
                jnp.concatenate([data.x_train, xp.astype(data.x_train.dtype)]),
                jnp.concatenate([data.y_train, data.yp.astype(data.y_train.dtype)]),
                jnp.concatenate([data.clean_weight > 0, data.poison_weight > 0]),
            )
        bounds = feasible.bounds(*reference)
        project = lambda x: feasible.project(x, data.yp, bounds, box)  # noqa: E731
    if settings.concentrate is not None:
        tie = functools.partial(_tied, data.yp, trainable, settings.concentrate, settings.model.num_classes)
        return lambda x: jnp.where(mask, project(tie(x)), x)
    return lambda x: jnp.where(mask, project(x), x)


def _tied(yp, trainable, k: int, num_classes: int, x):
    """``x`` ``(P, d)`` with each trainable point replaced by its group's mean: the trainable points of
    label ``c`` form groups ``c·k + (i mod k)`` (the projection onto the tied positions)."""
    group = yp.astype(jnp.int32) * k + jnp.arange(x.shape[0]) % k
    members = (group[:, None] == jnp.arange(num_classes * k)[None, :]) & trainable[:, None]  # (P, G)
    means = (members.T.astype(x.dtype) @ x) / jnp.maximum(members.sum(0), 1)[:, None].astype(x.dtype)
    return jnp.where(trainable[:, None], means[group], x)


def _step_one(settings: AttackSettings, state: AttackState, split, *, update_xp: bool, update_lam: bool):
    key, init_key = jax.random.split(state.key)
    data = _split_data(settings, state, split)
    warm = _start(settings, state, init_key)
    theta = {"xp": state.xp, "log_lam": state.log_lam}
    opts = {"xp": state.xp_opt, "log_lam": state.lam_opt}
    masks = {"xp": state.trainable[:, None], "log_lam": True}
    finite, converged, first = jnp.asarray(True), jnp.asarray(True), None
    for name in [n for n, on in (("xp", update_xp), ("log_lam", update_lam)) if on]:  # Λ after Xp: Algorithm 1
        theta, opts[name], warm, ok, result = _move(
            settings, data, theta, opts[name], warm, name=name, mask=masks[name]
        )
        finite &= ok
        converged &= _inner_converged(result.status)
        first = result if first is None else first
    if first is None:  # neither moves: the objective only
        first = _hypergrad(settings, data, theta, warm)
        converged &= _inner_converged(first.status)
    counted = jnp.asarray(0, jnp.int32) if state.unconverged_solves is None else state.unconverged_solves
    state = state._replace(
        xp=theta["xp"],
        log_lam=theta["log_lam"],
        key=key,
        xp_opt=opts["xp"],
        lam_opt=opts["log_lam"],
        warm=warm if settings.method.warm_start else None,
        nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32),
        unconverged_solves=counted + (~converged).astype(jnp.int32),
    )
    return state, StepInfo(first.value, finite, converged, first.stats)


def _vmapped_step(settings, splits, state, *, update_xp: bool, update_lam: bool):
    step = functools.partial(_step_one, settings, update_xp=update_xp, update_lam=update_lam)
    return seeds.over_seeds(step, state, seed_axis(splits), lanes=settings.seed_lanes)


@functools.partial(jax.jit, static_argnames=("settings", "update_xp", "update_lam"))
def poison_step(
    settings: AttackSettings, splits, state: AttackState, *, update_xp: bool = True, update_lam: bool = True
) -> tuple[AttackState, StepInfo]:
    """One hyperiteration of Algorithm 1 on every split (vmapped over the seed axis).

    1. ``w(0)`` ← the model's init (zeros for logistic regression, fresh random for the MLP);
    2. if ``update_xp``: ``Xp ← Π_Φ(Dp)(Xp + α g/||g||)``, ``g`` the hypergradient w.r.t. the
       trainable poison points;
    3. if ``update_lam``: with the new ``Xp``, ``Λ ← Π_Φ(Λ)(Λ − β ∇_Λ A)``.

    A non-finite hypergradient skips its update and is counted in ``state.nonfinite_steps``.

    Returns:
      ``(state, info)`` with :class:`StepInfo` fields of shape ``(S,)``.
    """
    return _vmapped_step(settings, splits, state, update_xp=update_xp, update_lam=update_lam)


def run_attack(
    settings: AttackSettings,
    splits,
    state: AttackState,
    *,
    num_iters: int,
    update_xp: bool = True,
    update_lam: bool = True,
    progress: bool | Callable[[int], None] | None = None,
    active_iters: int | jax.Array | None = None,
) -> tuple[AttackState, StepInfo]:
    """``num_iters`` hyperiterations of :func:`poison_step` in one jitted ``lax.scan``.

    Modes: Λ fixed (``update_lam=False``, T_Dp iterations), Λ learned on clean data (no active poison,
    ``update_xp=False``, T_λ) and the multiobjective attack (both, T_mul).

    Args:
      settings, splits, state: as :func:`poison_step`.
      num_iters: hyperiterations (static).
      update_xp, update_lam: which of ``Xp`` and log-λ move (static).
      progress: report hyperiterations as they finish, from inside the compiled loop
        (``jax.debug.callback``): ``True`` draws a tqdm bar, a function is called with the number
        done so far (e.g. to update a notebook widget); ``None`` or ``False`` reports nothing and
        returns at once (asynchronous dispatch). Every hyperiteration is reported when they take
        longer than 50 ms (and on the first call of ``settings``); faster ones every few, about 20
        reports a second, so a host callback of a few hundred µs never weighs on a millisecond step;
        the last is always reported. Changing the function never recompiles. What the function
        raises is raised once the compiled loop has finished.
      active_iters: run only the first ``active_iters`` of the ``num_iters`` hyperiterations (traced,
        ``0 <= active_iters <= num_iters``; default all): one compiled program runs chunks of any
        length up to ``num_iters``. The skipped ones leave the state as it is and their ``info`` zero.

    Returns:
      ``(state, info)`` with :class:`StepInfo` fields of shape ``(S, num_iters)``.
    """
    modes = dict(num_iters=num_iters, update_xp=update_xp, update_lam=update_lam)
    chunk = num_iters if active_iters is None else active_iters
    # numpy for a host int: jnp.asarray would compile a conversion program in every fresh process.
    active = chunk.astype(jnp.int32) if isinstance(chunk, jax.Array) else np.int32(chunk)
    if not progress:
        return _run_attack(settings, splits, state, NO_TOKEN, NO_TOKEN, active, **modes, report=False)
    return with_progress(
        lambda token, every: _run_attack(settings, splits, state, token, every, active, **modes, report=True),
        num_iters=num_iters if active_iters is None else int(active_iters),
        progress=progress,
        timing_key=settings,
    )


@functools.partial(jax.jit, static_argnames=("settings", "num_iters", "update_xp", "update_lam", "report"))
def _run_attack(settings, splits, state, token, every, active, *, num_iters, update_xp, update_lam, report):
    # The shape of its info and the cond's branch share one trace of the hyperiteration (tracing it
    # twice doubled the program's trace time).
    step_on = functools.partial(_vmapped_step, settings, update_xp=update_xp, update_lam=update_lam)
    step = functools.partial(engine.traced_once(step_on, state), splits)
    no_info = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(step, state)[1])

    def skip(carry):  # a hyperiteration past ``active``: nothing moves
        return carry, no_info

    def body(carry, i):
        carry, info = jax.lax.cond(i < active, step, skip, carry)
        if report:  # after the step: its output as an operand
            report_every(token, every, jnp.minimum(i + 1, active), jnp.sum(carry.nonfinite_steps))
        return carry, info

    state, info = jax.lax.scan(body, state, jnp.arange(num_iters, dtype=jnp.int32))
    return state, jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), info)


def _objective_one(settings: AttackSettings, state: AttackState, split) -> jax.Array:
    prepare, inner_loss, outer_loss = _losses(settings)
    data = _split_data(settings, state, split)
    theta = {"xp": state.xp, "log_lam": state.log_lam}
    w0 = _start(settings, state, state.key).w
    return outer_loss(settings.method.fit(inner_loss, w0, prepare(theta, data), data), theta, data)


@functools.partial(jax.jit, static_argnames=("settings",))
def attack_objective(settings: AttackSettings, splits, state: AttackState) -> jax.Array:
    """The attacker's objective per seed, ``(S,)``: validation loss after inner training on the
    poisoned set with the state's Λ (the method's training: its steps and step size from ``w(0)``,
    or its converged solve from the carried warm start)."""
    return seeds.over_seeds(
        functools.partial(_objective_one, settings), state, seed_axis(splits), lanes=settings.seed_lanes
    )
