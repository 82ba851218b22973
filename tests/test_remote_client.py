"""The client's reading of ``.npy`` answers straight into the array (no server needed)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from usidgpu.core.errors import FileProblem
from usidgpu.remote.client import read_npy


class Trickle(io.RawIOBase):
    """A stream that hands out at most ``step`` bytes per read, as a socket does."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self.step, len(self.data) - self.pos)
        buf[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n

    def read(self, n: int = -1) -> bytes:
        buf = bytearray(len(self.data) - self.pos if n < 0 else n)
        got = self.readinto(memoryview(buf))
        return bytes(buf[:got])


def npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


ARRAYS = {
    "float32 3-d": np.random.default_rng(0).standard_normal((4, 5, 6)).astype(np.float32),
    "big-endian": np.arange(24, dtype=">i4").reshape(4, 6),
    "complex": (np.arange(10) + 1j * np.arange(10)).astype(np.complex64),
    "compound": np.array([(1.0, 2), (3.5, -1)], dtype=[("amp", "<f4"), ("phase", "<i2")]),
    "0-d": np.array(7.5),
    "empty": np.zeros((0, 3), np.uint16),
    "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
}


@pytest.mark.parametrize("name", ARRAYS)
@pytest.mark.parametrize("step", [1, 7, 1 << 20])
def test_an_npy_answer_read_in_pieces_equals_np_load(name, step):
    a = ARRAYS[name]
    got = read_npy(Trickle(npy(a), step))
    expected = np.load(io.BytesIO(npy(a)))
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_an_answer_that_breaks_off_is_a_file_problem():
    data = npy(np.arange(1000, dtype=np.float64))
    with pytest.raises(FileProblem, match="ended after"):
        read_npy(Trickle(data[:-100], 64))


def test_an_array_of_python_objects_is_refused():
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": (2,)})
    with pytest.raises((FileProblem, ValueError)):
        read_npy(Trickle(b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + bytes(16), 64))
