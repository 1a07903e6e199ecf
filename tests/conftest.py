import jax
import pytest


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
