"""Trip counts of the data-dependent loops of one attack hyperiteration, measured in the program itself.

A converged solver loops as often as its data need (Newton steps, CG steps in each, line-search
trials, the adjoint's CG steps, the outer rule's Armijo trials), so no compiled program says how
often. :func:`counted_step` traces :func:`poison_jax.poisoning.attack.poison_step` again with every
``jax.lax.while_loop`` it calls wrapped: the wrapper carries an iteration counter next to the loop's
own state, plus accumulators for the loops traced in its body, and hands the counts to the loop
around it. Jit is disabled while tracing (the package's inner jits are inlined), so every count is a
value of one traced program and comes out as one of its outputs: nothing is printed or called back
from the device. The library is not changed; the wrapper lives only in this process while tracing.

Under ``vmap`` (all seeds in lock-step, what a GPU runs) a loop runs until its slowest lane stops,
and lanes that stopped still execute the body (their results are discarded). Two counts per loop:

* lock-step: what the batched loop runs. At a loop's exit the max over lanes of its counter
  (:func:`lane_max`, a ``custom_vmap`` whose batching rule reduces over the seed axis) is its trip
  count; an enclosing loop sums them over its own trips, and the max over lanes of those sums is
  the total (the lane that stops last sees every trip). Lanes that stopped count too: their body
  (and its inner loops) really runs.
* own: each seed's own trips (the lane's counter advances only while its own condition holds),
  what the seed would run alone or in its own lane.

The counted step computes what ``poison_step`` computes (the same operations and the counters), so
its next state is the same; :func:`measure` checks that on the first hyperiteration.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.hlo_launches import PACKAGE, Key
from poison_jax.poisoning import attack

SLOTS = 32  # loops nested (at any depth) in one loop's body, at most
_WHILE_LOOP = jax.lax.while_loop


@jax.custom_batching.custom_vmap
def lane_max(x):
    """``x`` itself; under ``vmap`` the max over the mapped axis, unbatched."""
    return x


@lane_max.def_vmap
def _lane_max_rule(axis_size, in_batched, x):
    del axis_size
    return (jnp.max(x, axis=0) if in_batched[0] else x), False


@jax.custom_batching.custom_vmap
def lanes(x, template):
    """Every lane's ``x`` as one unbatched array shaped like ``template`` ``(S, *x.shape)``."""
    return jnp.broadcast_to(x, template.shape)


@lanes.def_vmap
def _lanes_rule(axis_size, in_batched, x, template):
    del axis_size
    return (x if in_batched[0] else jnp.broadcast_to(x, template.shape)), False


def caller_key(frame) -> Key:
    """``(path under the package, line)`` of each package frame from ``frame`` outwards (the key
    :func:`benchmarks.hlo_launches.package_key` reads from the HLO)."""
    key = []
    while frame is not None:
        if frame.f_code.co_filename.startswith(PACKAGE):
            key.append((frame.f_code.co_filename[len(PACKAGE) :], frame.f_lineno))
        frame = frame.f_back
    return tuple(key)


class _Counter:
    """The wrapped ``while_loop`` and the stack of counts of the bodies being traced."""

    def __init__(self, num_seeds: int):
        self.frames: list[list[tuple]] = []  # per body being traced: (key, lock trips, lock runs, own trips, own runs)
        self.template = jnp.zeros((num_seeds,), jnp.int32)

    def while_loop(self, cond_fun, body_fun, init_val):
        key = caller_key(inspect.currentframe().f_back)
        children: list[Key] = []

        def body(carry):
            val, k, acc = carry
            self.frames.append([])
            val = body_fun(val)
            found = self.frames.pop()
            if len(found) > SLOTS:
                raise ValueError(f"{len(found)} loops in one loop's body: raise loop_trips.SLOTS ({SLOTS})")
            children[:] = [entry[0] for entry in found]
            add = jnp.zeros((SLOTS, 4), jnp.int32)
            if found:
                add = add.at[: len(found)].set(jnp.stack([jnp.stack(entry[1:]) for entry in found]))
            return val, k + 1, acc + add

        init = (init_val, jnp.int32(0), jnp.zeros((SLOTS, 4), jnp.int32))
        val, k, acc = _WHILE_LOOP(lambda carry: cond_fun(carry[0]), body, init)
        one, lock = jnp.int32(1), lane_max(acc[:, :2])
        entries = [(key, lane_max(k), one, k, one)]
        entries += [(child, lock[i, 0], lock[i, 1], acc[i, 2], acc[i, 3]) for i, child in enumerate(children)]
        if len(self.frames) == 1:  # outside every loop, inside the seed vmap: each seed's own counts out
            entries = [
                (c, lt, lr, lanes(ot, self.template), lanes(orun, self.template)) for c, lt, lr, ot, orun in entries
            ]
        self.frames[-1].extend(entries)
        return val

    @contextlib.contextmanager
    def installed(self):
        jax.lax.while_loop = self.while_loop
        try:
            yield
        finally:
            jax.lax.while_loop = _WHILE_LOOP


def counted_step(settings: attack.AttackSettings, splits, state: attack.AttackState, *, update_xp, update_lam):
    """``(compiled, keys)``: ``compiled(splits, state) -> ((state, info), lock, own)`` is one
    hyperiteration of ``poison_step`` that also returns, for each loop execution site ``keys[i]``,
    ``lock[i] = (trips, runs)`` in lock-step and ``own[i] = (trips, runs)`` per seed ``(2, S)``."""
    if settings.seed_lanes is not None:
        raise ValueError(f"seed_lanes = {settings.seed_lanes}: count the vmapped program (seed_lanes=None)")
    counter = _Counter(state.xp.shape[0])
    keys: list[Key] = []

    def step(splits, state):
        counter.frames.append([])
        out = attack.poison_step(settings, splits, state, update_xp=update_xp, update_lam=update_lam)
        found = counter.frames.pop()
        keys[:] = [entry[0] for entry in found]
        lock = jnp.stack([jnp.stack(e[1:3]) for e in found]) if found else jnp.zeros((0, 2), jnp.int32)
        own = jnp.stack([jnp.stack(e[3:]) for e in found]) if found else jnp.zeros((0, 2, 1), jnp.int32)
        return out, lock, own

    with jax.disable_jit(), counter.installed():
        lowered = jax.jit(step).lower(splits, state)
    return lowered.compile(), keys


class Trips(NamedTuple):
    """Measured counts of ``iters`` hyperiterations: ``lock`` ``(iters, E, 2)`` and ``own``
    ``(iters, E, 2, S)`` (trips, runs) of each loop execution site ``keys[e]``; the attack's own
    ``*_steps`` stats ``(iters, S)``; ``xp_gap``: max |xp| difference of the counted step's first
    hyperiteration against ``poison_step``'s."""

    keys: list[Key]
    lock: np.ndarray
    own: np.ndarray
    stats: dict[str, np.ndarray]
    xp_gap: float


def measure(settings, splits, state, *, update_xp: bool, update_lam: bool, iters: int) -> Trips:
    """Run ``iters`` counted hyperiterations from ``state`` (each from the last one's state)."""
    compiled, keys = counted_step(settings, splits, state, update_xp=update_xp, update_lam=update_lam)
    reference, _ = attack.poison_step(settings, splits, state, update_xp=update_xp, update_lam=update_lam)
    lock, own, stats, gap = [], [], {}, float("nan")
    for i in range(iters):
        (state, info), lock_i, own_i = compiled(splits, state)
        if i == 0:
            gap = float(jnp.max(jnp.abs(state.xp - reference.xp)))
        lock.append(np.asarray(lock_i))
        own.append(np.asarray(own_i))
        for name, value in info.stats.items():
            if name.endswith("_steps"):
                stats.setdefault(name, []).append(np.asarray(value))
    return Trips(keys, np.stack(lock), np.stack(own), {k: np.stack(v) for k, v in stats.items()}, gap)
