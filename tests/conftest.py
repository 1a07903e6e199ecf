import os
import shutil
import subprocess
import sys
import tempfile

# The suite compiles about two thousand small programs and runs each a few times, so XLA's CPU
# compiler is most of its time. These flags change how the code is generated, never what it computes:
# no LLVM optimisation, the classic elemental emitters instead of the fusion emitters, one codegen
# module per program. Measured on six of test_engine's float64 hypergradients: 2.4 s to compile
# against 6.4 s; the whole suite on 2 cores: 319 s against 792 s.
_FAST_COMPILE_FLAGS = (
    "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1"
)


def _use_fast_compile_flags() -> None:
    """Put the flags in front of the caller's XLA_FLAGS (so the caller's win), before JAX starts its
    backend; subprocesses (the CLI, the benchmarks) and pytest-xdist's workers inherit them. XLA
    aborts on a flag it does not know: a jaxlib that has dropped one runs the suite without them."""
    flags = os.environ.get("XLA_FLAGS", "")
    if _FAST_COMPILE_FLAGS in flags:  # set by the parent process
        return
    candidate = f"{_FAST_COMPILE_FLAGS} {flags}".strip()
    probe = subprocess.run(
        [sys.executable, "-c", "import jax; jax.devices()"],
        env={**os.environ, "XLA_FLAGS": candidate},
        capture_output=True,
        timeout=300,
    )
    if probe.returncode == 0:
        os.environ["XLA_FLAGS"] = candidate


_use_fast_compile_flags()

import jax  # noqa: E402
import pytest  # noqa: E402

_CACHE_DIR = pytest.StashKey[str]()


def pytest_configure(config):
    """One persistent JAX compilation cache for the test session, in a fresh temporary folder.

    Tests build new closures (settings, losses, sweeps) whose programs are the same as earlier
    tests' and subprocess runs of the CLI compile the same programs again; with the cache each
    identical program is compiled once per session, later compiles load it (tracing still runs, so
    trace counts are unchanged). Subprocesses and pytest-xdist's workers inherit it through the
    environment, so a program one worker compiled, the other loads (an entry read while it is being
    written fails JAX's check and is compiled again, with a warning). A cache folder given by the
    caller (JAX_COMPILATION_CACHE_DIR) is left alone.
    """
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    path = tempfile.mkdtemp(prefix="poison_jax-test-jax-cache-")
    config.stash[_CACHE_DIR] = path
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_unconfigure(config):
    path = config.stash.get(_CACHE_DIR, None)
    if path is not None:
        os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
        os.environ.pop("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", None)
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
