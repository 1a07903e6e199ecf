"""What a sweep loads and builds before it runs (private; the public names are in
:mod:`poison_jax.experiments.sweep`): the data, the splits, the model, the seeds' keys, and the
process's compile clock."""

from __future__ import annotations

import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from poison_jax.experiments import sources
from poison_jax.experiments.checked import ConfigError
from poison_jax.experiments.config import ExperimentConfig
from poison_jax.poisoning import data, models

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
    return sample(config, ds)


def sample(config: ExperimentConfig, ds: data.Dataset) -> data.Splits:
    n_pool = len(ds.y_pool)
    n_train, n_val = config.sweep.n_train, config.sweep.n_val
    if n_train + n_val > n_pool:
        raise ConfigError(
            f"sweep.n_train = {n_train} and sweep.n_val = {n_val} ask for "
            f"{n_train + n_val} points, but the pool of {ds.name!r} holds {n_pool}: lower them "
            f"(and attack.poison_batch * attack.num_batches = {config.n_poison} with them)"
        )
    return data.sample_splits(ds, config.seeds, n_train, n_val)


def check_model_fits(model: models.Model, ds: data.Dataset) -> None:
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


def fingerprint(ds: data.Dataset) -> str:
    digest = hashlib.sha256()
    for array in (ds.x_pool, ds.y_pool, ds.x_test, ds.y_test):
        digest.update(np.ascontiguousarray(array, np.float32).tobytes())
    return f"{ds.name}, {len(ds.y_pool)}+{len(ds.y_test)} rows, sha256 {digest.hexdigest()[:16]}"


def model_identity(model: models.Model) -> str:
    shapes = jax.eval_shape(model.init, jax.eval_shape(jax.random.PRNGKey, 0))
    leaves = jax.tree_util.tree_leaves_with_path(shapes)
    tree = ", ".join(f"{jax.tree_util.keystr(k)}{list(v.shape)}" for k, v in leaves)
    return f"{model.name}: {tree}; layers {list(model.layers)}; {model.penalty}; {model.loss}"


def seed_keys(config: ExperimentConfig, purpose: int, seeds=None) -> jax.Array:
    """One key per split seed, derived from the config's seed and a purpose tag."""
    seeds = config.seeds if seeds is None else seeds
    return _seed_keys(np.uint32(config.sweep.seed), np.uint32(purpose), np.asarray(seeds, np.uint32))


@jax.jit
def _seed_keys(seed: jax.Array, purpose: jax.Array, seeds: jax.Array) -> jax.Array:
    """:func:`seed_keys` in one program (eagerly, five: each lowered and loaded by every process)."""
    base = jax.random.fold_in(jax.random.PRNGKey(seed), purpose)
    return jax.vmap(lambda s: jax.random.fold_in(base, s))(seeds)


INIT, CV, EVAL = 1, 2, 3  # the purposes of seed_keys
