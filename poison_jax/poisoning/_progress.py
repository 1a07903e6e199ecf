"""Progress reports from inside a compiled loop (private; used by :func:`poison_jax.poisoning.attack.run_attack`).

The loop calls :func:`report_every` after each iteration; the host side (:func:`with_progress`)
keeps the sink of each running call under an integer token, draws a tqdm bar or calls the user's
function, and re-raises what that function raised once the loop has finished (JAX swallows what a
callback raises).
"""

from __future__ import annotations

import itertools
import time
import weakref
from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

NO_TOKEN = np.int32(0)
REPORT_SECONDS = 0.05  # at most about one report per this many seconds when iterations are fast
SECONDS_PER_ITER: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # key -> last measured
_SINKS: dict[int, Callable[[int], None]] = {}  # token -> the progress function of a running call
_ERRORS: dict[int, BaseException] = {}  # token -> what its progress function raised
_LAST: dict[int, int] = {}  # token -> the last number reported
_TOKENS = itertools.count(1)


def _report(token, done, _after):
    """Host side of the callback (``_after``: the iteration's output, so it runs after the iteration)."""
    sink = _SINKS.get(int(token))
    if sink is None:
        return
    _LAST[int(token)] = int(done)
    try:
        sink(int(done))
    except BaseException as err:  # e.g. a notebook's stop request: re-raised after the loop
        _SINKS.pop(int(token), None)
        _ERRORS.setdefault(int(token), err)


def report_every(token: jax.Array, every: jax.Array, done: jax.Array, after: jax.Array) -> None:
    """Inside the loop: report ``done`` iterations when ``done`` is a multiple of ``every``.

    ``after`` is any scalar computed from the iteration's output (so the report runs after it); a
    sum over a sharded axis sends one replicated scalar to the host.
    """
    jax.lax.cond(done % every == 0, lambda: jax.debug.callback(_report, token, done, after), lambda: None)


def _sink(progress: bool | Callable[[int], None], num_iters: int):
    if callable(progress):
        return progress, None
    from tqdm.auto import tqdm

    bar = tqdm(total=num_iters, unit="hyperit", dynamic_ncols=True)
    return (lambda done: bar.update(done - bar.n)), bar


def with_progress(
    run: Callable[[jax.Array, jax.Array], Any],
    *,
    num_iters: int,
    progress: bool | Callable[[int], None],
    timing_key: Hashable,
) -> Any:
    """``run(token, every)`` with its reports going to ``progress`` (``True``: a tqdm bar; a function:
    called with the number done). Every iteration is reported the first time ``timing_key`` runs and
    when iterations are slow; fast ones about every ``REPORT_SECONDS``; the last one from here."""
    sink, bar = _sink(progress, num_iters)
    token = next(_TOKENS)
    _SINKS[token] = sink
    seconds = SECONDS_PER_ITER.get(timing_key)
    every = 1 if seconds is None else max(1, min(num_iters, int(REPORT_SECONDS / max(seconds, 1e-9))))
    started = time.perf_counter()
    try:
        out = jax.block_until_ready(run(jnp.asarray(token, jnp.int32), jnp.asarray(every, jnp.int32)))
        jax.effects_barrier()  # every report has arrived before the sink goes
        SECONDS_PER_ITER[timing_key] = (time.perf_counter() - started) / num_iters
        if _LAST.get(token, 0) < num_iters:  # the last report comes from here: no callback at the loop's end
            _report(token, num_iters, None)
    finally:
        _SINKS.pop(token, None)
        _LAST.pop(token, None)
        error = _ERRORS.pop(token, None)
        if bar is not None:
            bar.close()
    if error is not None:  # raised by the progress function: raised here, once the compiled loop is done
        raise error
    return out
