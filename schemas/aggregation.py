"""The definition of an aggregation group: ``function(source feature) over window``, keyed by a
source feature. Pure: parsing, the registry's JSON form, and the checks that need no source group
(the checks against the source group are in ``schemas/aggregation_group.py``).

CLI/JSON text form of one source feature's aggregates::

    amount:sum,count,mean@10m,1h,7d     every function over every window (9 aggregates)
    merchant:distinct@1d
    amount:last_n(10)                   no window: lifetime
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from schemas.errors import DefinitionError
from schemas.names import validate_name
from schemas.tiles import DAY_NS, HOUR_NS, MINUTE_NS, window_label, window_problem

DEFAULT_LATENESS_NS = 7 * DAY_NS
MAX_LATENESS_NS = 90 * DAY_NS
MAX_LAST_N = 100
MAX_AGGREGATES = 500
SPEC_FORMAT = 1


class Function(StrEnum):
    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    STDDEV = "stddev"      # population standard deviation (stddev_pop)
    LAST_N = "last_n"
    DISTINCT = "distinct"  # approximate: Redis HyperLogLog, standard error 0.81%


NUMERIC_FUNCTIONS = frozenset({Function.SUM, Function.MEAN, Function.MIN, Function.MAX, Function.STDDEV})

_UNITS = {"m": MINUTE_NS, "h": HOUR_NS, "d": DAY_NS}
_WINDOW_RE = re.compile(r"(\d{1,6})([mhd])")
_FUNCTION_RE = re.compile(r"([a-z_]+)(?:\((\d{1,4})\))?")


def parse_window(text: object, *, group: str | None = None, feature: str | None = None) -> int | None:
    """``10m``/``1h``/``7d`` → nanoseconds; ``lifetime`` → None. DefinitionError saying why not."""
    where = _where(group, feature)
    if text == "lifetime":
        return None
    m = _WINDOW_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise DefinitionError(f"{where}window {text!r} is not a number with a unit m, h or d (10m, 1h, 7d) "
                              "or 'lifetime'", group=group, feature=feature, value=text)
    ns = int(m.group(1)) * _UNITS[m.group(2)]
    problem = window_problem(ns)
    if problem:
        raise DefinitionError(f"{where}window {text!r}: {problem}", group=group, feature=feature, value=text)
    return ns


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One output feature: ``function(feature)`` over ``window_ns`` (None: lifetime)."""

    feature: str
    function: Function
    window_ns: int | None
    n: int | None = None  # last_n only

    def __post_init__(self) -> None:
        validate_name(self.feature, "feature")
        try:
            object.__setattr__(self, "function", Function(self.function))
        except ValueError:
            raise DefinitionError(
                f"feature {self.feature!r}: aggregate function {self.function!r} is not one of "
                f"{', '.join(f.value for f in Function)}", feature=self.feature, value=self.function) from None
        if self.window_ns is not None:
            problem = window_problem(self.window_ns)
            if problem:
                raise DefinitionError(f"feature {self.feature!r}: window of {self.window_ns!r} ns: {problem}",
                                      feature=self.feature, value=self.window_ns)
        if self.function is Function.LAST_N:
            if type(self.n) is not int or not 1 <= self.n <= MAX_LAST_N:
                raise DefinitionError(f"feature {self.feature!r}: last_n needs N from 1 to {MAX_LAST_N}, as in "
                                      f"last_n(10); got {self.n!r}", feature=self.feature, value=self.n)
        elif self.n is not None:
            raise DefinitionError(f"feature {self.feature!r}: only last_n takes a number; {self.function.value} "
                                  f"got ({self.n!r})", feature=self.feature, value=self.n)

    @property
    def output_name(self) -> str:
        fn = f"last{self.n}" if self.function is Function.LAST_N else self.function.value
        return f"{self.feature}_{fn}_{window_label(self.window_ns)}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"feature": self.feature, "function": self.function.value,
                             "window": window_label(self.window_ns)}
        if self.n is not None:
            d["n"] = self.n
        return d

    @classmethod
    def from_dict(cls, d: Any, *, group: str | None = None) -> Aggregate:
        if not isinstance(d, dict) or not isinstance(d.get("feature"), str) or "function" not in d:
            raise DefinitionError(f"{_where(group, None)}an aggregate must be an object like "
                                  f'{{"feature": "amount", "function": "sum", "window": "1h"}}; got {d!r:.120}',
                                  group=group, value=d)
        window = parse_window(d.get("window", "lifetime"), group=group, feature=d["feature"])
        return cls(d["feature"], d["function"], window, d.get("n"))


@dataclass(frozen=True)
class AggregationSpec:
    """What an aggregation group computes: ``aggregates`` of the events of ``source``, per value of
    its feature ``by``. Events more than ``lateness_ns`` behind the latest event time seen for their
    key (per source partition) are dead-lettered."""

    source: str
    by: str
    aggregates: tuple[Aggregate, ...]
    lateness_ns: int = DEFAULT_LATENESS_NS
    # The scalar type of each aggregated source feature ("Integral", ...), recorded when the group is
    # built against its source (schemas/aggregation_group.py): the fold keeps Integral sums exact.
    types: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_name(self.source, "source feature group")
        validate_name(self.by, "feature")
        aggs = tuple(a if isinstance(a, Aggregate) else Aggregate.from_dict(a) for a in self.aggregates)
        object.__setattr__(self, "aggregates", aggs)
        if not aggs:
            raise DefinitionError(f"an aggregation over {self.source!r} needs at least one aggregate, e.g. "
                                  "'amount:sum@1h'", value=self.aggregates)
        if len(aggs) > MAX_AGGREGATES:
            raise DefinitionError(f"an aggregation over {self.source!r} has {len(aggs)} aggregates; at most "
                                  f"{MAX_AGGREGATES}", value=len(aggs))
        seen: set[str] = set()
        for a in aggs:
            if a.output_name in seen:
                raise DefinitionError(f"aggregate {a.output_name!r} is defined twice", feature=a.output_name,
                                      value=a.output_name)
            seen.add(a.output_name)
        if type(self.lateness_ns) is not int or not 0 <= self.lateness_ns <= MAX_LATENESS_NS \
                or self.lateness_ns % 1_000_000_000:
            raise DefinitionError(f"allowed lateness must be whole seconds from 0 to 90 days (given in ns); got "
                                  f"{self.lateness_ns!r}",
                                  value=self.lateness_ns)

    @property
    def windows_ns(self) -> tuple[int, ...]:
        """The distinct sliding windows (lifetime excluded)."""
        return tuple(sorted({a.window_ns for a in self.aggregates if a.window_ns is not None}))

    @property
    def has_lifetime(self) -> bool:
        return any(a.window_ns is None for a in self.aggregates)

    def to_dict(self) -> dict[str, Any]:
        return {"format": SPEC_FORMAT, "source": self.source, "by": self.by,
                "allowed_lateness_s": self.lateness_ns // 1_000_000_000,
                "aggregates": [a.to_dict() for a in self.aggregates], "types": dict(self.types)}

    @classmethod
    def from_dict(cls, d: Any, *, group: str | None = None) -> AggregationSpec:
        if not isinstance(d, dict):
            raise DefinitionError(f"{_where(group, None)}an aggregation must be a JSON object; got {d!r:.120}",
                                  group=group, value=d)
        missing = [k for k in ("source", "by", "aggregates") if k not in d]
        if missing:
            raise DefinitionError(f"{_where(group, None)}the aggregation lacks {', '.join(missing)}",
                                  group=group, value=d)
        seconds = d.get("allowed_lateness_s", DEFAULT_LATENESS_NS // 1_000_000_000)
        if type(seconds) is not int:
            raise DefinitionError(f"{_where(group, None)}allowed_lateness_s must be a whole number of seconds; "
                                  f"got {seconds!r}", group=group, value=seconds)
        lateness = seconds * 1_000_000_000
        aggs = d["aggregates"]
        if not isinstance(aggs, list):
            raise DefinitionError(f"{_where(group, None)}aggregates must be a list; got {aggs!r:.120}",
                                  group=group, value=aggs)
        try:
            return cls(d["source"], d["by"], tuple(Aggregate.from_dict(a, group=group) for a in aggs), lateness,
                       dict(d.get("types") or {}))
        except DefinitionError as exc:
            if group is None or exc.group is not None:
                raise
            raise DefinitionError(f"feature group {group!r}: {exc}", group=group, feature=exc.feature,
                                  value=exc.value) from None


def parse_aggregates(texts: Iterable[str], *, group: str | None = None) -> tuple[Aggregate, ...]:
    """Aggregates from the CLI text form (module docstring): ``feature:fn[,fn...][@window[,window...]]``."""
    out: list[Aggregate] = []
    for text in texts:
        if not isinstance(text, str) or ":" not in text:
            raise DefinitionError(f"{_where(group, None)}aggregate {text!r} must look like "
                                  "'amount:sum,mean@10m,1h' or 'amount:last_n(10)'", group=group, value=text)
        feature, _, rest = text.partition(":")
        functions_text, at, windows_text = rest.partition("@")
        windows = [parse_window(w.strip(), group=group, feature=feature) for w in windows_text.split(",")] \
            if at else [None]
        for fn_text in functions_text.split(","):
            m = _FUNCTION_RE.fullmatch(fn_text.strip())
            if m is None:
                raise DefinitionError(f"{_where(group, feature)}function {fn_text!r} is not one of "
                                      f"{', '.join(f.value for f in Function)} (last_n as last_n(10))",
                                      group=group, feature=feature, value=fn_text)
            n = int(m.group(2)) if m.group(2) is not None else None
            if m.group(1) == Function.LAST_N and n is None:
                raise DefinitionError(f"{_where(group, feature)}last_n needs N, as in last_n(10)", group=group,
                                      feature=feature, value=fn_text)
            for w in windows:
                try:
                    out.append(Aggregate(feature, m.group(1), w, n))
                except DefinitionError as exc:
                    if group is None:
                        raise
                    raise DefinitionError(f"feature group {group!r}: {exc}", group=group, feature=exc.feature,
                                          value=exc.value) from None
    return tuple(out)


def _where(group: str | None, feature: str | None) -> str:
    parts = []
    if group:
        parts.append(f"feature group {group!r}")
    if feature:
        parts.append(f"feature {feature!r}")
    return (", ".join(parts) + ": ") if parts else ""
