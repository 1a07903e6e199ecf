"""JAX's persistent compilation cache for experiments: compile once across runs (floor 2).

A sweep's programs are the same from one run to the next (data are traced arguments), so a
second run of a config loads them from disk instead of compiling them again. The CLI and
:func:`poison_jax.experiments.sweep.run_sweep` turn the cache on by default, in

1. the folder passed (``--cache-dir DIR``, ``run_sweep(..., compilation_cache=DIR)``), else
2. JAX's own setting when one is in force (``JAX_COMPILATION_CACHE_DIR``), else
3. ``$POISON_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/poison_jax/jax`` (``~/.cache/poison_jax/jax``).

``--no-cache``, ``compilation_cache=False`` or ``POISON_JAX_NO_CACHE=1`` turn it off. Programs with
host callbacks (``attack.run_attack(progress=...)``) are never cached by JAX; the sweep's hold none.

Example::

    >>> import tempfile
    >>> from poison_jax.experiments import cache
    >>> folder = cache.use_compilation_cache(tempfile.mkdtemp(), log=lambda line: None)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import jax

__all__ = ["default_cache_dir", "use_compilation_cache"]

_ANNOUNCED: set[str] = set()


def default_cache_dir() -> Path:
    """``$POISON_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/poison_jax/jax``, else ``~/.cache/poison_jax/jax``."""
    if os.environ.get("POISON_JAX_CACHE_DIR"):
        return Path(os.environ["POISON_JAX_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "poison_jax" / "jax"


def use_compilation_cache(folder: str | Path | None = None, *, log: Callable[[str], None] = print) -> Path | None:
    """Turn on JAX's persistent compilation cache; return its folder (``None``: turned off by
    ``POISON_JAX_NO_CACHE``). The folder is said once per process through ``log``.

    A cache already set for JAX (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is kept: JAX
    reads the setting once, at its first compile. Otherwise every program is cached, however short
    its compile (JAX's default leaves out those under a second: most of a sweep's).
    """
    if os.environ.get("POISON_JAX_NO_CACHE", "") not in ("", "0"):
        return None
    current = jax.config.jax_compilation_cache_dir  # type: ignore[attr-defined]  # a flag without a stub
    if current and folder is None:
        chosen = Path(current)
    else:
        chosen = Path(folder) if folder is not None else default_cache_dir()
        try:
            chosen.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"compilation cache folder {str(chosen)!r} cannot be created: {err}") from err
        jax.config.update("jax_compilation_cache_dir", str(chosen))
        if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if str(chosen) not in _ANNOUNCED:
        _ANNOUNCED.add(str(chosen))
        log(f"JAX compilation cache: {chosen} (--no-cache or POISON_JAX_NO_CACHE=1 turns it off)")
    return chosen
