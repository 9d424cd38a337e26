"""Test helper: write dBase (DBF) tables and DATASUS `.dbc` files (PKWare DCL implode), so fixtures and hostile
inputs (bombs, truncations) can be made; pyreaddbc (the reader under test) ships no compressor.

The bit stream follows Mark Adler's `blast.c` (the decoder pyreaddbc uses): LSB-first bits; Huffman codes are
canonical, sent MSB-first with every bit inverted; literals uncoded (8 bits); window 4096 (dict 6).
"""

from __future__ import annotations

import datetime as dt
import struct
import zlib

# code-length tables of blast.c (compact form: low nibble = length, high nibble = repeats - 1)
_LENLEN = [2, 35, 36, 53, 38, 23]
_DISTLEN = [2, 20, 53, 230, 247, 151, 248]
_BASE = [3, 2, 4, 5, 6, 7, 8, 9, 10, 12, 16, 24, 40, 72, 136, 264]
_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
DICT = 6


def _codes(compact: list[int]) -> list[tuple[int, int]]:
    lengths = [b & 15 for b in compact for _ in range((b >> 4) + 1)]
    codes, code = [None] * len(lengths), 0
    for length in range(1, 14):
        for sym, ln in enumerate(lengths):
            if ln == length:
                codes[sym] = (code, length)
                code += 1
        code <<= 1
    return codes


_LENCODE, _DISTCODE = _codes(_LENLEN), _codes(_DISTLEN)


class _Bits:
    def __init__(self) -> None:
        self.out, self.acc, self.n = bytearray(), 0, 0

    def put(self, value: int, nbits: int) -> None:          # LSB first
        self.acc |= value << self.n
        self.n += nbits
        while self.n >= 8:
            self.out.append(self.acc & 0xFF)
            self.acc >>= 8
            self.n -= 8

    def huff(self, code: tuple[int, int]) -> None:           # MSB first, inverted
        value, length = code
        for i in range(length - 1, -1, -1):
            self.put(((value >> i) & 1) ^ 1, 1)

    def bytes(self) -> bytes:
        return bytes(self.out) + (bytes([self.acc & 0xFF]) if self.n else b"")


def _match(bits: _Bits, length: int, dist: int) -> None:
    bits.put(1, 1)
    sym = next(i for i in range(16) if _BASE[i] <= length < _BASE[i] + (1 << _EXTRA[i]))
    bits.huff(_LENCODE[sym])
    bits.put(length - _BASE[sym], _EXTRA[sym])
    d = dist - 1
    shift = 2 if length == 2 else DICT
    bits.huff(_DISTCODE[d >> shift])
    bits.put(d & ((1 << shift) - 1), shift)


def implode(data: bytes, *, repeat: int = 0) -> bytes:
    """DCL-implode `data` (greedy LZ77, window 4096, matches of 3..518); `repeat` appends that many bytes more,
    each a copy of the last byte (a compact decompression bomb)."""
    bits = _Bits()
    bits.put(0, 8)                      # literals uncoded
    bits.put(DICT, 8)
    window, heads, i, n = 64 << DICT, {}, 0, len(data)
    while i < n:
        best_len, best_dist = 0, 0
        if i + 3 <= n:
            for j in reversed(heads.get(data[i:i + 3], [])[-16:]):
                if i - j > window:
                    break
                k = 3
                while k < 518 and i + k < n and data[j + k] == data[i + k]:
                    k += 1
                if k > best_len:
                    best_len, best_dist = k, i - j
        if best_len >= 3:
            _match(bits, best_len, best_dist)
            step = best_len
        else:
            bits.put(0, 1)
            bits.put(data[i], 8)
            step = 1
        for p in range(i, min(i + step, n - 2)):
            heads.setdefault(data[p:p + 3], []).append(p)
        i += step
    while repeat > 0:
        chunk = min(repeat, 518)
        if chunk < 3:
            bits.put(0, 1)
            bits.put(data[-1] if data else 0, 8)
            repeat -= 1
            continue
        _match(bits, chunk, 1)
        repeat -= chunk
    bits.put(1, 1)                      # end code: length 519
    bits.huff(_LENCODE[15])
    bits.put(255, 8)
    return bits.bytes()


def dbf(fields: list[tuple[str, str, int]], rows: list[list[str | None]], *, deleted: set[int] = frozenset(),
        n_records: int | None = None, encoding: str = "latin-1") -> bytes:
    """A dBase III table: fields (name, type C/D/N, length); values as text (D: YYYY-MM-DD or None)."""
    header_len = 32 + 32 * len(fields) + 1
    record_len = 1 + sum(length for _, _, length in fields)
    today = dt.date(2024, 12, 31)
    head = struct.pack("<BBBBIHH20x", 0x03, today.year - 1900, today.month, today.day,
                       len(rows) if n_records is None else n_records, header_len, record_len)
    for name, kind, length in fields:
        head += struct.pack("<11sc4xBB14x", name.encode("ascii"), kind.encode("ascii"), length, 0)
    head += b"\x0d"
    body = bytearray()
    for i, row in enumerate(rows, start=1):
        body += b"*" if i in deleted else b" "
        for (name, kind, length), value in zip(fields, row):
            text = "" if value is None else (value.replace("-", "") if kind == "D" else value)
            cell = text.encode(encoding)[:length]
            body += cell.rjust(length) if kind == "N" else cell.ljust(length)
    return head + bytes(body) + b"\x1a"


def dbc(dbf_bytes: bytes, *, repeat: int = 0) -> bytes:
    """DBF -> .dbc as DATASUS writes it: the DBF header uncompressed (its last byte not 0x0D), a CRC32, then
    the imploded records."""
    header_len = struct.unpack_from("<H", dbf_bytes, 8)[0]
    header = bytearray(dbf_bytes[:header_len])
    header[-1] = 0x00
    return bytes(header) + struct.pack("<I", zlib.crc32(dbf_bytes)) + implode(dbf_bytes[header_len:], repeat=repeat)
