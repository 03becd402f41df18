"""Time to live of online records: ExpiresAt = EventTime + TTL (group default, overridable per record)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from schemas.errors import DefinitionError

UNIT_SECONDS: dict[str, int] = {
    "Seconds": 1, "Minutes": 60, "Hours": 3600, "Days": 86400, "Weeks": 7 * 86400,
}
_SUFFIX_UNIT = {"s": "Seconds", "m": "Minutes", "h": "Hours", "d": "Days", "w": "Weeks"}
# Expiry must stay inside the event-time range (year < 10000), so no TTL longer than that.
MAX_TTL_SECONDS = 253_402_300_800
_TTL_RE = re.compile(r"\s*([0-9]+)\s*([smhdw])\s*")


@dataclass(frozen=True, slots=True)
class Ttl:
    value: int
    unit: str  # Seconds | Minutes | Hours | Days | Weeks

    def __post_init__(self) -> None:
        if self.unit not in UNIT_SECONDS:
            raise DefinitionError(f"TTL unit {self.unit!r} is not one of {', '.join(UNIT_SECONDS)}",
                                  value=self.unit)
        if type(self.value) is not int or self.value <= 0:
            raise DefinitionError(f"TTL value must be a positive integer; got {self.value!r}",
                                  value=self.value)
        if self.value * UNIT_SECONDS[self.unit] > MAX_TTL_SECONDS:
            raise DefinitionError(f"TTL {self.value} {self.unit} is too long; at most "
                                  f"{MAX_TTL_SECONDS} seconds", value=self.value)

    @property
    def seconds(self) -> int:
        return self.value * UNIT_SECONDS[self.unit]

    def to_api(self) -> dict[str, Any]:
        return {"Unit": self.unit, "Value": self.value}

    @classmethod
    def from_api(cls, d: Any) -> Ttl:
        if not isinstance(d, dict) or "Unit" not in d or "Value" not in d:
            raise DefinitionError(f'TTL must look like {{"Unit": "Days", "Value": 7}}; got {d!r}', value=d)
        return cls(d["Value"], d["Unit"])

    def __str__(self) -> str:
        return f"{self.value}{self.unit[0].lower()}"


def parse_ttl(text: str) -> Ttl:
    """Parse ``30s``, ``15m``, ``12h``, ``7d`` or ``2w`` (CLI form)."""
    m = _TTL_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise DefinitionError(
            f"invalid TTL {text!r}: use a positive integer and a unit, s (seconds), m (minutes), "
            "h (hours), d (days) or w (weeks), e.g. 30s, 15m, 12h, 7d, 2w", value=text)
    value = int(m.group(1))
    if value == 0:
        raise DefinitionError(f"invalid TTL {text!r}: must be greater than zero", value=text)
    return Ttl(value, _SUFFIX_UNIT[m.group(2)])
