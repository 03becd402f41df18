"""Athena's SQL (Trino's dialect) translated to DuckDB's, for the Athena-compatible API. Pure.

Translation is sqlglot's (Trino in, DuckDB out): ``timestamp '...'`` literals,
``from_iso8601_timestamp``, quoted identifiers, window functions such as ``row_number() OVER``,
``NOT is_deleted`` and most of Trino's scalar functions. What is refused, as Athena refuses a
request it cannot take (``InvalidRequestException``, raised here as :class:`AthenaSqlError`):
- text that does not parse as Trino SQL, and more than one statement;
- anything but a query (``SELECT``, ``WITH``, ``VALUES``, set operations): DDL, DML, ``SHOW``...;
- Iceberg time travel (``FOR TIMESTAMP AS OF``, ``FOR VERSION AS OF``);
- table functions and anything sqlglot reports it cannot express in DuckDB.
Names are resolved later (:func:`render`): each table a query reads is ``[catalog.]database.table``
or a bare ``table`` of the request's database; an unknown one fails the query, as in Athena.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, TokenError, UnsupportedError

_QUERY_TYPES = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Values, exp.Subquery)
CATALOG = "awsdatacatalog"


class AthenaSqlError(ValueError):
    """A query the Athena-compatible API does not take; the message says what and why."""


@dataclass(frozen=True)
class TableRef:
    """A table a query reads, as named: its database (the request's default if not given) and name."""

    database: str
    table: str

    def qualified(self) -> str:
        return f"{CATALOG}.{self.database}.{self.table}"


@dataclass(frozen=True)
class ParsedQuery:
    """A query accepted for running: its syntax tree and the tables it reads."""

    tree: exp.Expression
    tables: tuple[TableRef, ...]


def _strip(query: str) -> str:
    text = query.strip()
    while text.endswith(";"):  # Athena accepts a trailing ';'
        text = text[:-1].rstrip()
    return text


def parse(query: str, default_database: str | None) -> ParsedQuery:
    """Check ``query`` and find the tables it reads; AthenaSqlError if it is not taken."""
    text = _strip(query)
    if not text:
        raise AthenaSqlError("the query is empty; send one SELECT statement")
    try:
        trees = [t for t in sqlglot.parse(text, read="trino") if t is not None]
    except (ParseError, TokenError) as exc:
        raise AthenaSqlError(f"the query is not valid SQL: {_first_line(exc)}") from None
    if len(trees) != 1:
        raise AthenaSqlError(f"send exactly one statement per query; got {len(trees)}")
    tree = trees[0]
    if not isinstance(tree, _QUERY_TYPES):
        first = text.split(None, 1)[0][:40]
        raise AthenaSqlError(f"only queries (SELECT, WITH) are answered here; a statement starting {first!r} is "
                             "not one (the offline tables are written by featurestream's sink, not by SQL)")
    for node in tree.find_all(exp.Version):
        raise AthenaSqlError(f"Iceberg time travel ({node.sql(dialect='trino')[:60]}) is not translated; use "
                             "`featurestream query --as-of-commit`, or filter on the event time")
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    refs: list[TableRef] = []
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            raise AthenaSqlError(f"table functions are not translated ({table.sql(dialect='trino')[:60]}); read "
                                 "feature groups' tables by name")
        name = table.name.lower()
        if not table.db and name in ctes:
            continue
        catalog = table.catalog.lower()
        if catalog and catalog != CATALOG:
            raise AthenaSqlError(f"catalog {table.catalog!r} is not known; the feature groups' tables are in "
                                 f"{CATALOG!r}")
        database = table.db.lower() or (default_database or "").lower()
        if not database:
            raise AthenaSqlError(f"table {table.name!r} names no database and the request gives none "
                                 "(QueryExecutionContext.Database); write sagemaker_featurestore.<table>")
        refs.append(TableRef(database, name))
    try:  # sqlglot says here what it cannot express in DuckDB
        tree.sql(dialect="duckdb", unsupported_level=ErrorLevel.RAISE)
    except UnsupportedError as exc:
        raise AthenaSqlError(f"the query uses SQL that is not translated: {_first_line(exc)}") from None
    return ParsedQuery(tree, tuple(dict.fromkeys(refs)))


def render(parsed: ParsedQuery, views: Mapping[TableRef, str], default_database: str | None) -> str:
    """DuckDB SQL for ``parsed``, each table read from the view ``views`` names for it."""
    tree = parsed.tree.copy()
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    for table in list(tree.find_all(exp.Table)):
        if not table.db and table.name.lower() in ctes:
            continue
        ref = TableRef(table.db.lower() or (default_database or "").lower(), table.name.lower())
        alias = table.alias or table.name
        new = exp.Table(this=exp.to_identifier(views[ref], quoted=True),
                        alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True)))
        table.replace(new)
    return tree.sql(dialect="duckdb")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


__all__ = ["CATALOG", "AthenaSqlError", "ParsedQuery", "TableRef", "parse", "render"]
