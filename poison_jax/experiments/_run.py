"""How a sweep runs its cells (private; :func:`poison_jax.experiments.sweep.run_sweep` is the entry):
which cells are left, the progress counter, and each cell computed, copied from a twin setting or
recomputed to rebuild a missing state, then written."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax

from poison_jax.experiments._records import record, twin
from poison_jax.experiments._setup import compile_seconds
from poison_jax.experiments.config import ExperimentConfig, setting_label


def todo_cells(config: ExperimentConfig, store, *, resume: bool, log) -> list[tuple[str, int]]:
    """The cells not yet in ``store``; a partly finished folder needs ``resume``."""
    cells = [(s, c) for s in config.sweep.settings for c in range(config.attack.num_batches + 1)]
    todo = [cell for cell in cells if cell not in store.finished]
    if not todo:
        log(f"all {len(cells)} cells of {store.results_path} are already finished: nothing to do")
    elif len(todo) < len(cells) and not resume:
        store.release()
        raise FileExistsError(
            f"{store.results_path} already holds {len(cells) - len(todo)} of {len(cells)} finished "
            f"cells of this config: pass --resume (resume=True) to continue, or choose another --out"
        )
    elif len(todo) < len(cells):
        log(f"resuming: {len(cells) - len(todo)} of {len(cells)} cells already finished, {len(todo)} to run")
    return todo


class Counter:
    """A sweep's progress: a tqdm bar over all its hyperiterations and the user's ``callback(done, total)``."""

    def __init__(self, total: int, progress: bool, callback: Callable[[int, int], None] | None):
        from tqdm.auto import tqdm

        self.total, self.done, self.callback = total, 0, callback
        self.bar = tqdm(total=total, unit="hyperit", disable=not progress, dynamic_ncols=True)

    def __call__(self, k: int) -> None:
        self.done += k
        self.bar.update(k)
        if self.callback is not None and k:
            self.callback(self.done, self.total)


def run_cells(sweep: Any, store, todo: list[tuple[str, int]], counter: Counter, log, *, writer: bool) -> None:
    config = sweep.config
    started, compiled_before = time.perf_counter(), compile_seconds()
    template = sweep.fresh_state(config.attack.log_lam_init)
    try:
        for setting in config.sweep.settings:
            pending = [c for s, c in todo if s == setting]
            if pending:
                _run_setting(sweep, store, setting, pending[0], template, counter, writer=writer)
    finally:
        counter.bar.close()
        store.release()
    elapsed, compiled = time.perf_counter() - started, compile_seconds() - compiled_before
    log(f"{sweep.name}: {len(todo)} cell(s) in {elapsed:.1f} s, of which compiling {compiled:.1f} s")


def _run_setting(sweep: Any, store, setting: str, first: int, template, counter: Counter, *, writer: bool):
    """The cells of ``setting`` from the latest saved state before its first unfinished cell ``first``."""
    config = sweep.config
    state, start = store.latest_state(setting, before=first, template=template)
    if state is not None:
        state = sweep.sharding.put(state)
    for cell in range(start, config.attack.num_batches + 1):
        counter.bar.set_description(f"{setting_label(config, setting)}, {cell * config.attack.poison_batch} poison pts")
        state = _run_cell(sweep, store, setting, cell, state, template, counter, writer=writer)


def _run_cell(sweep: Any, store, setting: str, cell: int, state, template, counter: Counter, *, writer: bool):
    """One cell: copied from a twin setting, recomputed to rebuild a state, or computed and written.
    Returns its state (None when copied: a later cell loads the copy)."""
    config = sweep.config
    t0, compiled0 = time.perf_counter(), compile_seconds()
    twin_setting = twin(store, setting) if cell > 0 and writer and jax.process_count() == 1 else None
    if twin_setting is not None and (twin_setting, cell) in store.finished and (setting, cell) not in store.finished:
        # Same log λ for every seed as a finished fixed setting: the same computation.
        store.copy_cell(twin_setting, setting, cell, label=setting_label(config, setting))
        counter(sweep.cell_iters(setting, cell))
        return None
    infos: list = []
    if cell == 0:
        state = sweep.initial_state(setting, counter, infos)
    else:
        if state is None:
            state = sweep.sharding.put(store.load_state(setting, cell - 1, template))
        state = sweep.attack_cell(setting, cell, state, counter, infos)
    diagnostics = sweep.diagnostics(state, infos)  # a collective: every process takes part
    if (setting, cell) in store.finished:  # recomputed only to rebuild a missing state
        if writer and not store.diagnostics_path(setting, cell).exists():
            store.save_diagnostics(setting, cell, diagnostics)  # the same computation
        return state
    metrics = sweep.evaluate(setting, cell, state)
    seconds, compiling = time.perf_counter() - t0, compile_seconds() - compiled0
    saved = sweep.sharding.gather(state)  # a collective: every process takes part
    finished = record(sweep, store.hash, setting, cell, metrics, seconds, compiling)
    if writer:
        store.save_state(setting, cell, saved)
        store.save_diagnostics(setting, cell, diagnostics)
        store.append(finished)
    else:
        store.finished[(setting, cell)] = finished
    if metrics["failures"]:
        counter.bar.write(
            f"cell {setting}/{cell}: {len(metrics['failures'])} seed(s) failed: {metrics['failures'][0]['reason']}"
        )
    return state
