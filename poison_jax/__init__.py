"""poison_jax: optimal data poisoning against learners with learned regularisation, in JAX.

The package has one folder per floor, each importing only the floors below it:

* :mod:`poison_jax.engine` -- inner solvers x ways to differentiate them -> hypergradients;
* :mod:`poison_jax.poisoning` -- data, models, penalties, losses, the attack, victims, hyperopt;
* :mod:`poison_jax.experiments` -- configs, presets, the sweep, the results store, devices;
* :mod:`poison_jax.face` -- the ``poison-jax`` command and the figures (not imported here:
  matplotlib and TensorFlow Datasets load only when used).
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from poison_jax import engine, experiments, poisoning

try:
    __version__ = _version("poison-jax")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["engine", "experiments", "poisoning"]
