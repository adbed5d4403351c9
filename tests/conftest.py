"""Test configuration: 8 fake CPU devices (for data-parallel tests) and shared fixtures.

The XLA flag must be set before jax is imported anywhere, hence at the top of conftest.
"""
import os

# 8 fake CPU devices; a generous collective timeout so a busy 2-core CI machine cannot make
# XLA abort an 8-device all-reduce (its default is 40 s). The test programs are small and
# compile-bound, so LLVM's optimisation passes are turned down: that halves compile time
# and changes no result beyond float rounding (the tests' tolerances are far wider).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8"
    + " --xla_cpu_collective_call_terminate_timeout_seconds=300"
    + " --xla_backend_optimization_level=0"
    + " --xla_llvm_disable_expensive_passes=true"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import contextlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402


@contextlib.contextmanager
def _x64():
    enable = getattr(jax, "enable_x64", None)
    if enable is None:  # older jax
        from jax.experimental import enable_x64 as enable
    with enable(True):
        yield


@pytest.fixture
def x64():
    """Run the test body with 64-bit floats enabled (round-trip and closed-form checks)."""
    with _x64():
        yield


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)
