"""BatchGetRecord with a bounded answer: each record read once, the answer at most ``max_bytes``.

A request may name up to 100 entries of up to 100 identifiers; without a bound, 100 entries
naming the same group and the same 100 ids made one 97 KB request answer 10,000 records
(202 MB, and the worker grew by a gigabyte). So:
- identifiers are deduplicated across entries: an entry is (group, set of FeatureNames), and an
  identifier asked twice for the same entry is read and answered once;
- records are read in rounds sized from the records seen so far, and added to the answer while
  it stays within ``max_bytes`` (everything counted: records, errors, and room kept for the
  unprocessed list); what does not fit is returned in ``UnprocessedIdentifiers``, which the API
  defines for this ("re-ask for these"), in entries a client can send back as they are;
- a response always holds at least one record (or per-record error) when one was found, so
  re-asking makes progress even if one record were larger than the bound. Errors known before
  reading (unknown groups, malformed identifiers) are always answered; their size follows from
  the request's, which ``--max-body-bytes`` bounds.
Every identifier asked for is answered exactly once: in ``Records``, in ``Errors``, in
``UnprocessedIdentifiers``, or nowhere when the record does not exist (as in the reference).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from featurestream.http.errors import ApiError, backend_of
from featurestream.http.quiet_log import log_unavailable
from featurestream.http.records import group_name, record_id, record_to_wire, string_list
from schemas.errors import FeatureStoreError, ServiceUnavailableError
from schemas.group import FeatureGroup
from sinks.online.async_reads import AsyncOnlineReads
from streams.group_view import GroupView

MAX_ENTRIES = 100  # the reference's limits on Identifiers and on ids per entry
MAX_IDS_PER_ENTRY = 100
FIRST_ROUND = 25  # records read before their size is known: 25 x 350 KB stays well under 16 MB
_STORE_CODES = {"ValidationError": "ValidationError", "CorruptRecord": "InternalFailure",
                "ServiceUnavailable": "ServiceUnavailable"}
_ENVELOPE = len(orjson.dumps({"Records": [], "Errors": [], "UnprocessedIdentifiers": []}))


@dataclass
class _Entry:
    """The identifiers asked for one (group, FeatureNames), in order, each once."""

    group: FeatureGroup
    given: str  # the name or ARN as the client wrote it: answers echo it
    features: tuple[str, ...] | None
    ids: dict[str, None] = field(default_factory=dict)  # an ordered set


def _size(item: Any) -> int:
    return len(orjson.dumps(item)) + 1  # + the comma separating it from the next item


def _unprocessed(pending: Sequence[tuple[_Entry, str]]) -> list[dict[str, Any]]:
    """Entries of at most 100 ids, one run per (group, FeatureNames): valid as a new request."""
    by_entry: dict[int, tuple[_Entry, list[str]]] = {}
    for entry, rid in pending:
        by_entry.setdefault(id(entry), (entry, []))[1].append(rid)
    out = []
    for entry, ids in by_entry.values():
        for start in range(0, len(ids), MAX_IDS_PER_ENTRY):
            item: dict[str, Any] = {"FeatureGroupName": entry.given,
                                    "RecordIdentifiersValueAsString": ids[start:start + MAX_IDS_PER_ENTRY]}
            if entry.features is not None:
                item["FeatureNames"] = list(entry.features)
            out.append(item)
    return out


def _requests(batch: Sequence[tuple[_Entry, str]]) -> list[tuple[FeatureGroup, list[str], tuple[str, ...] | None]]:
    """The store's batch_get arguments for one round: one (group, ids, features) per entry."""
    by_entry: dict[int, tuple[_Entry, list[str]]] = {}
    for entry, rid in batch:
        by_entry.setdefault(id(entry), (entry, []))[1].append(rid)
    return [(entry.group, ids, entry.features) for entry, ids in by_entry.values()]


def _error(given: str, rid: str, code: str, message: str) -> dict[str, Any]:
    return {"FeatureGroupName": given, "RecordIdentifierValueAsString": rid, "ErrorCode": code,
            "ErrorMessage": message[:2048]}


class BoundedBatchGet:
    """One BatchGetRecord, on the event loop: Redis through the asyncio reader ``online()``; the
    registry (a group this worker does not know yet) through ``run``, the thread pool."""

    def __init__(self, groups: GroupView, online: Callable[[], AsyncOnlineReads], max_bytes: int) -> None:
        self.groups = groups
        self.online = online
        self.max_bytes = max_bytes

    async def __call__(self, body: dict[str, Any], with_expires_at: bool,
                       run: Callable[..., Awaitable[Any]]) -> dict[str, Any]:
        entries, errors = self._plan(body) if self._groups_known(body) else await run(self._plan, body)
        pending = [(entry, rid) for entry in entries for rid in entry.ids]
        records: list[dict[str, Any]] = []
        unprocessed: list[tuple[_Entry, str]] = []
        # Room for the worst case of the unprocessed list (every identifier) is kept from the
        # start, so the answer fits whatever is left over when the budget runs out.
        used = _ENVELOPE + sum(_size(e) for e in errors) + len(orjson.dumps(_unprocessed(pending)))
        record_bytes = 0
        answered = 0  # records and errors found by reading; one always fits, so re-asking progresses
        start, size = 0, FIRST_ROUND
        while start < len(pending):
            batch = self._round(pending, start, size)
            start += len(batch)
            try:
                result = await self.online().batch_get(_requests(batch))
            except ServiceUnavailableError as exc:
                if not answered:
                    raise  # nothing to answer with: the caller gets ServiceUnavailable
                log_unavailable(backend_of(exc), exc, "BatchGetRecord")
                # Keep what was read; the rest can be asked again (and Redis is not asked again
                # now, each attempt would wait for its timeout).
                unprocessed.extend(batch)
                unprocessed.extend(pending[start:])
                break
            found = {(f.group, f.record_id): f.record for f in result.records}
            expiries = await self._expiries(batch, found) if with_expires_at else {}
            failed = {(e.group, e.record_id): e for e in result.errors}
            retry = set(result.unprocessed)
            for n, (entry, rid) in enumerate(batch):
                key = (entry.group.name, rid)
                if key in retry:
                    unprocessed.append((entry, rid))
                    continue
                if key in failed:
                    err = failed[key]
                    item = _error(entry.given, rid, _STORE_CODES.get(err.code, err.code), err.message)
                elif key in found:
                    item = self._answer(entry, rid, found[key], expiries.get(key))
                else:
                    continue  # no such record (or expired, or deleted): answered by its absence
                cost = _size(item)
                if answered and used + cost > self.max_bytes:
                    unprocessed.extend(batch[n:])
                    unprocessed.extend(pending[start:])
                    start = len(pending)
                    break
                answered += 1
                used += cost
                if key in failed:
                    errors.append(item)
                else:
                    records.append(item)
                    record_bytes += cost
            # The next round reads about as many records as the budget left can hold.
            average = record_bytes / len(records) if records else 0
            size = MAX_IDS_PER_ENTRY if average == 0 else \
                max(1, min(MAX_IDS_PER_ENTRY, int((self.max_bytes - used) // average)))
        return {"Records": records, "Errors": errors, "UnprocessedIdentifiers": _unprocessed(unprocessed)}

    def _groups_known(self, body: dict[str, Any]) -> bool:
        """Whether this worker knows every group the request names (or the request is malformed, which
        ``_plan`` refuses): planning then waits on nothing and runs on the event loop."""
        idents = body.get("Identifiers")
        if not isinstance(idents, list):
            return True
        for ident in idents:
            given = ident.get("FeatureGroupName") if isinstance(ident, dict) else None
            try:
                name = group_name(given)
            except ApiError:
                continue
            if name not in self.groups:
                return False
            group = self.groups.get(name)
            # an aggregation group's read checks its source too (a deleted source is an error)
            if group is not None and group.aggregation is not None and group.aggregation.source not in self.groups:
                return False
        return True

    def _plan(self, body: dict[str, Any]) -> tuple[list[_Entry], list[dict[str, Any]]]:
        """The deduplicated entries to read, and the errors known before reading (unknown groups,
        invalid identifiers); ValidationError for a malformed request."""
        idents = body.get("Identifiers")
        if not isinstance(idents, list) or not 1 <= len(idents) <= MAX_ENTRIES:
            raise ApiError.validation(f"Identifiers must be a list of 1 to {MAX_ENTRIES} entries")
        entries: dict[tuple[str, tuple[str, ...] | None], _Entry] = {}
        errors: list[dict[str, Any]] = []
        reported: set[tuple[str, str]] = set()  # (group, id) errors already given
        looked_up: dict[str, FeatureGroup | None] = {}
        for n, ident in enumerate(idents):
            if not isinstance(ident, dict):
                raise ApiError.validation(f"Identifiers[{n}] must be an object with FeatureGroupName and "
                                          "RecordIdentifiersValueAsString")
            given = ident.get("FeatureGroupName")
            name = group_name(given, f"Identifiers[{n}].FeatureGroupName")
            ids = string_list(ident.get("RecordIdentifiersValueAsString"),
                              f"Identifiers[{n}].RecordIdentifiersValueAsString", max_items=MAX_IDS_PER_ENTRY)
            features = ident.get("FeatureNames")
            if features is not None:
                # Sorted and once each: ["b", "a", "a"] asks what ["a", "b"] asks, and is read once.
                features = tuple(sorted(set(string_list(features, f"Identifiers[{n}].FeatureNames"))))
            if name not in looked_up:  # a miss re-reads the registry: once per name, not per entry
                looked_up[name] = self.groups.get(name)
            group = looked_up[name]
            if group is None:
                for rid in ids:
                    if (name, rid) not in reported:
                        reported.add((name, rid))
                        errors.append(_error(given, rid, "ResourceNotFound", f"feature group {name!r} does not exist"))
                continue
            problem = self.groups.aggregation_problem(group)
            if problem is not None:  # an aggregation group whose source was deleted
                for rid in ids:
                    if (name, rid) not in reported:
                        reported.add((name, rid))
                        errors.append(_error(given, rid, "ValidationError", problem))
                continue
            entry = entries.setdefault((name, features), _Entry(group, given, features))
            for text in ids:
                try:
                    rid = record_id(group, text)
                except (ApiError, FeatureStoreError) as exc:
                    if (name, text) not in reported:
                        reported.add((name, text))
                        errors.append(_error(given, text, "ValidationError", str(exc)))
                    continue
                entry.ids[rid] = None
        return list(entries.values()), errors

    @staticmethod
    def _round(pending: Sequence[tuple[_Entry, str]], start: int, size: int) -> list[tuple[_Entry, str]]:
        """Up to ``size`` identifiers from ``start``; never two entries of one group in a round,
        since the store answers by (group, id) and could not tell their feature subsets apart."""
        batch: list[tuple[_Entry, str]] = []
        entry_of_group: dict[str, int] = {}
        for entry, rid in pending[start:start + size]:
            if entry_of_group.setdefault(entry.group.name, id(entry)) != id(entry):
                break
            batch.append((entry, rid))
        return batch

    async def _expiries(self, batch: Sequence[tuple[_Entry, str]],
                        found: dict[tuple[str, str], Any]) -> dict[tuple[str, str], str | None]:
        """ExpiresAt of each found record of ``batch``: batch_get does not return expiry, so each is read
        again (one round trip each, all at once on the event loop)."""
        wanted = [(entry, rid) for entry, rid in batch if (entry.group.name, rid) in found]
        online = self.online()
        answers = await asyncio.gather(*(online.get_record(entry.group, rid, [entry.group.record_identifier_name],
                                                           with_expires_at=True) for entry, rid in wanted))
        return {(entry.group.name, rid): None if one is None else one["ExpiresAt"]
                for (entry, rid), one in zip(wanted, answers, strict=True)}

    @staticmethod
    def _answer(entry: _Entry, rid: str, record: dict[str, Any], expires_at: str | None) -> dict[str, Any]:
        item: dict[str, Any] = {"FeatureGroupName": entry.given, "RecordIdentifierValueAsString": rid,
                                "Record": record_to_wire(record)}
        if expires_at is not None:
            item["ExpiresAt"] = expires_at
        return item


__all__ = ["FIRST_ROUND", "BoundedBatchGet"]
