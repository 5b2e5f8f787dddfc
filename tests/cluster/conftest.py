"""The clustering tests run on one intra-op thread (the caller's setting restored after): they run hundreds
of small and medium ops per call, and on a shared 2-core machine torch's second OpenMP thread waits for a
core in every one of them (up to 20x slower than one thread)."""
import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here uses tests/conftest.py's `one_thread` fixture."""
