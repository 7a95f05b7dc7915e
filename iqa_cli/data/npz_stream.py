"""NPZ files written member by member, and read back without loading them.

`NpzStreamWriter` writes an uncompressed (stored) ZIP64 archive of .npy members. A large array can
be streamed: the .npy header (with the final shape, known in advance) goes first, then the data in
pieces, so the array never has to sit in memory. The result is an ordinary .npz that `numpy.load`
reads.

`member_memmap` maps a stored member straight from the file (no copy, random access by index),
which is what makes an NPZ cache usable for datasets larger than RAM. Compressed members (from other
tools) cannot be mapped; the caller then loads them.
"""

from __future__ import annotations

import contextlib
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # the 30-byte ZIP local file header
_LOCAL_MAGIC = b"PK\x03\x04"


class ArrayStream:
    """Receives the data of one streamed array, in C order, in any number of pieces."""

    def __init__(self, handle: IO[bytes], expected_bytes: int, name: str) -> None:
        self._handle: IO[bytes] | None = handle
        self._expected = expected_bytes
        self._written = 0
        self._name = name

    def write(self, piece: np.ndarray) -> None:
        assert self._handle is not None, "stream already closed"
        data = np.ascontiguousarray(piece)
        self._handle.write(data.data.cast("B"))
        self._written += data.nbytes

    def close(self) -> None:
        """Finish the member; it must hold exactly the bytes its header promised."""
        if self._handle is None:
            return
        if self._written != self._expected:
            self.abort()
            raise RuntimeError(f"npz member {self._name}: wrote {self._written} bytes, expected {self._expected}")
        handle, self._handle = self._handle, None
        handle.close()

    def abort(self) -> None:
        """Close the member as it is (only for a file that will be thrown away)."""
        if self._handle is not None:
            handle, self._handle = self._handle, None
            handle.close()


class NpzStreamWriter:
    """Write an .npz member by member (stored, ZIP64). Use as a context manager or call `close()`."""

    def __init__(self, path: str | Path) -> None:
        self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self._open: ArrayStream | None = None

    def write_array(self, name: str, array: np.ndarray) -> None:
        """One whole (small) array as member `name` (numpy.load key `name`)."""
        array = np.asanyarray(array)
        with self._zip.open(f"{name}.npy", "w", force_zip64=True) as handle:
            np.lib.format.write_array(handle, array, allow_pickle=False)

    def begin_array(self, name: str, shape: tuple[int, ...], dtype: np.dtype | str) -> ArrayStream:
        """Start member `name` with its final shape; write its data through the stream, then close it."""
        dtype = np.dtype(dtype)
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
        handle = self._zip.open(f"{name}.npy", "w", force_zip64=True)
        np.lib.format.write_array_header_2_0(handle, header)
        self._open = ArrayStream(handle, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, name)
        return self._open

    @contextlib.contextmanager
    def stream_array(self, name: str, shape: tuple[int, ...], dtype: np.dtype | str) -> Iterator[ArrayStream]:
        """`begin_array` as a context manager: closed (and checked) on success, aborted on error."""
        stream = self.begin_array(name, shape, dtype)
        try:
            yield stream
        except BaseException:
            stream.abort()
            raise
        stream.close()

    def close(self) -> None:
        """Close the archive; a member still open is aborted (the file is then not a valid cache). The
        archive's file is closed even where a refused write (a full disk) fails the abort or the close."""
        stream, self._open = self._open, None
        try:
            if stream is not None:
                stream.abort()
        finally:
            self._zip.close()

    def __enter__(self) -> NpzStreamWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def member_memmap(path: str | Path, info: zipfile.ZipInfo) -> np.ndarray | None:
    """A read-only memory map of a stored .npy member, or None if it cannot be mapped (compressed)."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        fields = _LOCAL_HEADER.unpack(handle.read(_LOCAL_HEADER.size))
        if fields[0] != _LOCAL_MAGIC:
            raise ValueError(f"bad local header for member {info.filename}")
        name_len, extra_len = fields[-2], fields[-1]
        handle.seek(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        offset = handle.tell()
    if dtype.hasobject:
        return None
    if int(np.prod(shape, dtype=np.int64)) == 0:
        return np.empty(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset, order="F" if fortran else "C")
