"""Floor 2, experiments: configs and presets, the sweep (the Python entry of a whole experiment),
the results store and the devices the seeds run on."""

from poison_jax.experiments import cache, config, devices, presets, store, sweep, synthetic

__all__ = ["cache", "config", "devices", "presets", "store", "sweep", "synthetic"]
