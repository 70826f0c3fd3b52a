"""cffi build script for ``kernels._ckernels`` (out-of-line API mode).

Every ``csrc/<family>.h`` holds plain prototypes (read by ``cdef``) and every ``csrc/<family>.c``
their definitions. ``pip install .`` runs this through ``setup.py``; ``python kernels/_build_c.py``
rebuilds the extension in place for development. Flags: ``-O3`` with OpenMP; set
``PYNN_NATIVE=1`` to add ``-march=native`` (the module then runs only on CPUs like this one).

``PYNN_SANITIZE=1 python kernels/_build_c.py [DIR]`` builds a copy instrumented by
AddressSanitizer and UndefinedBehaviorSanitizer into DIR (default: a new temporary folder),
leaving the in-place module alone, and prints the built file's path. Python loads it when
``PYNN_CKERNELS`` holds that path and libasan is preloaded (see ``kernels.c``)::

    so=$(PYNN_SANITIZE=1 python kernels/_build_c.py)
    PYNN_CKERNELS=$so LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 python ...
"""
import glob
import importlib.machinery
import os
import sys
import tempfile

import cffi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SANITIZE = os.environ.get("PYNN_SANITIZE") == "1"
if __name__ == "__main__":
    os.chdir(ROOT)  # setuptools wants source paths relative to the project root


def _rel(pattern):
    """csrc files relative to the root, as setuptools wants; absolute for an out-of-tree build,
    which cffi compiles from inside its output folder."""
    paths = sorted(glob.glob(os.path.join(ROOT, "csrc", pattern)))
    return paths if SANITIZE else [os.path.relpath(p, ROOT) for p in paths]


headers = _rel("*.h")
flags = ["-O3", "-std=c99", "-fopenmp", "-fno-math-errno"]
if os.environ.get("PYNN_NATIVE") == "1":
    flags.append("-march=native")
if SANITIZE:
    # Every report aborts: a run that finishes is a run without reports.
    flags += ["-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
flags += os.environ.get("PYNN_CFLAGS", "").split()

ffibuilder = cffi.FFI()
ffibuilder.cdef("\n".join(open(os.path.join(ROOT, h)).read() for h in headers))
ffibuilder.set_source(
    "kernels._ckernels",
    "#include <stdint.h>\n" + "".join(f'#include "{os.path.basename(h)}"\n' for h in headers),
    sources=_rel("*.c"),
    include_dirs=[os.path.join(ROOT, "csrc") if SANITIZE else "csrc"],
    extra_compile_args=flags,
    extra_link_args=["-fopenmp"] + [f for f in flags if f.startswith("-fsanitize")],
)


def _drop_shadows(built):
    """Remove other builds of the module next to ``built``: ``pip install -e`` names it
    ``_ckernels.cpython-3XX-*.so`` and cffi ``_ckernels.abi3.so``, and Python imports the first
    suffix it knows, so a stale copy would hide a fresh rebuild."""
    folder = os.path.dirname(built)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        other = os.path.join(folder, "_ckernels" + suffix)
        if os.path.exists(other) and not os.path.samefile(other, built):
            os.remove(other)


if __name__ == "__main__":
    if SANITIZE:
        out = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="pynn-sanitize-")
        os.makedirs(out, exist_ok=True)
        print(os.path.abspath(ffibuilder.compile(tmpdir=out, verbose=False)))
    else:
        _drop_shadows(os.path.abspath(ffibuilder.compile(tmpdir=ROOT, verbose=False)))
