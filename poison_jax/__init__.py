"""poison_jax: optimal data poisoning against learners with learned regularisation, in JAX."""

from importlib.metadata import PackageNotFoundError, version as _version

from poison_jax import bilevel
from poison_jax.devices import use_cpu_cores
from poison_jax.bilevel import (
    IFT,
    RMD,
    CGInfo,
    HypergradInfo,
    exact_hypergrad,
    hvp,
    hypergrad,
    hypergrad_with_info,
    ift_hypergrad,
    rmd_hypergrad,
    unroll,
)

try:
    __version__ = _version("poison-jax")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "CGInfo",
    "HypergradInfo",
    "IFT",
    "RMD",
    "bilevel",
    "exact_hypergrad",
    "hvp",
    "hypergrad",
    "hypergrad_with_info",
    "ift_hypergrad",
    "rmd_hypergrad",
    "unroll",
    "use_cpu_cores",
]
