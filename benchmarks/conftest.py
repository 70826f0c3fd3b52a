"""Benchmark fixtures: the backends compared side by side, and throughput in extra_info.

Run: ``python -m pytest benchmarks --benchmark-group-by=group`` (every backend of one op and
shape lands in one group, so pytest-benchmark prints them side by side with ratios).

Every contender runs with its libraries' default threading settings, as a user gets them; set
``OMP_WAIT_POLICY`` or the thread counts in the environment to measure others. Contenders share
one process, so none may leave process-wide state that slows the next: Numba's OpenMP layer
switched nesting on, which made PyTorch run 3x slower after pynn until ``kernels.numba_cpu``
switched it back off (``tests/test_startup.py`` checks that it stays off).
"""
import numpy as np
import pytest

import kernels

CPU_BACKENDS = [b for b in kernels.backends() if b != "cuda"]

try:
    import torch

    torch.set_num_threads(torch.get_num_threads())
except ImportError:  # PyTorch is an optional comparison
    torch = None


def record(benchmark, group, *, flops=None, nbytes=None):
    """Name the comparison group and, after the run, store GFLOP/s or GB/s from the median."""
    benchmark.group = group
    benchmark.extra_info["flops"] = flops
    benchmark.extra_info["bytes"] = nbytes


def pytest_benchmark_update_json(config, benchmarks, output_json):
    for bench in output_json["benchmarks"]:
        median = bench["stats"]["median"]
        info = bench["extra_info"]
        if info.get("flops"):
            info["gflops"] = info["flops"] / median / 1e9
        if info.get("bytes"):
            info["gbytes_per_s"] = info["bytes"] / median / 1e9


@pytest.fixture
def rng():
    return np.random.default_rng(0)
