"""kernels._memory: arrays are recycled only when nothing outside the pool refers to them."""
import threading

import numpy as np

from kernels import _memory

BIG = (256, 256)  # 256 KB: above the size left to NumPy


def test_a_dropped_array_is_reused():
    a = _memory.empty(BIG)
    address = a.ctypes.data
    del a
    assert _memory.empty(BIG).ctypes.data == address


def test_a_held_array_or_view_is_never_handed_out_again():
    a = _memory.empty(BIG)
    b = _memory.empty(BIG)
    assert not np.shares_memory(a, b)
    view = b[3:, ::2]
    del b
    c = _memory.empty(BIG)
    assert not np.shares_memory(c, a) and not np.shares_memory(c, view)
    a.fill(1.0)
    view.fill(2.0)
    c.fill(3.0)
    assert (a == 1.0).all() and (view == 2.0).all()


def test_small_arrays_shapes_and_dtypes_are_kept_apart():
    small = _memory.empty((4, 4))
    assert small.shape == (4, 4) and small.dtype == np.float32
    f = _memory.empty(BIG)
    address = f.ctypes.data
    del f
    i = _memory.empty(BIG, np.int32)
    assert i.dtype == np.int32 and i.ctypes.data != address
    assert _memory.empty(BIG[::-1] + (1,)).shape == (256, 256, 1)


def test_threads_have_their_own_pools():
    a = _memory.empty(BIG)
    address = a.ctypes.data
    del a
    seen = []
    t = threading.Thread(target=lambda: seen.append(_memory.empty(BIG).ctypes.data))
    t.start()
    t.join()
    assert seen[0] != address


def test_the_pool_lets_go_past_its_limit(monkeypatch):
    monkeypatch.setattr(_memory, "LIMIT_BYTES", 3 * 256 * 256 * 4)
    _memory.clear()
    for rows in range(256, 266):
        _memory.empty((rows, 256))
    assert sum(a.nbytes for arrays in _memory._pool().values() for a in arrays) <= _memory.LIMIT_BYTES
    _memory.clear()
