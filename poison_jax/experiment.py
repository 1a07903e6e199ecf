"""The experiments floor (floor 2) in one import.

Each idea has its module -- :mod:`poison_jax.config` (configs and presets),
:mod:`poison_jax.sweep` (the sweep runner), :mod:`poison_jax.devices` (CPU cores and seed
sharding), :mod:`poison_jax.store` (the results store) and :mod:`poison_jax.synthetic` (Fig. 1's
maps) -- and this module re-exports their public names, so ``experiment.preset(...)`` and
``experiment.run_sweep(...)`` keep working.

Example::

    >>> from poison_jax import experiment
    >>> config = experiment.preset("digits-lr", num_seeds=2, iters_fixed=2, iters_clean=2, iters_multi=2,
    ...                            num_batches=1, eval_epochs=2, settings=("small", "learned"))
    >>> config.fractions
    (0.0, 0.035)
"""

from poison_jax.config import (
    DATA_FIELDS,
    FIELDS,
    HYPERGRADS,
    PRESET_SUMMARIES,
    PRESETS,
    RENAMED,
    SETTINGS,
    ConfigError,
    ExperimentConfig,
    describe_preset,
    parse_overrides,
    preset,
    setting_label,
    unused_fields,
    with_data,
)
from poison_jax.devices import SeedSharding, use_cpu_cores
from poison_jax.sweep import Sweep, build_model, load_splits, run_sweep, seed_keys
from poison_jax.synthetic import synthetic_maps

__all__ = [
    "DATA_FIELDS",
    "FIELDS",
    "HYPERGRADS",
    "PRESETS",
    "PRESET_SUMMARIES",
    "RENAMED",
    "SETTINGS",
    "ConfigError",
    "ExperimentConfig",
    "SeedSharding",
    "Sweep",
    "build_model",
    "describe_preset",
    "load_splits",
    "parse_overrides",
    "preset",
    "run_sweep",
    "seed_keys",
    "setting_label",
    "synthetic_maps",
    "unused_fields",
    "use_cpu_cores",
    "with_data",
]
