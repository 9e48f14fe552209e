"""Bounds-checked reader and writer: the only way natt decodes or encodes bytes."""

from __future__ import annotations

import struct

from natt.errors import LengthError, TruncatedError

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


class Reader:
    """Reads big-endian fields from a window of a bytes object, never past its end."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else end
        if not 0 <= start <= self._end <= len(data):
            raise LengthError(f"window {start}..{self._end} outside {len(data)} bytes")

    @property
    def pos(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def eof(self) -> bool:
        return self._pos >= self._end

    def _need(self, n: int, what: str) -> None:
        if n < 0 or self._pos + n > self._end:
            raise TruncatedError(f"{what}: need {n} bytes at offset {self._pos}, have {self.remaining}")

    def u8(self, what: str = "u8") -> int:
        self._need(1, what)
        v = self._data[self._pos]
        self._pos += 1
        return v

    def u16(self, what: str = "u16") -> int:
        self._need(2, what)
        (v,) = _U16.unpack_from(self._data, self._pos)
        self._pos += 2
        return v

    def u32(self, what: str = "u32") -> int:
        self._need(4, what)
        (v,) = _U32.unpack_from(self._data, self._pos)
        self._pos += 4
        return v

    def bytes(self, n: int, what: str = "bytes") -> bytes:
        self._need(n, what)
        v = self._data[self._pos : self._pos + n]
        self._pos += n
        return v

    def rest(self) -> bytes:
        v = self._data[self._pos : self._end]
        self._pos = self._end
        return v

    def sub(self, n: int, what: str = "sub-block") -> Reader:
        """A reader over the next n bytes; this reader moves past them."""
        self._need(n, what)
        r = Reader(self._data, self._pos, self._pos + n)
        self._pos += n
        return r


class Writer:
    """Appends big-endian fields; checks each value fits its field."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf)

    def u8(self, v: int) -> Writer:
        if not 0 <= v <= 0xFF:
            raise LengthError(f"{v} does not fit 8 bits")
        self._buf.append(v)
        return self

    def u16(self, v: int) -> Writer:
        if not 0 <= v <= 0xFFFF:
            raise LengthError(f"{v} does not fit 16 bits")
        self._buf += _U16.pack(v)
        return self

    def u32(self, v: int) -> Writer:
        if not 0 <= v <= 0xFFFFFFFF:
            raise LengthError(f"{v} does not fit 32 bits")
        self._buf += _U32.pack(v)
        return self

    def bytes(self, v: bytes) -> Writer:
        self._buf += v
        return self

    def patch_u16(self, offset: int, v: int) -> None:
        if not 0 <= v <= 0xFFFF:
            raise LengthError(f"{v} does not fit 16 bits")
        _U16.pack_into(self._buf, offset, v)

    def getvalue(self) -> bytes:
        return bytes(self._buf)
