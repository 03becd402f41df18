"""Redis's HyperLogLog, bit for bit, so an offline distinct count equals the online ``PFCOUNT``.

The live fold ``PFADD``s each value's canonical text (:func:`distinct_text`) into one sketch per
tile, and a read ``PFCOUNT``s the union of a window's tiles. A union of HyperLogLogs is the
register-wise maximum, which is the sketch of the union of the values: so the offline side
computes, per window, the maximum "run length" per register over the values in the window, and
the estimate from that register histogram, with Redis's own hash and estimator (Redis ≥ 5,
``hyperloglog.c``: MurmurHash64A seeded 0xadc83b19, 2^14 registers, Ertl's improved estimator).
Same values in, same integer out. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

P = 14
REGISTERS = 1 << P
Q = 64 - P
_M64 = (1 << 64) - 1
_MUL = 0xC6A4A7935BD1E995
_SEED = 0xADC83B19
_ALPHA_INF = 0.721347520444481703680  # 0.5 / ln(2)


def distinct_text(value: Any) -> str:
    """The text a value is counted by (what the fold ``PFADD``s): floats by their shortest repr."""
    return repr(value) if isinstance(value, float) else str(value)


def murmur64a(data: bytes, seed: int = _SEED) -> int:
    """MurmurHash64A, as Redis's ``hyperloglog.c`` has it (little-endian words)."""
    n = len(data)
    h = (seed ^ (n * _MUL)) & _M64
    end = n - (n & 7)
    for i in range(0, end, 8):
        k = int.from_bytes(data[i:i + 8], "little")
        k = (k * _MUL) & _M64
        k ^= k >> 47
        k = (k * _MUL) & _M64
        h ^= k
        h = (h * _MUL) & _M64
    tail = n & 7
    if tail:
        h ^= int.from_bytes(data[end:], "little")
        h = (h * _MUL) & _M64
    h ^= h >> 47
    h = (h * _MUL) & _M64
    h ^= h >> 47
    return h


def register_of(text: str) -> tuple[int, int]:
    """(register index, run length) a value's text sets, as Redis's ``hllPatLen``."""
    h = murmur64a(text.encode("utf-8"))
    index = h & (REGISTERS - 1)
    h = (h >> P) | (1 << Q)
    count = 1
    while not h & 1:
        count += 1
        h >>= 1
    return index, count


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        z_prev = z
        z += x * y
        y += y
        if z_prev == z:
            return z


def _tau(x: float) -> float:
    if x in (0.0, 1.0):
        return 0.0
    y, z = 1.0, 1 - x
    while True:
        x = math.sqrt(x)
        z_prev = z
        y *= 0.5
        z -= math.pow(1 - x, 2) * y
        if z_prev == z:
            return z / 3


def estimate(histogram: Mapping[int, int]) -> int:
    """Redis's ``hllCount`` from a register histogram: run length → how many registers hold it
    (registers not mentioned hold 0)."""
    m = float(REGISTERS)
    counts = [0] * (Q + 2)
    for rho, k in histogram.items():
        if not 1 <= rho <= Q + 1 or k < 0:
            raise ValueError(f"register run length {rho!r} (x{k}) is outside 1..{Q + 1}")
        counts[rho] += k
    counts[0] = REGISTERS - sum(counts[1:])
    if counts[0] < 0:
        raise ValueError(f"the histogram holds more than {REGISTERS} registers")
    z = m * _tau((m - counts[Q + 1]) / m)
    for j in range(Q, 0, -1):
        z += counts[j]
        z *= 0.5
    z += m * _sigma(counts[0] / m)
    e = _ALPHA_INF * m * m / z
    whole = math.floor(e)  # llroundl: halves away from zero (e > 0)
    return int(whole + 1 if e - whole >= 0.5 else whole)
