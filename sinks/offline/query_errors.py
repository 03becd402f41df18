"""Typed errors of offline queries (SQL, snapshot, point-in-time join).

Each names what was asked for and what would have been valid, so a user can fix the call
without reading our code.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.errors import FeatureStoreError, GroupNotFoundError, ValidationError


def _listing(names: Iterable[str]) -> str:
    names = sorted(names)
    return ", ".join(repr(n) for n in names) if names else "(none)"


class QueryError(FeatureStoreError, ValueError):
    """A SQL statement over the offline tables failed (syntax, types, missing column...)."""

    def __init__(self, message: str, *, sql: str | None = None) -> None:
        super().__init__(message)
        self.sql = sql


class UnknownTableError(QueryError, LookupError):
    """The SQL refers to a table that is neither a known group nor a DuckDB built-in."""

    def __init__(self, table: str, known: Iterable[str], *, sql: str | None = None) -> None:
        super().__init__(
            f"table {table!r} is not a feature group of this query; known groups: {_listing(known)} "
            f"(quote names with '-' as \"my-group\")", sql=sql)
        self.table = table


class UnknownGroupError(GroupNotFoundError):
    """A snapshot or point-in-time join names a group the query was not given."""

    def __init__(self, group: str, known: Iterable[str]) -> None:
        super().__init__(group)
        self.args = (f"feature group {group!r} is not known to this query; known groups: {_listing(known)}",)


class UnknownFeatureError(ValidationError, LookupError):
    """A point-in-time join asks for a feature the group does not define."""

    def __init__(self, group: str, feature: str, known: Iterable[str]) -> None:
        super().__init__(f"feature group {group!r} has no feature {feature!r}; its features are "
                         f"{_listing(known)} (or use '{group}:*')", group=group, feature=feature,
                         value=feature)


class EntityRowsError(ValidationError):
    """The entity rows of a point-in-time join are malformed (missing/ill-typed columns, null times)."""
