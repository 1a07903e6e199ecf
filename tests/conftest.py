import os
import shutil
import tempfile

import jax
import pytest

_CACHE_DIR = pytest.StashKey[str]()
_OURS = "POISON_JAX_TEST_CACHE"  # set where the cache folder is the session's own (not the caller's)


def pytest_configure(config):
    """One persistent JAX compilation cache for the test session, in a fresh temporary folder.

    Tests build new closures (settings, losses, sweeps) whose programs are the same as earlier
    tests' and subprocess runs of the CLI compile the same programs again; with the cache each
    identical program is compiled once per session, later compiles load it (tracing still runs, so
    trace counts are unchanged). Subprocesses inherit it through the environment. Each pytest-xdist
    worker has its own folder (JAX writes cache entries in place: two writers of one folder could
    read each other's half-written files). A cache folder given by the caller
    (JAX_COMPILATION_CACHE_DIR) is left alone.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if os.environ.get("JAX_COMPILATION_CACHE_DIR") and not (worker and os.environ.get(_OURS)):
        return
    path = tempfile.mkdtemp(prefix=f"poison_jax-test-jax-cache-{worker or 'main'}-")
    config.stash[_CACHE_DIR] = path
    os.environ[_OURS] = "1"
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_unconfigure(config):
    path = config.stash.get(_CACHE_DIR, None)
    if path is not None:
        os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
        os.environ.pop("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", None)
        os.environ.pop(_OURS, None)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def x64():
    """Run the test body with float64 enabled (gradient checks), restoring float32 after."""
    with jax.enable_x64(True):
        yield


class TraceCounter:
    """Wraps a function and counts how often JAX traces it (Python runs only while tracing)."""

    def __init__(self, fn):
        self.fn = fn
        self.count = 0

    def __call__(self, *args):
        self.count += 1
        return self.fn(*args)

    # jit keys static functions by hash/equality: keep the identity semantics of the wrapper.
    __hash__ = object.__hash__


@pytest.fixture
def trace_counter():
    return TraceCounter


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's caches of compiled programs after each test module.

    A full session compiles hundreds of programs (converged solvers nest while-loops in scans);
    kept alive all at once, XLA's CPU compiler crashed (SIGSEGV) late in the session.
    """
    yield
    jax.clear_caches()


@pytest.fixture(scope="session")
def quick_benchmarks(tmp_path_factory):
    """One ``python -m benchmarks --quick`` run of the suite (engine_peers aside) for the whole session,
    two benchmarks at a time: ``(folder, {name: its JSON})``. test_benchmarks and test_face read it."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    names = ("hypergrad", "attack_step", "accuracy", "scaling", "batching", "peer", "import_time", "strong_sweep")
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--jobs", "2", "--out", str(out), "--only", *names],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=600,
    )
    logs = {name: (out / f"{name}.log").read_text()[-2000:] for name in names if (out / f"{name}.log").exists()}
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}\n{logs}"
    return out, {name: json.loads((out / f"{name}.json").read_text()) for name in names}
