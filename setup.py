from setuptools import setup

setup(cffi_modules=["kernels/_build_c.py:ffibuilder"])
