"""cffi build script for ``kernels._ckernels`` (out-of-line API mode).

Every ``csrc/<family>.h`` holds plain prototypes (read by ``cdef``) and every ``csrc/<family>.c``
their definitions. ``pip install .`` runs this through ``setup.py``; ``python kernels/_build_c.py``
rebuilds the extension in place for development. Flags: ``-O3`` with OpenMP; set
``PYNN_NATIVE=1`` to add ``-march=native`` (the module then runs only on CPUs like this one).
"""
import glob
import os

import cffi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __name__ == "__main__":
    os.chdir(ROOT)  # setuptools wants source paths relative to the project root


def _rel(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "csrc", pattern)))


headers = _rel("*.h")
flags = ["-O3", "-std=c99", "-fopenmp", "-fno-math-errno"]
if os.environ.get("PYNN_NATIVE") == "1":
    flags.append("-march=native")
flags += os.environ.get("PYNN_CFLAGS", "").split()

ffibuilder = cffi.FFI()
ffibuilder.cdef("\n".join(open(os.path.join(ROOT, h)).read() for h in headers))
ffibuilder.set_source(
    "kernels._ckernels",
    "#include <stdint.h>\n" + "".join(f'#include "{os.path.basename(h)}"\n' for h in headers),
    sources=_rel("*.c"),
    include_dirs=["csrc"],
    extra_compile_args=flags,
    extra_link_args=["-fopenmp"] + [f for f in flags if f.startswith("-fsanitize")],
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=ROOT, verbose=False)
