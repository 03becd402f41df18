"""Exactly once, kept by the table: data files and the Kafka offsets they cover, in one snapshot.

Every snapshot a featurestream writer commits carries, in its summary, the property
``featurestream.kafka-offsets``: for every Kafka partition whose rows the table holds, the next
offset after the last one in it (JSON ``{"<topic>": {"<partition>": next}}``). Each commit
copies the previous snapshot's map and advances the partitions it covers, and compaction copies
it unchanged, so the current snapshot alone says what the table holds.

A commit of rows ``[start, next)`` of a partition is accepted only if the current snapshot
records exactly ``start`` for it (``None``: nothing recorded yet). The check and the commit
are atomic because the commit asserts the snapshot it checked (pyiceberg's
``AssertRefSnapshotId``, enforced by the catalog's compare-and-swap): if anyone committed in
between, the catalog answers ``CommitFailedException`` and we reload, check again and retry.
So of two writers that believe they own a partition (a zombie, a stale sink after a
rebalance, a replay racing the sink) exactly one commits a given range; the other is refused
with :class:`OffsetsMismatchError`, its uploaded files are deleted, and it resumes from what
the table records.

Why this holds across crashes: files are uploaded before the commit under fresh names, so a
crash before the commit leaves only unreferenced files (deleted by orphan removal), and a crash
after it leaves a table whose offsets already cover the rows, where the sink resumes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from sinks.offline.commit_retry import CommitConflictsExhausted, commit_with_retry
from sinks.offline.errors import OfflineStorageError, OffsetsMismatchError

log = logging.getLogger("featurestream.offline.commit")

OFFSETS_PROPERTY = "featurestream.kafka-offsets"
TP = tuple[str, int]


def recorded_offsets(table: Table) -> dict[TP, int]:
    """The next offset of every Kafka partition the table's current snapshot records."""
    snap = table.current_snapshot()
    if snap is None or snap.summary is None:
        return {}
    raw = snap.summary.additional_properties.get(OFFSETS_PROPERTY)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
        return {(str(t), int(p)): int(o) for t, parts in data.items() for p, o in parts.items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise OfflineStorageError(f"table {table.name()}: snapshot {snap.snapshot_id} has a malformed "
                                  f"{OFFSETS_PROPERTY} property ({exc}): {raw[:200]!r}") from None


def offsets_property(offsets: Mapping[TP, int]) -> dict[str, str]:
    """The snapshot summary property recording ``offsets``."""
    out: dict[str, dict[str, int]] = {}
    for (t, p), o in sorted(offsets.items()):
        out.setdefault(t, {})[str(p)] = int(o)
    return {OFFSETS_PROPERTY: json.dumps(out, separators=(",", ":"), sort_keys=True)}


@dataclass(frozen=True, slots=True)
class Advance:
    """Rows of one Kafka partition ``[start, next)``; ``start`` None: the table records nothing yet."""

    topic: str
    partition: int
    start: int | None
    next: int


def delete_files(table: Table, paths: Iterable[str]) -> None:
    """Delete uploaded files that no snapshot references (a refused commit's)."""
    for path in paths:
        try:
            table.io.delete(path)
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001 - left for orphan removal; say so
            log.warning("could not delete unreferenced file %s (%s); orphan removal will", path, exc)


def commit_append(reload: Callable[[], Table], data_files: list[Any], advances: list[Advance], *,
                  attempts: int = 30, first: Table | None = None,
                  properties: Mapping[str, str] | None = None) -> Table:
    """Commit ``data_files`` and advance the offsets in one snapshot, if the table agrees.

    ``reload`` returns the table with fresh metadata (``first``: one loaded a moment ago, used
    for the first attempt). Raises OffsetsMismatchError (after deleting ``data_files``) when the
    table records other start offsets than ``advances``.
    Extra snapshot summary ``properties`` go into the same snapshot (the migration's marker).
    """
    def step(table: Table) -> Table:
        current = recorded_offsets(table)
        wrong = [(a, current.get((a.topic, a.partition))) for a in advances
                 if current.get((a.topic, a.partition)) != a.start]
        if wrong:
            delete_files(table, (f.file_path for f in data_files))
            raise OffsetsMismatchError(
                f"table {table.name()}: refused a commit whose start offsets disagree with the table: "
                + "; ".join(f"{a.topic}[{a.partition}] starts at {a.start} but the table records {have}"
                            for a, have in wrong)
                + " (another writer committed these offsets; resume from the table's)",
                recorded={(a.topic, a.partition): have for a, have in wrong})
        new = dict(current)
        for a in advances:
            new[(a.topic, a.partition)] = a.next
        try:
            tx = table.transaction()
            # merge_append: manifests are merged once there are many (commit.manifest-merge.*), so
            # a table with a commit a minute does not grow a manifest list a mile long.
            props = {**(properties or {}), **offsets_property(new)}
            with tx.update_snapshot(snapshot_properties=props).merge_append() as append:
                for f in data_files:
                    append.append_data_file(f)
            return tx.commit_transaction()
        except CommitFailedException:
            raise  # another writer won: reloaded, checked and tried again by commit_with_retry
        except Exception as exc:  # noqa: BLE001 - S3/catalog failures; the outcome may be unknown
            # Not deleting the files: if the commit did land they are the table's now. A retry is
            # safe either way: it checks the offsets first, and is refused if this one landed.
            raise OfflineStorageError(f"table {table.name()}: committing {len(data_files)} files failed: "
                                      f"{type(exc).__name__}: {exc} (is the S3 server or the catalog down?)"
                                      ) from exc

    def conflicted(table: Table, exc: CommitFailedException, attempt: int) -> None:
        log.info("%s: commit conflicted (%s); reloading and checking again (attempt %d)",
                 table.name(), exc, attempt + 1)

    try:
        return commit_with_retry(reload, step, attempts=attempts, first=first, on_conflict=conflicted)
    except CommitConflictsExhausted:
        delete_files(reload(), (f.file_path for f in data_files))
        raise OfflineStorageError(f"could not commit to the offline table after {attempts} conflicting attempts; "
                                  "the rows are read again from Kafka") from None
