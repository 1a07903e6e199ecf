"""poison_jax: optimal data poisoning against learners with learned regularisation, in JAX.

``import poison_jax`` gives every floor a user calls -- the engine (:mod:`~poison_jax.bilevel`,
:mod:`~poison_jax.solvers`), the poisoning floor (:mod:`~poison_jax.data`,
:mod:`~poison_jax.models`, :mod:`~poison_jax.penalties`, :mod:`~poison_jax.losses`,
:mod:`~poison_jax.attack`, :mod:`~poison_jax.outer`,
:mod:`~poison_jax.hyperopt`, :mod:`~poison_jax.evaluate`, :mod:`~poison_jax.seeds`) and the
experiments floor (:mod:`~poison_jax.config`, :mod:`~poison_jax.sweep`,
:mod:`~poison_jax.devices`, :mod:`~poison_jax.store`, :mod:`~poison_jax.synthetic`, and
:mod:`~poison_jax.experiment`, which re-exports them) -- without the figures
(``poison_jax.plots``, matplotlib) or TensorFlow Datasets, which load only when used.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from poison_jax import (
    attack,
    bilevel,
    config,
    data,
    devices,
    evaluate,
    experiment,
    hyperopt,
    losses,
    models,
    outer,
    penalties,
    seeds,
    solvers,
    store,
    sweep,
    synthetic,
)
from poison_jax.bilevel import (
    IFT,
    RMD,
    CGInfo,
    HypergradInfo,
    Implicit,
    Warm,
    exact_hypergrad,
    hvp,
    hypergrad,
    hypergrad_with_info,
    ift_hypergrad,
    rmd_hypergrad,
    unroll,
    warm_hypergrad,
)
from poison_jax.devices import use_cpu_cores
from poison_jax.sweep import run_sweep

try:
    __version__ = _version("poison-jax")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "CGInfo",
    "HypergradInfo",
    "IFT",
    "Implicit",
    "RMD",
    "Warm",
    "attack",
    "bilevel",
    "config",
    "data",
    "devices",
    "evaluate",
    "exact_hypergrad",
    "experiment",
    "hvp",
    "hyperopt",
    "hypergrad",
    "hypergrad_with_info",
    "ift_hypergrad",
    "losses",
    "models",
    "outer",
    "penalties",
    "rmd_hypergrad",
    "run_sweep",
    "seeds",
    "solvers",
    "store",
    "sweep",
    "synthetic",
    "unroll",
    "use_cpu_cores",
    "warm_hypergrad",
]
