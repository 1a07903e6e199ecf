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
the inner gradient norm and the CG residual of every hyperiteration, per seed:
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
import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax.tree_utils as otu

from poison_jax.experiments import sections, sources
from poison_jax.experiments.config import ConfigError, ExperimentConfig, override, setting_label
from poison_jax.experiments.devices import SeedSharding, cpu_core_count
from poison_jax.poisoning import attack, data, hyperopt, models, seeds, victims

__all__ = ["Sweep", "build_model", "compile_seconds", "load_dataset", "load_splits", "run_sweep", "seed_keys"]


_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_compiled = [0.0]


def _on_event(event: str, duration_secs: float, **_: str | int) -> None:
    if event in _COMPILE_EVENTS:
        _compiled[0] += duration_secs


@functools.cache
def _listen() -> None:
    jax.monitoring.register_event_duration_secs_listener(_on_event)


def compile_seconds() -> float:
    """Seconds this process has spent tracing and compiling JAX programs since it first asked (a clock:
    take differences)."""
    _listen()
    return _compiled[0]


def build_model(config: ExperimentConfig, d: int, num_classes: int | None = None) -> models.Model:
    """The model ``config`` names (sections ``model``, ``penalty``, ``loss``) on ``d`` features, with
    ``num_classes`` outputs (default: the config's classes)."""
    return config.model.build(
        d,
        penalty=config.penalty.build(),
        loss=config.loss.build(),
        num_classes=config.num_classes if num_classes is None else num_classes,
    )


def load_dataset(config: ExperimentConfig, dataset=None) -> data.Dataset:
    """The data set of ``config``: its source loaded, or ``dataset`` (source ``arrays``) scaled as
    ``config.data.scale`` says."""
    if isinstance(config.data, sources.Arrays):
        if dataset is None:
            raise ConfigError(
                "config data 'arrays' takes its data from Python: run_sweep(config, out_dir, "
                "dataset=(x_pool, y_pool, x_test, y_test))"
            )
        return data.scale_features(data.as_dataset(dataset), config.data.scale)
    if dataset is not None:
        raise ConfigError(
            f"dataset= was given but the config's data is {config.data.kind!r}: use "
            "config.override(config, {'data': 'arrays'}) (run_sweep does this for you)"
        )
    if isinstance(config.data, sources.Npz) and config.data.path is None:
        raise ConfigError(
            "data.path is None, but the npz source needs a features file: "
            "--data FILE.npz or --set data.path=FILE.npz (keys X_train, y_train, X_test, y_test)"
        )
    return config.data.load()


def load_splits(config: ExperimentConfig, dataset=None) -> data.Splits:
    """The config's random train/validation splits (one per seed) and its test set."""
    ds = load_dataset(config, dataset)
    return _splits(config, ds)


def _splits(config: ExperimentConfig, ds: data.Dataset) -> data.Splits:
    n_pool = len(ds.y_pool)
    n_train, n_val = config.sweep.n_train, config.sweep.n_val
    if n_train + n_val > n_pool:
        raise ConfigError(
            f"sweep.n_train = {n_train} and sweep.n_val = {n_val} ask for "
            f"{n_train + n_val} points, but the pool of {ds.name!r} holds {n_pool}: lower them "
            f"(and attack.poison_batch * attack.num_batches = {config.n_poison} with them)"
        )
    return data.sample_splits(ds, config.seeds, n_train, n_val)


def _check_model_fits(model: models.Model, ds: data.Dataset) -> None:
    """The model's outputs and loss against the data's classes and task, with messages naming the fix."""
    models.output_shape(model, jax.ShapeDtypeStruct((2, ds.x_pool.shape[1]), jnp.float32))
    if model.loss.task != ds.task:
        raise ConfigError(
            f"the model {model.name!r} has a {model.loss.task} loss ({model.loss}) but the data {ds.name!r} are a "
            f"{ds.task} problem"
            + (": use loss=poison_jax.poisoning.losses.Squared()" if ds.task == "regression" else "")
        )
    if ds.task == "classification" and model.num_classes != ds.num_classes:
        outputs = "one score" if model.num_classes == 2 else f"{model.num_classes} scores"
        want = "one score (or two logits)" if ds.num_classes == 2 else f"{ds.num_classes} scores"
        raise ConfigError(
            f"the data {ds.name!r} have {ds.num_classes} classes but the model {model.name!r} gives {outputs} per "
            f"example: it must give {want}"
        )


def _fingerprint(ds: data.Dataset) -> str:
    digest = hashlib.sha256()
    for array in (ds.x_pool, ds.y_pool, ds.x_test, ds.y_test):
        digest.update(np.ascontiguousarray(array, np.float32).tobytes())
    return f"{ds.name}, {len(ds.y_pool)}+{len(ds.y_test)} rows, sha256 {digest.hexdigest()[:16]}"


def _model_identity(model: models.Model) -> str:
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    leaves = jax.tree_util.tree_leaves_with_path(shapes)
    tree = ", ".join(f"{jax.tree_util.keystr(k)}{list(v.shape)}" for k, v in leaves)
    return f"{model.name}: {tree}; layers {list(model.layers)}; {model.penalty}; {model.loss}"


def seed_keys(config: ExperimentConfig, purpose: int, seeds=None) -> jax.Array:
    """One key per split seed, derived from the config's seed and a purpose tag."""
    base = jax.random.fold_in(jax.random.PRNGKey(config.sweep.seed), purpose)
    seeds = config.seeds if seeds is None else seeds
    return jax.vmap(lambda s: jax.random.fold_in(base, s))(jnp.asarray(seeds))


_INIT, _CV, _EVAL = 1, 2, 3
#: Hyperiterations per jitted call of a sweep when they are fast, and what "slow" means (seconds per
#: hyperiteration): slow ones run one per call, so the progress bar moves after each.
CHUNK, SLOW_SECONDS = 10, 0.2


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
            self.identity["data"] = _fingerprint(dataset)
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
            self.identity["model"] = _model_identity(model)
        _check_model_fits(model, dataset)
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
        self.splits = self.sharding.put_splits(_splits(config, dataset))
        # Converged solvers loop a data-dependent number of times: on a CPU each device loops over its
        # own seeds rather than vmapping them in lock-step (see poison_jax.poisoning.seeds).
        iterative = isinstance(config.method, sections.Implicit) or isinstance(config.victim, sections.Converged)
        on_cpu = self.sharding.platform == "cpu"
        self.seed_lanes = self.sharding.num_devices if iterative and on_cpu else None
        settings = config.attack_settings(self.model, x_box=self.x_box)
        self.settings = dataclasses.replace(settings, seed_lanes=self.seed_lanes)
        self.victim = config.victim_model()
        self._seconds_per_iter: dict[tuple[bool, bool], float] = {}  # by (update_xp, update_lam)

    @property
    def name(self) -> str:
        """The run's label: the data's name for a user's data, else the preset's."""
        return self.dataset.name if isinstance(self.config.data, (sources.Arrays, sources.Npz)) else self.config.name

    def fresh_state(self, log_lam) -> attack.AttackState:
        """The initial attack state of every seed with the given log-λ (no poison active)."""
        c = self.config
        return attack.init_attack(self.settings, seed_keys(c, _INIT, self.seeds), self.splits, c.n_poison, log_lam)

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
                seed_keys(c, _CV, self.seeds),
                grid,
                folds=c.sweep.cv_folds,
                method=self.settings.method,
                seed_lanes=self.seed_lanes,
            )
            state = state._replace(log_lam=jnp.broadcast_to(best[:, None], state.log_lam.shape))
        elif setting == "learned":
            state = self.run_iters(
                attack.set_poison_count(state, 0, 0), c.attack.iters_clean, False, True, progress, infos=infos
            )
        return state

    def run_iters(
        self,
        state,
        num_iters: int,
        update_xp: bool,
        update_lam: bool,
        progress,
        infos: list | None = None,
    ):
        """``num_iters`` hyperiterations in jitted chunks, reporting each chunk as it finishes.

        Chunks of :data:`CHUNK` hyperiterations when they are fast, of one when they take longer
        than :data:`SLOW_SECONDS` (so a slow model reports every hyperiteration): at most two
        compiled sizes. The programs hold no host callback, so the persistent compilation cache can
        keep them (``attack.run_attack(progress=...)`` reports from inside the loop instead).

        Appends each chunk's :class:`poison_jax.poisoning.attack.StepInfo` (fields ``(S, n)``, still sharded)
        to ``infos`` when given: :meth:`diagnostics` turns them into a cell's diagnostics.
        """
        mode = (update_xp, update_lam)
        # One sharding for every call: set_poison_count's masks come back unsharded, and a chunk whose
        # inputs are placed differently from the last one's compiles again.
        state = jax.device_put(state, self.sharding.by_seed)
        done = 0
        while done < num_iters:
            seconds = self._seconds_per_iter.get(mode)
            chunk = CHUNK if seconds is not None and seconds < SLOW_SECONDS else 1
            n = chunk if num_iters - done >= chunk else 1
            started = time.perf_counter()
            state, info = attack.run_attack(
                self.settings, self.splits, state, num_iters=n, update_xp=update_xp, update_lam=update_lam
            )
            jax.block_until_ready(state.xp)
            if seconds is None or n == chunk:  # the first (compiling) call measures too much: measure again
                measured = (time.perf_counter() - started) / n
                self._seconds_per_iter[mode] = measured if seconds is None else min(seconds, measured)
            if infos is not None:
                infos.append(info)
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
        return self.run_iters(
            state, c.attack.iters_multi if learned else c.attack.iters_fixed, True, learned, progress, infos=infos
        )

    def diagnostics(self, state: attack.AttackState, infos: list) -> dict[str, np.ndarray]:
        """A cell's diagnostics (the arrays of ``store.DIAGNOSTICS``) from the ``StepInfo`` chunks its
        :meth:`run_iters` collected (none for a cell without hyperiterations) and its final state.

        Numpy, without the seed padding; a collective in a multi-host run (every process calls it).
        """
        infos, init_norm = self.sharding.gather((list(infos), _init_grad_norm(self.settings, self.splits, state)))
        n = self.config.sweep.num_seeds

        def series(get, dtype):
            chunks = [np.asarray(get(info)) for info in infos]
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
        x, y, weights = attack.poisoned_training_set(self.splits, state, self.settings.mode)
        keys = jax.vmap(lambda k: jax.random.fold_in(k, cell))(seed_keys(c, _EVAL, self.seeds))
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
        m, objective, nonfinite, unconverged = self.sharding.gather(
            (m, objective, state.nonfinite_steps, state.unconverged_solves)
        )
        per_seed, failures = _per_seed_metrics(c, self.model, m, objective, nonfinite)
        per_seed["unconverged_solves"] = np.asarray(unconverged).tolist()
        per_seed["victim_converged"] = np.asarray(m.converged).tolist()
        return {"per_seed": per_seed, "mean": _mean_metrics(per_seed), "failures": failures}


def _stat_dtype(name: str):
    return np.int32 if name.endswith("steps") else np.float32


def _init_grad_norm_one(settings, state, x_train, y_train, x_val, y_val):
    inner_loss, _ = attack.poisoning_losses(settings.model)
    data = attack.poison_data(x_train, y_train, x_val, y_val, state, settings.mode)
    theta = {"xp": state.xp, "log_lam": state.log_lam}
    return otu.tree_norm(jax.grad(inner_loss)(settings.model.init(state.key), theta, data))


@functools.partial(jax.jit, static_argnames=("settings",))
def _init_grad_norm(settings, splits, state):
    """``||grad_w inner||`` per seed at the model's initial weights (before any inner training)."""
    return seeds.over_seeds(
        functools.partial(_init_grad_norm_one, settings),
        state,
        splits.x_train,
        splits.y_train,
        splits.x_val,
        splits.y_val,
        lanes=settings.seed_lanes,
    )


_METRICS = ("error", "fpr", "fnr", "log_lam", "sq_norm", "sq_norm_per_weight", "val_loss")


def _per_seed_metrics(c: ExperimentConfig, model: models.Model, m: victims.VictimMetrics, objective, nonfinite):
    # More than two classes: no false-positive or -negative rate, but the error per class and the
    # confusion matrix (rows: true class, columns: predicted).
    multiclass = model.num_classes > 2
    names = [k for k in _METRICS if not (multiclass and k in ("fpr", "fnr"))]
    per_seed: dict[str, list] = {k: [] for k in (*names, *(("per_class_error", "confusion") if multiclass else ()))}
    failures = []
    for i, seed in enumerate(c.seeds):
        reasons = []
        lr = f"lower method.lr={c.method.lr} or " if isinstance(c.method, (sections.RMD, sections.IFT)) else ""
        advice = f"{lr}narrow attack.log_lam_box={c.attack.log_lam_box}"
        if nonfinite[i] > 0:
            reasons.append(
                f"{int(nonfinite[i])} hyperiteration(s) had a non-finite hypergradient (inner training "
                f"diverged: {advice})"
            )
        elif not np.isfinite(objective[i]):
            reasons.append(
                f"the validation loss after inner training is not finite (inner training diverged: {advice})"
            )
        if not m.finite[i]:
            reasons.append(f"victim training diverged (lower victim.lr={getattr(c.victim, 'lr', None)})")
        values = {
            "error": m.error[i],
            "fpr": m.fpr[i],
            "fnr": m.fnr[i],
            "log_lam": m.log_lam[i],
            "sq_norm": m.sq_norm[i],
            "sq_norm_per_weight": m.sq_norm_per_weight[i],
            "val_loss": objective[i],
            "per_class_error": m.per_class_error[i],
            "confusion": m.confusion[i],
        }
        if model.loss.task == "regression" or multiclass:  # no false-positive or -negative rate
            values.pop("fpr"), values.pop("fnr")
        values = {k: v for k, v in values.items() if k in per_seed}
        bad = [k for k, v in values.items() if not np.all(np.isfinite(v))]
        if bad and not reasons:
            reasons.append(f"non-finite metric(s): {', '.join(bad)}")
        for k in per_seed:
            v = values.get(k)
            per_seed[k].append(None if reasons or v is None else np.asarray(v, np.float64).tolist())
        if reasons:
            failures.append({"seed": seed, "reason": "; ".join(reasons)})
    return per_seed, failures


def _mean_metrics(per_seed: dict) -> dict:
    mean = {}
    for k, values in per_seed.items():
        ok = [v for v in values if v is not None]
        mean[k] = np.mean(np.asarray(ok, np.float64), axis=0).tolist() if ok else None
        if k in ("error",) and ok:
            mean["error_std"] = float(np.std(np.asarray(ok, np.float64)))
    return mean


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
) -> list[dict]:
    """Run (or resume) every cell of ``config`` not yet in ``out_dir``'s results; return all records.

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
      dataset: your own data instead of the config's source: a :class:`poison_jax.poisoning.data.Dataset` or a
        tuple ``(x_pool, y_pool, x_test, y_test)`` of arrays. The config's data then switches to
        ``arrays`` (``config.override(config, {"data": "arrays"})``: the data fields go back to their
        defaults, so ``data.x_box`` becomes the data's range unless the config's data already were
        ``arrays``).
      model: your own :class:`poison_jax.poisoning.models.Model` (e.g. :func:`poison_jax.poisoning.models.from_flax`)
        instead of the one the config's ``model``, ``penalty`` and ``loss`` sections build.
      resume: continue a partly finished folder.
      progress: a tqdm bar over all hyperiterations (the current cell in its description).
      callback: called as ``callback(done, total)`` after every hyperiteration (e.g. for a notebook
        widget or a log).
      log: where the run's messages go.
      devices: the devices the seeds are sharded over.

    Returns:
      the finished cells' records, in the order of the config's settings and cells.
    """
    from tqdm.auto import tqdm

    from poison_jax.experiments.store import ResultsStore

    if dataset is not None and not isinstance(config.data, sources.Arrays):
        log(f"dataset given: data {config.data.kind!r} -> 'arrays' (the data fields go back to their defaults)")
        config = override(config, {"data": "arrays"})
    # In a multi-host run every process computes; process 0 alone writes (and holds the lock).
    writer = jax.process_index() == 0
    if not writer:
        log = lambda _: None  # noqa: E731
        progress = False
        callback = None
    # The data load first: a run that cannot load its data leaves nothing behind in out_dir.
    sweep = Sweep(config, devices, dataset=dataset, model=model)
    store = ResultsStore(Path(out_dir), config, identity=sweep.identity, writer=writer, log=log)
    cells = [(s, c) for s in config.sweep.settings for c in range(config.attack.num_batches + 1)]
    todo = [cell for cell in cells if cell not in store.finished]
    if not todo:
        log(f"all {len(cells)} cells of {store.results_path} are already finished: nothing to do")
        return store.records()
    if len(todo) < len(cells) and not resume:
        store.release()
        raise FileExistsError(
            f"{store.results_path} already holds {len(cells) - len(todo)} of {len(cells)} finished "
            f"cells of this config: pass --resume (resume=True) to continue, or choose another --out"
        )
    if len(todo) < len(cells):
        log(f"resuming: {len(cells) - len(todo)} of {len(cells)} cells already finished, {len(todo)} to run")

    log(_device_line(config, sweep.name, sweep.sharding.num_devices, sweep.sharding.platform))
    total = sum(sweep.cell_iters(s, c) for s, c in todo)
    started, compiled_before = time.perf_counter(), compile_seconds()
    bar = tqdm(total=total, unit="hyperit", disable=not progress, dynamic_ncols=True)

    done = 0

    def advance(k: int) -> None:
        nonlocal done
        done += k
        bar.update(k)
        if callback is not None and k:
            callback(done, total)

    template = sweep.fresh_state(config.attack.log_lam_init)
    try:
        for setting in config.sweep.settings:
            pending = [c for s, c in todo if s == setting]
            if not pending:
                continue
            state, start = store.latest_state(setting, before=pending[0], template=template)
            if state is not None:
                state = sweep.sharding.put(state)
            for cell in range(start, config.attack.num_batches + 1):
                bar.set_description(f"{setting_label(config, setting)}, {cell * config.attack.poison_batch} poison pts")
                t0, compiled0 = time.perf_counter(), compile_seconds()
                twin = _twin(store, setting) if cell > 0 and writer and jax.process_count() == 1 else None
                if twin is not None and (twin, cell) in store.finished and (setting, cell) not in store.finished:
                    # Same log λ for every seed as a finished fixed setting: the same computation.
                    store.copy_cell(twin, setting, cell, label=setting_label(config, setting))
                    advance(sweep.cell_iters(setting, cell))
                    state = None  # loaded from the copied state if a later cell must be computed
                    continue
                infos: list = []
                if cell == 0:
                    state = sweep.initial_state(setting, advance, infos)
                else:
                    if state is None:
                        state = sweep.sharding.put(store.load_state(setting, cell - 1, template))
                    state = sweep.attack_cell(setting, cell, state, advance, infos)
                diagnostics = sweep.diagnostics(state, infos)  # a collective: every process takes part
                if (setting, cell) in store.finished:  # recomputed only to rebuild a missing state
                    if writer and not store.diagnostics_path(setting, cell).exists():
                        store.save_diagnostics(setting, cell, diagnostics)  # the same computation
                    continue
                metrics = sweep.evaluate(setting, cell, state)
                record = _record(
                    sweep, store.hash, setting, cell, metrics, time.perf_counter() - t0, compile_seconds() - compiled0
                )
                saved = sweep.sharding.gather(state)  # a collective: every process takes part
                if writer:
                    store.save_state(setting, cell, saved)
                    store.save_diagnostics(setting, cell, diagnostics)
                    store.append(record)
                else:
                    store.finished[(setting, cell)] = record
                if metrics["failures"]:
                    bar.write(
                        f"cell {setting}/{cell}: {len(metrics['failures'])} seed(s) failed: "
                        f"{metrics['failures'][0]['reason']}"
                    )
    finally:
        bar.close()
        store.release()
    elapsed, compiled = time.perf_counter() - started, compile_seconds() - compiled_before
    log(f"{sweep.name}: {len(todo)} cell(s) in {elapsed:.1f} s, of which compiling {compiled:.1f} s")
    return store.records()


_FIXED = ("small", "large", "clean")


def _twin(store, setting: str) -> str | None:
    """A fixed-λ setting whose finished cell 0 has, for every seed, the log λ of ``setting``'s cell 0:
    its attack cells compute exactly what ``setting``'s would (same seeds, keys and λ)."""
    mine = store.finished.get((setting, 0))
    if setting not in _FIXED or mine is None:
        return None
    for other in _FIXED:
        theirs = store.finished.get((other, 0))
        if other != setting and theirs is not None and theirs["per_seed"]["log_lam"] == mine["per_seed"]["log_lam"]:
            return other
    return None


def _device_line(config: ExperimentConfig, name: str, num_devices: int, platform: str) -> str:
    """Where the seeds run, what padding costs, and how to use every core (shown when a sweep starts)."""
    n, d = config.sweep.num_seeds, num_devices
    padded = -(-n // d) * d
    settings = f" ({config.name} settings)" if name != config.name else ""
    line = f"{name}{settings}: {n} seed(s) on {d} {platform.upper()} device(s)"
    if padded > n:
        fits = sorted({k for k in ((n // d) * d, padded) if k > 0})
        line += (
            f", padded to {padded} (copies of the last seed fill the devices and are dropped); "
            f"num_seeds={' or '.join(map(str, fits))} would use every device without waste"
        )
    cores = cpu_core_count()
    if platform == "cpu" and d < cores and jax.process_count() == 1:
        line += (
            f". This host has {cores} usable cores but {d} CPU device(s): call "
            "poison_jax.experiments.devices.use_cpu_cores() "
            f"before any JAX work (the poison-jax command does) to run seeds in parallel"
        )
    return line


def _record(
    sweep: Sweep, config_hash: str, setting: str, cell: int, metrics: dict, seconds: float, compiling: float
) -> dict:
    config = sweep.config
    n_poison = cell * config.attack.poison_batch
    regression = sweep.model.loss.task == "regression"
    return {
        "config_hash": config_hash,
        "preset": config.name,
        "data": sweep.name,
        "setting": setting,
        "label": setting_label(config, setting),
        "cell": cell,
        "n_poison": n_poison,
        "fraction": n_poison / config.sweep.n_train,
        "num_seeds": config.sweep.num_seeds,
        "seeds": list(config.seeds),
        "model": config.model.kind if "model" not in sweep.identity else sweep.model.name,
        "hypergrad": config.method.kind,
        "xp_step": config.attack.xp_step.kind,
        "lam_step": config.attack.lam_step.kind,
        "poison_mode": config.attack.poison_mode,
        "victim": config.victim.kind,
        **({"metric": "test_mse"} if regression else {}),  # else the test error, as always
        "per_seed": metrics["per_seed"],
        "mean": metrics["mean"],
        "failures": metrics["failures"],
        "reused_from": None,
        "wall_time_s": round(seconds, 3),
        "compile_time_s": round(compiling, 3),  # of wall_time_s: tracing and compiling JAX programs
    }
