"""Every CUDA kernel compiles to PTX for sm_90 (Hopper) with NVRTC/NVVM, no GPU needed.

The simulator that runs the CUDA parity tests accepts code that real compilation rejects (a
shared array sized at run time, say), so each kernel module lists the argument types of its
kernels in ``SIGNATURES`` and this test compiles every one in a process without the simulator.
"""
import os
import subprocess
import sys
import textwrap

import pytest

FAMILIES = sorted(
    f[:-3]
    for f in os.listdir(os.path.join(os.path.dirname(__file__), "..", "kernels", "numba_cuda"))
    if f.endswith(".py") and not f.startswith("_")
)

SCRIPT = textwrap.dedent(
    """
    import importlib, sys
    from numba import cuda
    from numba.cuda.dispatcher import CUDADispatcher
    mod = importlib.import_module("kernels.numba_cuda." + sys.argv[1])
    kernels = {
        n: k for n, k in vars(mod).items()
        if isinstance(k, CUDADispatcher) and not k.targetoptions.get("device")
    }
    missing = sorted(set(kernels) - set(mod.SIGNATURES))
    assert not missing, f"kernels without an entry in SIGNATURES: {missing}"
    for name, sig in mod.SIGNATURES.items():
        ptx, _ = cuda.compile_ptx(kernels[name].py_func, sig, cc=(9, 0))
        assert ".target sm_90" in ptx, name
        print("compiled", name)
    """
)


@pytest.mark.parametrize("family", FAMILIES)
def test_cuda_kernels_compile_for_sm90(family):
    pytest.importorskip("numba.cuda")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, family], env=env, capture_output=True, text=True, cwd=root)
    if "libnvrtc" in proc.stderr or "NVVM" in proc.stderr and "not found" in proc.stderr:
        pytest.skip("NVRTC/NVVM not installed: pip install 'numba-cuda[cu13]'")
    assert proc.returncode == 0, proc.stdout + proc.stderr
