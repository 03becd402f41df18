"""What one access key may do: actions (read, write, admin) on feature-group name patterns. Pure.

The credentials file gives each key its permissions (``credentials.py`` parses them); this
module answers "may this key do this action to this group?". A key whose section names no
permission keeps full access, as every key had before permissions existed.

Patterns are group names in which ``*`` stands for any run of characters (also none):
``orders-*``, ``*-features``, ``*``. Matching is case-sensitive, like group names themselves
(``Orders`` and ``orders`` are two groups, with two topics and two sets of Redis keys).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Action(StrEnum):
    READ = "read"  # GetRecord, BatchGetRecord, DescribeFeatureGroup, ListFeatureGroups
    WRITE = "write"  # PutRecord, DeleteRecord, BatchWriteRecord
    ADMIN = "admin"  # CreateFeatureGroup, UpdateFeatureGroup, DeleteFeatureGroup


# Every operation the server answers, and the action it needs on the groups it names.
OPERATION_ACTIONS: Mapping[str, Action] = {
    "GetRecord": Action.READ, "BatchGetRecord": Action.READ,
    "PutRecord": Action.WRITE, "DeleteRecord": Action.WRITE, "BatchWriteRecord": Action.WRITE,
    "CreateFeatureGroup": Action.ADMIN, "UpdateFeatureGroup": Action.ADMIN, "DeleteFeatureGroup": Action.ADMIN,
    "DescribeFeatureGroup": Action.READ, "ListFeatureGroups": Action.READ,
    "ListRecords": Action.READ, "UpdateRecord": Action.WRITE,
}

# A pattern is a group name with '*' wildcards: the name characters and '*', nothing else, so a
# pattern can never mean more than its author sees (no regex or fnmatch '[...]' classes).
_PATTERN_RE = re.compile(r"[A-Za-z0-9_*-]{1,64}")


class PatternError(ValueError):
    """A group-name pattern that is not one; the message says what a pattern may hold."""


def _compile(pattern: str) -> re.Pattern[str]:
    if not _PATTERN_RE.fullmatch(pattern):
        raise PatternError(f"{pattern[:80]!r} is not a group-name pattern: use 1-64 letters, digits, '-', '_' "
                           "and '*' (any run of characters), e.g. orders-* or *")
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.ASCII)


@dataclass(frozen=True)
class Permissions:
    """``grants`` maps each action to the patterns it is allowed on; ``full`` allows everything."""

    grants: Mapping[Action, tuple[str, ...]] = field(default_factory=dict)
    full: bool = False
    _compiled: Mapping[Action, tuple[re.Pattern[str], ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compiled = {Action(a): tuple(_compile(p) for p in patterns) for a, patterns in self.grants.items()}
        object.__setattr__(self, "_compiled", compiled)

    @classmethod
    def everything(cls) -> Permissions:
        """Full access: the configured AWS_ACCESS_KEY_ID pair, keys with no permission lines, --no-auth."""
        return cls(full=True)

    @classmethod
    def of(cls, grants: Mapping[Action | str, Iterable[str]]) -> Permissions:
        """``{"read": ["orders-*"], "write": []}``: exactly these; actions not given are not allowed."""
        return cls(grants={Action(a): tuple(p) for a, p in grants.items()})

    def allows(self, action: Action, group: str) -> bool:
        if self.full:
            return True
        return any(p.fullmatch(group) for p in self._compiled.get(action, ()))

    def describe(self) -> str:
        """One line for the server's start-up log: what this key may do."""
        if self.full:
            return "full access"
        parts = [f"{a.value} {', '.join(self.grants[a])}" for a in Action if self.grants.get(a)]
        return "; ".join(parts) or "nothing (every request is refused)"


def refusal(action: Action, groups: Iterable[str], operation: str) -> str:
    """The AccessForbidden message: which operation, which action, which groups (a few, sorted)."""
    names = sorted(set(groups))
    shown = ", ".join(repr(n) for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (f"{operation} needs the {action.value!r} permission on feature group{'s' if len(names) > 1 else ''} "
            f"{shown}, which this access key does not have")


__all__ = ["OPERATION_ACTIONS", "Action", "PatternError", "Permissions", "refusal"]
