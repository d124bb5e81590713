"""Shared test setup: a persistent XLA compilation cache, so that a second test run skips most compilation.

MJX and brax programs take seconds to compile on a CPU; with the cache a warm run of the suite reloads them.
The cache lives in `<repo>/.jax_cache` (git-ignored) unless `JAX_COMPILATION_CACHE_DIR` says otherwise (the
Makefile sets it to the same place).
"""

import os
import pathlib

import jax
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

jax.config.update("jax_compilation_cache_dir", os.environ.get("JAX_COMPILATION_CACHE_DIR", str(REPO / ".jax_cache")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _sigkill_when_marked(proc, marker: pathlib.Path, timeout: float = 300.0) -> tuple[bool, bytes]:
    """Wait until the child `proc` writes `marker` (or exits, or `timeout` passes), then SIGKILL it.
    Returns (whether it was still running when killed, its stderr)."""
    import signal
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and not marker.exists() and proc.poll() is None:
        time.sleep(0.05)
    still_running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    return still_running, err


@pytest.fixture
def sigkill_when_marked():
    """The kill-and-resume helper above, as a fixture: test modules are also imported by subprocesses (as
    `tests.test_runner`), where `conftest` is not importable as a module."""
    return _sigkill_when_marked
