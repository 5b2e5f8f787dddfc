"""The helper modules next to these tests, importable by name from any test here.

pytest runs with --import-mode=importlib, which puts no test folder on sys.path; helpers.py is loaded by
its path (whatever the working directory) and registered as `_cluster_test_helpers`, so a test module
writes `import _cluster_test_helpers as helpers`. (tests/cluster/sync_count.py: `helpers.load_sibling`.)
"""
import importlib.util
import sys
from pathlib import Path

if "_cluster_test_helpers" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("_cluster_test_helpers", Path(__file__).with_name("helpers.py"))
    sys.modules["_cluster_test_helpers"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["_cluster_test_helpers"])

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    """These tests run hundreds of small and medium ops per call: on a shared 2-core machine torch's
    second OpenMP thread waits for a core in every one of them (up to 20x slower than one thread).
    One thread while they run, the caller's setting restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
