"""Tests use their own dataset cache and never touch the user's."""
import os

import pytest


def pytest_configure(config):
    if "MICS_BENCH_CACHE" not in os.environ:
        import tempfile

        os.environ["MICS_BENCH_CACHE"] = tempfile.mkdtemp(prefix="mics-bench-test-cache-")
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def smoke_args():
    """CLI arguments of a tiny CPU run."""
    return ["--profile", "smoke", "--device", "cpu"]
