"""Merging tile states into the value of an aggregate. Pure; the state kinds and their text form are
the fold script's (``sinks/online/aggregate_fold.lua``), parsed by ``sinks/online/aggregates.py``.

Precision:

- count, min, max, last_n, and every function of an Integral feature are exact: Integral sums and
  sums of squares are exact integers (the script adds decimal text), mean is the correctly
  rounded quotient, stddev the square root of the exact variance (correct to about 1 ulp).
- Fractional sums: each tile keeps a Neumaier-compensated sum (sum, compensation) and a read adds
  every part with ``math.fsum``. The error is below about 2ε·|sum| + n·ε²·Σ|x| (ε = 2⁻⁵³): within
  1e-12 relative unless the values cancel almost exactly. mean = that sum / n.
- Fractional stddev: Welford per tile, merged with Chan's formula: relative error of order n·ε
  for well-conditioned data (it grows when the deviations are tiny next to the mean).
- distinct: Redis HyperLogLog, standard error 0.81% (at most 12 KiB per tile sketch).

stddev is the population standard deviation (``stddev_pop``): 0.0 for one event.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, NamedTuple

from schemas.aggregation import Aggregate, Function

# The state kinds a source feature needs, by the functions over it (sinks/online/aggregate_fold.lua).
KIND_INTEGRAL = "i"
KIND_FRACTIONAL = "f"
KIND_COUNT = "n"
KIND_LAST = "l"
KIND_DISTINCT = "d"


class NumericTile(NamedTuple):
    """One tile of a numeric (or count-only) state. Integral: ``total`` and ``squares`` exact ints;
    Fractional: ``total`` + ``comp`` is the compensated sum, ``mean``/``m2`` Welford's. A named tuple:
    a read of 15 aggregates over 90 days builds about 170 of these, and a frozen dataclass's
    ``__init__`` was a third of that read's CPU."""

    n: int
    total: int | float = 0
    comp: float = 0.0
    squares: int = 0
    mean: float = 0.0
    m2: float = 0.0
    low: int | float | None = None
    high: int | float | None = None


LastItem = tuple[int, int, int, Any]  # (event time ns, partition, offset, value)


def numeric_value(agg: Aggregate, tiles: Sequence[NumericTile], integral: bool, *, n: int | None = None) -> Any:
    """The value of a count/sum/mean/min/max/stddev over ``tiles``; None when absent (empty window).
    ``n``: the tiles' event count, when the caller already has it (several functions over one window)."""
    if n is None:
        n = sum(t.n for t in tiles)
    fn = agg.function
    if fn is Function.COUNT:
        return n
    if fn is Function.SUM:
        return _sum(tiles, integral) if n else (0 if integral else 0.0)
    if n == 0:
        return None
    if fn is Function.MEAN:
        total = _sum(tiles, integral)
        return float(Fraction(total, n)) if integral else total / n
    if fn is Function.MIN:
        return min(t.low for t in tiles if t.n)  # type: ignore[type-var]
    if fn is Function.MAX:
        return max(t.high for t in tiles if t.n)  # type: ignore[type-var]
    if fn is Function.STDDEV:
        if integral:
            s, q = sum(int(t.total) for t in tiles), sum(t.squares for t in tiles)
            return _sqrt(Fraction(n * q - s * s, n * n))
        count, mean, m2 = 0, 0.0, 0.0
        for t in tiles:  # Chan et al.'s pairwise combination of (n, mean, M2)
            if not t.n:
                continue
            total = count + t.n
            delta = t.mean - mean
            mean += delta * t.n / total
            m2 += t.m2 + delta * delta * count * t.n / total
            count = total
        return math.sqrt(max(m2, 0.0) / count)
    raise ValueError(f"{fn.value} is not a numeric function")


def _sum(tiles: Sequence[NumericTile], integral: bool) -> int | float:
    if integral:
        return sum(int(t.total) for t in tiles)
    return math.fsum(part for t in tiles for part in (t.total, t.comp))


def _sqrt(x: Fraction) -> float:
    """sqrt of an exact non-negative rational, within about 1 ulp."""
    if x <= 0:
        return 0.0
    # Scale so the integer square root carries 60+ significant bits, then one rounding.
    shift = max(0, 120 - (x.numerator.bit_length() - x.denominator.bit_length()))
    shift += shift % 2
    root = math.isqrt((x.numerator << shift) // x.denominator)
    return math.ldexp(root, -shift // 2)


def last_value(agg: Aggregate, tiles: Sequence[Sequence[LastItem]]) -> list[Any] | None:
    """The last ``agg.n`` values, oldest first, by (event time, partition, offset); None if none."""
    items = sorted((item for tile in tiles for item in tile), key=lambda i: (i[0], i[1], i[2]))
    if not items:
        return None
    assert agg.n is not None
    return [value for _et, _p, _o, value in items[-agg.n:]]
