"""The sweep runner (floor 2): Λ settings × poisoning fractions × seeds, written as it goes.

A sweep crosses Λ settings × poisoning fractions, with all seeds of a cell in one vmapped call:

* ``small``   log λ = -8 (about no regularisation), fixed;
* ``large``   a large fixed λ (the paper's per-dataset value);
* ``clean``   λ_CLEAN, chosen by k-fold cross-validation on the clean training set, fixed;
* ``learned`` λ learned under attack: on clean data (T_λ) for fraction 0, then by the
  multiobjective attack (T_mul per batch), carried over from batch to batch.

Fractions are built cumulatively (Algorithm 1): batch ``b`` of ``poison_batch`` points is
optimised, then frozen, and the next batch replaces further clean points. Every finished cell is
written at once as one JSON line (:mod:`poison_jax.experiments.store`) with the attack's state, so an
interrupted sweep resumes where it stopped, and with its diagnostics (the attacker's objective,
the method's stats of every hyperiteration, per seed:
``store.DIAGNOSTICS``). The seed axis is sharded over devices
(:class:`poison_jax.experiments.devices.SeedSharding`).

Example::

    >>> from poison_jax.experiments import config, presets, sweep
    >>> c = presets.preset("digits-lr", {"sweep.num_seeds": 2, "attack.iters_fixed": 2,
    ...     "attack.iters_clean": 2, "attack.iters_multi": 2, "attack.num_batches": 1, "victim.epochs": 2,
    ...     "sweep.settings": ("small", "learned")})
    >>> records = sweep.run_sweep(c, "/tmp/poison_jax_doctest", progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax.tree_utils as otu

from poison_jax.experiments import sections, sources
from poison_jax.experiments._records import device_line, mean_metrics, per_seed_metrics
from poison_jax.experiments._run import Counter, run_cells, todo_cells
from poison_jax.experiments._setup import (
    CV,
    EVAL,
    INIT,
    build_model,
    check_model_fits,
    compile_seconds,
    fingerprint,
    load_dataset,
    load_splits,
    model_identity,
    sample,
    seed_keys,
)
from poison_jax.experiments.cache import use_compilation_cache
from poison_jax.experiments.checked import ConfigError
from poison_jax.experiments.config import ExperimentConfig, override
from poison_jax.experiments.devices import SeedSharding
from poison_jax.poisoning import attack, defences, hyperopt, model_defences, models, seeds, victims

__all__ = ["Sweep", "build_model", "compile_seconds", "load_dataset", "load_splits", "run_sweep", "seed_keys"]

#: Hyperiterations per jitted call of a sweep when they are fast, and what "slow" means (seconds per
#: hyperiteration): slow ones run one per call, so the progress bar moves after each.
CHUNK, SLOW_SECONDS = 10, 0.2
# Each seed's key folded with a cell's number, in one program (eagerly two, lowered by every process).
_fold_in_each = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))


class Sweep:
    """Everything the cells of one config share: data, model, attack settings, compiled steps.

    ``dataset`` (a :class:`poison_jax.poisoning.data.Dataset` or a tuple of arrays, for ``source='arrays'``)
    and ``model`` (any :class:`poison_jax.poisoning.models.Model`, e.g. from
    :func:`poison_jax.poisoning.models.from_flax`)
    replace what the config would load and build; :attr:`identity` then records them.
    """

    def __init__(self, config: ExperimentConfig, devices=None, *, dataset=None, model: models.Model | None = None):
        dataset = load_dataset(config, dataset)
        self.dataset = dataset
        self.identity: dict[str, str] = {}
        if isinstance(config.data, sources.Arrays):
            self.identity["data"] = fingerprint(dataset)
        d = dataset.x_pool.shape[1]
        if model is None:
            if dataset.task == "regression" and not isinstance(config.loss, sections.Squared):
                raise ConfigError(
                    f"the data {dataset.name!r} are a regression (targets in [0, 1], not class labels), but the "
                    f"config's loss is {config.loss.kind!r}: set loss=squared"
                )
            model = build_model(config, d, dataset.num_classes)
        else:
            if not isinstance(model, models.Model):
                raise TypeError(
                    f"model must be a poison_jax.poisoning.models.Model, got {type(model).__name__}: wrap a "
                    "flax module with poison_jax.poisoning.models.from_flax(module, example_x)"
                )
            self.identity["model"] = model_identity(model)
        check_model_fits(model, dataset)
        self.model = model
        if config.data.x_box is None:  # the data's range
            low, high = float(dataset.x_pool.min()), float(dataset.x_pool.max())
            self.x_box = (low, high if high > low else low + 1.0)
            self.identity["x_box"] = f"the data's range {self.x_box}"
        else:
            self.x_box = (float(config.data.x_box[0]), float(config.data.x_box[1]))
            if config.data.outside_box == "refuse":
                attack.check_box(dataset.x_pool, self.x_box, f"the data {dataset.name!r}")
        self.config = config
        self.sharding = SeedSharding(config.sweep.num_seeds, devices)
        self.seeds = self.sharding.pad_seeds(config.seeds)
        self.splits = self.sharding.put_splits(sample(config, dataset))
        # On a CPU each device loops over its own seeds (poison_jax.poisoning.seeds): a converged
        # solver's loops then stop per seed, and one seed's products are plain matrix-vector ones,
        # which XLA's CPU kernels run 2-3x faster than the seed-batched products of a vmap
        # (docs: performance, "Seeds in lanes"). A GPU vmaps them in lock-step.
        self.seed_lanes = self.sharding.num_devices if self.sharding.platform == "cpu" else None
        settings = config.attack_settings(self.model, x_box=self.x_box)
        self.settings = dataclasses.replace(settings, seed_lanes=self.seed_lanes)
        self.victim = config.victim_model()
        self.sanitiser = config.defence.build()  # None: the victim fits the whole poisoned set
        self._seconds_per_iter: dict[tuple[bool, bool], float] = {}  # by (update_xp, update_lam)

    @property
    def name(self) -> str:
        """The run's label: the data's name for a user's data, else the preset's."""
        return self.dataset.name if isinstance(self.config.data, (sources.Arrays, sources.Npz)) else self.config.name

    def fresh_state(self, log_lam) -> attack.AttackState:
        """The initial attack state of every seed with the given log-λ (no poison active)."""
        c = self.config
        return attack.init_attack(self.settings, seed_keys(c, INIT, self.seeds), self.splits, c.n_poison, log_lam)

    def initial_state(
        self, setting: str, progress: Callable[[int], None], infos: list | None = None
    ) -> attack.AttackState:
        """The state of cell 0 (no poison) of a Λ setting: λ chosen as the setting says (``infos``:
        see :meth:`run_iters`)."""
        c = self.config
        start = {
            "small": c.sweep.log_lam_small,
            "large": c.sweep.log_lam_large,
            "learned": c.attack.log_lam_init,
            "clean": c.attack.log_lam_init,
        }[setting]
        state = self.fresh_state(start)
        if setting == "clean":
            low, high, count = c.sweep.cv_log_lam_grid
            grid = jnp.linspace(low, high, int(count))
            best, _ = hyperopt.cv_log_lambda(
                self.model,
                self.splits.x_train,
                self.splits.y_train,
                seed_keys(c, CV, self.seeds),
                grid,
                folds=c.sweep.cv_folds,
                method=self.settings.method,
                seed_lanes=self.seed_lanes,
            )
            state = state._replace(log_lam=jnp.broadcast_to(best[:, None], state.log_lam.shape))
        elif setting == "learned":
            state = attack.set_poison_count(state, 0, 0)
            state = self.run_iters(state, c.attack.iters_clean, progress, update_xp=False, update_lam=True, infos=infos)
        return state

    def placed(self, state: attack.AttackState) -> attack.AttackState:
        """``state`` with every leaf sharded by seed: one placement for every call, since a program
        whose inputs are placed differently from its last call's compiles again (set_poison_count's
        masks and a fresh state's leaves come back unsharded)."""
        return jax.device_put(state, self.sharding.by_seed)

    def run_iters(
        self, state, num_iters: int, progress, *, update_xp: bool, update_lam: bool, infos: list | None = None
    ):
        """``num_iters`` hyperiterations in jitted chunks, reporting each chunk as it finishes.

        Chunks of :data:`CHUNK` hyperiterations when they are fast, of one when they take longer
        than :data:`SLOW_SECONDS` (so a slow model reports every hyperiteration): one compiled
        program of :data:`CHUNK` hyperiterations runs either (``run_attack(active_iters=n)``). The
        programs hold no host callback, so the persistent compilation cache can keep them
        (``attack.run_attack(progress=...)`` reports from inside the loop instead).

        Appends each chunk's :class:`poison_jax.poisoning.attack.StepInfo` (fields ``(S, CHUNK)``, still
        sharded) and the number ``n`` of its hyperiterations that ran to ``infos`` when given:
        :meth:`diagnostics` turns them into a cell's diagnostics.
        """
        mode = (update_xp, update_lam)
        state = self.placed(state)
        done = 0
        while done < num_iters:
            seconds = self._seconds_per_iter.get(mode)
            n = min(CHUNK, num_iters - done) if seconds is not None and seconds < SLOW_SECONDS else 1
            started = time.perf_counter()
            state, info = attack.run_attack(
                self.settings, self.splits, state, num_iters=CHUNK, active_iters=n, update_xp=update_xp,
                update_lam=update_lam,
            )  # fmt: skip
            jax.block_until_ready(state.xp)
            if seconds is None or n > 1:  # the first (compiling) call measures too much: measure again
                measured = (time.perf_counter() - started) / n
                self._seconds_per_iter[mode] = measured if seconds is None else min(seconds, measured)
            if infos is not None:
                infos.append((info, n))  # the first n of the chunk's hyperiterations ran
            done += n
            progress(n)
        return state

    def attack_cell(
        self, setting: str, cell: int, state: attack.AttackState, progress, infos: list | None = None
    ) -> attack.AttackState:
        """Cell ``cell`` >= 1: activate batch ``cell`` and optimise it (and Λ for ``learned``); ``infos``:
        see :meth:`run_iters`."""
        c = self.config
        state = attack.set_poison_count(state, cell * c.attack.poison_batch, c.attack.poison_batch)
        learned = setting == "learned"
        iters = c.attack.iters_multi if learned else c.attack.iters_fixed
        return self.run_iters(state, iters, progress, update_xp=True, update_lam=learned, infos=infos)

    def diagnostics(self, state: attack.AttackState, infos: list) -> dict[str, np.ndarray]:
        """A cell's diagnostics (the arrays of ``store.DIAGNOSTICS``) from the ``(StepInfo, n)`` chunks its
        :meth:`run_iters` collected (none for a cell without hyperiterations) and its final state.

        Numpy, without the seed padding; a collective in a multi-host run (every process calls it).
        """
        state = self.placed(state)
        counts = [n for _, n in infos]
        infos, init_norm = self.sharding.gather(
            ([info for info, _ in infos], _init_grad_norm(self.settings, self.splits, state))
        )
        n = self.config.sweep.num_seeds

        def series(get, dtype):
            chunks = [np.asarray(get(info))[:, :ran] for info, ran in zip(infos, counts, strict=True)]
            return np.concatenate(chunks, axis=1).astype(dtype) if chunks else np.zeros((n, 0), dtype)

        stats = sorted(infos[0].stats) if infos else ["inner_grad_norm"]  # what the method reports
        return {
            "seeds": np.asarray(self.config.seeds, np.int64),
            "objective": series(lambda info: info.val_loss, np.float32),
            **{k: series(lambda info, k=k: info.stats[k], _stat_dtype(k)) for k in stats},
            "inner_converged": series(lambda info: info.inner_converged, bool),
            "finite": series(lambda info: info.finite, bool),
            "inner_grad_norm_init": np.asarray(init_norm, np.float32),
        }

    def cell_iters(self, setting: str, cell: int) -> int:
        c = self.config
        if cell == 0:
            return c.attack.iters_clean if setting == "learned" else 0
        return c.attack.iters_multi if setting == "learned" else c.attack.iters_fixed

    def evaluate(self, setting: str, cell: int, state: attack.AttackState) -> dict:
        """Victim metrics of a cell, per seed, with failures named instead of NaN."""
        c = self.config
        state = self.placed(state)
        x, y, weights = attack.poisoned_training_set(self.splits, state, self.settings.mode)
        keys = _fold_in_each(seed_keys(c, EVAL, self.seeds), np.uint32(cell))
        removed = {}
        if self.sanitiser is not None:
            poison = attack.poison_rows(self.splits, state, self.settings.mode)
            args = (x, y, weights, poison, self.splits.x_train, self.splits.y_train, state.log_lam, keys)
            weights, y, removed = _sanitised(self.sanitiser, self.model, self.victim, *args)
        m = victims.evaluate_victim(
            self.model,
            x,
            y,
            state.log_lam,
            keys,
            self.splits.x_test,
            self.splits.y_test,
            victim=self.victim,
            weights=weights,
            seed_lanes=self.seed_lanes,
        )
        objective = attack.attack_objective(self.settings, self.splits, state)
        m, objective, nonfinite, unconverged, removed = self.sharding.gather(
            (m, objective, state.nonfinite_steps, state.unconverged_solves, removed)
        )
        per_seed, failures = per_seed_metrics(c, self.model, m, objective, nonfinite)
        per_seed["unconverged_solves"] = np.asarray(unconverged).tolist()
        per_seed["victim_converged"] = np.asarray(m.converged).tolist()
        per_seed |= {f"defence_{k}": np.asarray(v).tolist() for k, v in removed.items()}
        return {"per_seed": per_seed, "mean": mean_metrics(per_seed), "failures": failures}


def _stat_dtype(name: str):
    return np.int32 if name.endswith("steps") else np.float32


def _init_grad_norm_one(settings, state, split):
    inner_loss, _ = attack.poisoning_losses(settings.model, settings.relaxed)
    data = attack.poison_data(split.x_train, split.y_train, split.x_val, split.y_val, state, settings.mode)
    theta = {"xp": state.xp, "log_lam": state.log_lam}
    return otu.tree_norm(jax.grad(inner_loss)(settings.model.init(state.key), theta, data))


@functools.partial(jax.jit, static_argnames=("sanitiser", "model", "victim"))
def _sanitised(sanitiser, model, victim, x, y, weights, poison, x_clean, y_clean, log_lam, keys):
    """Each seed's poisoned set after the defence ``sanitiser``: the victim's row weights ``(S, n)``
    (0 for a row removed or absent), the labels ``(S, n)`` (a label sanitiser changes some) and what
    it did (:func:`poison_jax.poisoning.defences.removal_stats`, and
    :func:`poison_jax.poisoning.model_defences.relabel_stats` for a defence that relabels). A
    model-based defence fits the victim's learner at the seed's log λ."""

    def one(x, y, weights, poison, x_clean, y_clean, log_lam, key):
        present = jnp.ones(y.shape, bool) if weights is None else weights > 0
        learner = model_defences.Learner(model, victim, log_lam, key)
        keep, labels = sanitiser.sanitise(x, y, present, x_clean, y_clean, model.num_classes, learner)
        stats = defences.removal_stats(keep, present, poison)
        if isinstance(sanitiser, model_defences.LabelSanitiser):
            stats |= model_defences.relabel_stats(y, labels, present, poison)
        return keep.astype(x.dtype), labels, stats

    # weights None: a tree with no leaves
    return jax.vmap(one)(x, y, weights, poison, x_clean, y_clean, log_lam, keys)


@functools.partial(jax.jit, static_argnames=("settings",))
def _init_grad_norm(settings, splits, state):
    """``||grad_w inner||`` per seed at the model's initial weights (before any inner training)."""
    per_seed = splits._replace(x_test=None, y_test=None)  # the test set has no seed axis
    one = functools.partial(_init_grad_norm_one, settings)
    return seeds.over_seeds(one, state, per_seed, lanes=settings.seed_lanes)


def run_sweep(
    config: ExperimentConfig,
    out_dir,
    *,
    dataset=None,
    model: models.Model | None = None,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] = print,
    devices=None,
    compilation_cache: bool | str | Path = True,
) -> list[dict]:
    """Run (or resume) every cell of ``config`` not yet in ``out_dir``; return all records, by setting and cell.

    The experiment entry of poison_jax (the ``poison-jax run`` command is a thin layer over it): the
    config's Λ settings (log λ = -8, large, λ_CLEAN by cross-validation, learned) x its poisoning
    fractions x its seeds, with the config's attack (the paper's or the strong one).

    Writes ``out_dir/results.jsonl`` (one JSON line per finished cell), ``out_dir/config.json`` and
    the attack state and the diagnostics of each cell under ``out_dir/state/`` and
    ``out_dir/diagnostics/`` (``store.DIAGNOSTICS``). A finished sweep does nothing and says
    so; a partly finished one needs ``resume=True``. The seed axis is sharded over ``devices``
    (default: all devices of all processes); in a multi-host run ``out_dir`` must be a folder every
    process sees, and only process 0 writes to it. Figures: :func:`poison_jax.face.plots.report`.

    Args:
      config: the settings (e.g. ``presets.preset("digits-lr", {"sweep.num_seeds": 3})``).
      out_dir: the results folder.
      dataset: your own data instead of the config's source (a :class:`poison_jax.poisoning.data.Dataset`
        or arrays ``(x_pool, y_pool, x_test, y_test)``); the config's data switch to ``arrays``, their
        fields back to their defaults (``data.x_box``: the data's range).
      model: your own :class:`poison_jax.poisoning.models.Model` (e.g. :func:`poison_jax.poisoning.models.from_flax`)
        instead of the one the config's ``model``, ``penalty`` and ``loss`` sections build.
      resume: continue a partly finished folder.
      progress: a tqdm bar over all hyperiterations (the current cell in its description).
      callback: called as ``callback(done, total)`` after every hyperiteration (e.g. a notebook widget).
      log, devices: where the run's messages go; the devices the seeds are sharded over.
      compilation_cache: JAX's persistent compilation cache in its default folder (``True``), in a
        folder given, or off (``False``): :func:`poison_jax.experiments.cache.use_compilation_cache`.
    """
    from poison_jax.experiments.store import ResultsStore

    if compilation_cache is not False:  # before the first compile: JAX reads the setting once
        use_compilation_cache(None if compilation_cache is True else compilation_cache, log=log)
    if dataset is not None and not isinstance(config.data, sources.Arrays):
        log(f"dataset given: data {config.data.kind!r} -> 'arrays' (the data fields go back to their defaults)")
        config = override(config, {"data": "arrays"})
    writer = jax.process_index() == 0  # in a multi-host run every process computes; process 0 alone writes
    if not writer:
        log, progress, callback = (lambda _: None), False, None
    # The data load first: a run that cannot load its data leaves nothing behind in out_dir.
    sweep = Sweep(config, devices, dataset=dataset, model=model)
    store = ResultsStore(Path(out_dir), config, identity=sweep.identity, writer=writer, log=log)
    todo = todo_cells(config, store, resume=resume, log=log)
    if todo:
        log(device_line(config, sweep.name, sweep.sharding.num_devices, sweep.sharding.platform))
        counter = Counter(sum(sweep.cell_iters(*cell) for cell in todo), progress, callback)
        run_cells(sweep, store, todo, counter, log, writer=writer)
    return store.records()
