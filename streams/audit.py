"""The auditor: compare the online store and the offline table with the topic, the source of truth.

``schemas/parity.py`` says what each store must hold and how a difference is judged; this module
reads the topic, the stores and the consumer positions, in an order that makes the judgement
sound:

- **online**: the consumer group's committed offsets C are read first, then the store, then the
  topic to its end E. The store then shows some prefix of the topic between C and E, so an id
  whose versions all lie below C must equal the topic's latest; an id with a version at or after C
  is *in flight* when it differs. While the epoch marker is not ``ready`` (a rebuild under way), or
  when it is not the same before and after the store is read (Redis lost its data meanwhile), the
  store is not judged at all.
- **offline**: the table's current snapshot gives the rows and, in the same snapshot, the recorded
  next offset R per partition; the topic is then read to its end. Every offset below R must be in
  the table exactly once, except records not targeted at the offline store and records the sink
  dead-lettered (read from the dead-letter topic); offsets at or past R are in flight. A sample of
  rows is compared by value with the messages they came from.

The fold of a topic is kept between audits (:class:`GroupFold`), so a continuous auditor reads
each record once, cheaply (``streams/audit_fold.py``: a columnar decode per batch, full values decoded
only for the sampled ids). It holds the raw value of every id's latest online version in memory (about
the size of the records themselves).
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Message
from pyiceberg.expressions import In

from schemas.errors import RecordValidationError, ServiceUnavailableError
from schemas.group import FeatureGroup
from schemas.messages import DeleteMessage, PutMessage
from schemas.parity import (
    Verdict,
    judge_offsets,
    judge_online,
    near_expiry,
    offset_ranges,
    online_value,
    row_differences,
)
from schemas.types import ScalarType
from sinks.offline.catalog import OfflineTables
from sinks.offline.table_commit import recorded_offsets
from sinks.offline.table_format import EVENT_TIME_NS
from sinks.online.epoch import READY, EpochMarker
from sinks.online.store import MAX_IDS_PER_GROUP, OnlineStore
from streams.audit_fold import TopicFold, decode_checked
from streams.audit_report import GroupReport, Mismatch, StoreReport
from streams.audit_topics import DeadLetterIndex, TopicTail, fetch_messages
from streams.group_view import GroupView
from streams.kafka_client import KafkaTarget
from streams.lag import committed_offsets

log = logging.getLogger("featurestream.audit")

# Dead-letter stages whose records the online store refused, and the offline sink's.
ONLINE_STAGES = ("online", "rebuild-online", "replay-online", "audit-heal")
OFFLINE_STAGES = ("offline",)
FOLD_BATCH = 5000  # records per columnar decode: enough to amortize a call (~0.15 ms), few for memory
_ROW_META = ("api_invocation_time", "write_time", "_kafka_topic", "_kafka_partition", "_kafka_offset",
             EVENT_TIME_NS)


class GroupFold(TopicFold):
    """A :class:`TopicFold` that reads its topic itself, and samples the ids to check."""

    def __init__(self, bootstrap: KafkaTarget, group: FeatureGroup, topic: str) -> None:
        super().__init__(group, topic)
        self.tail = TopicTail(bootstrap, topic)

    def close(self) -> None:
        self.tail.close()

    def advance(self, group: FeatureGroup) -> int:
        """Fold the records published since the last call (checked against ``group``, the newest
        definition); returns how many."""
        before = self.records
        batch: list[Any] = []
        try:
            for msgs in self.tail.read_batches_to_end():
                batch += msgs
                if len(batch) >= FOLD_BATCH:
                    self._fold_confluent(batch, group)
                    batch = []
        finally:  # the tail has moved past what was read: fold it even when reading fails midway
            self._fold_confluent(batch, group)
        self.group = group
        return self.records - before

    def _fold_confluent(self, msgs: list[Any], group: FeatureGroup) -> None:
        self.fold_parts(list(map(Message.key, msgs)), list(map(Message.value, msgs)), list(map(Message.headers, msgs)),
                        list(map(Message.partition, msgs)), list(map(Message.offset, msgs)), group)

    def sample(self, n: int, rng: random.Random, *, every: bool = False) -> list[str]:
        """Ids to check: all with ``every``; else up to half of ``n`` among the ids that changed and
        have no verdict since (``streams/audit_recent.py``), the rest uniformly among all ids. Report
        each verdict back with ``recent.judged``."""
        if every:
            return list(self.states)
        chosen = self.recent.pick(n // 2, rng, self.states, self._age)
        picked = set(chosen)
        pool = [r for r in self.states if r not in picked] if len(self.states) <= 4 * n else None
        want = min(n - len(chosen), len(self.states) - len(chosen))
        if pool is not None:
            chosen += rng.sample(pool, min(want, len(pool)))
        else:
            everyone = list(self.states)
            while want > 0:
                r = everyone[rng.randrange(len(everyone))]
                if r not in picked:
                    picked.add(r)
                    chosen.append(r)
                    want -= 1
        return chosen

    def _age(self, rid: str) -> int:
        """Records published in its partition after ``rid``'s last version (0: the newest)."""
        p, o = self.last_seen[rid]
        return self.tail.next.get(p, o + 1) - o


class Auditor:
    """Audits groups against their topics; keeps each group's fold between calls."""

    def __init__(self, bootstrap: KafkaTarget, prefix: str, groups: GroupView, *, store: OnlineStore | None,
                 tables: OfflineTables | None, online_group_id: str, seed: int | None = None) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.groups = groups
        self.store = store
        self.tables = tables
        self.online_group_id = online_group_id
        self.rng = random.Random(seed)
        self.folds: dict[tuple[str, float], GroupFold] = {}
        self.deadletters = DeadLetterIndex(bootstrap, prefix)

    def close(self) -> None:
        for fold in self.folds.values():
            fold.close()
        self.deadletters.close()

    def fold_of(self, group: FeatureGroup) -> GroupFold:
        key = (group.name, group.creation_time)
        fold = self.folds.get(key)
        if fold is None:
            for old in [k for k in self.folds if k[0] == group.name]:
                self.folds.pop(old).close()  # the group was deleted and created again
            fold = self.folds[key] = GroupFold(self.bootstrap, group, group.topic(self.prefix))
        return fold

    def audit(self, names: Sequence[str] | None = None, *, sample: int = 100, every_id: bool = False,
              rows: int = 20, offline: bool = True) -> list[GroupReport]:
        """Audit ``names`` (default: every group): ``sample`` ids online (all with ``every_id``), every
        offset offline plus ``rows`` rows by value (``offline`` False: the online store only)."""
        known = self.groups.all(fresh=True)
        if names:
            missing = [n for n in names if n not in known]
            if missing:
                raise RecordValidationError(f"no feature group {', '.join(repr(n) for n in missing)}; known "
                                            f"groups: {', '.join(sorted(known)) or 'none'}", value=missing)
        chosen = [known[n] for n in (names or sorted(known))]
        return [self.audit_group(g, sample=sample, every_id=every_id, rows=rows, offline=offline) for g in chosen]

    def audit_group(self, group: FeatureGroup, *, sample: int = 100, every_id: bool = False,
                    rows: int = 20, offline: bool = True) -> GroupReport:
        report = GroupReport(group.name)
        fold = self.fold_of(group)
        fold.advance(group)
        if group.online_enabled and self.store is not None:
            report.online = self._audit_online(group, fold, sample, every_id)
        if offline and group.offline_enabled and self.tables is not None:
            report.offline = self._audit_offline(group, fold, rows)
        return report

    # ------------------------------------------------------------------ online

    def _audit_online(self, group: FeatureGroup, fold: GroupFold, sample: int, every_id: bool) -> StoreReport:
        assert self.store is not None
        rep = StoreReport("online")
        topic = fold.topic
        committed = committed_offsets(self.bootstrap, self.online_group_id, [topic])
        marker = EpochMarker(self.store.client, self.prefix).read()
        if marker is None or not marker.startswith(READY):
            rep.note = f"online store not whole (epoch marker {marker!r}): a rebuild is due or under way; not judged"
            return rep
        ids = fold.sample(sample, self.rng, every=every_id)
        now = time.time_ns()
        got = self.read_online(group, ids, now)
        after = EpochMarker(self.store.client, self.prefix).read()
        if after != marker:  # Redis lost its data (and maybe came back empty) while we read it
            rep.note = f"online store changed epoch during the audit ({marker!r} -> {after!r}); not judged"
            return rep
        fold.advance(group)          # the store shows a prefix of the topic up to here
        self.deadletters.catch_up()
        for rid in ids:
            state = fold.state(rid)
            p, o = fold.last_seen[rid]
            in_flight = o >= committed.get((topic, p), 0) or near_expiry(state, now)
            expected = online_value(state, now)
            verdict = judge_online(expected, got.get(rid), in_flight=in_flight,
                                   dead_lettered=self.deadletters.has_id(topic, rid, ONLINE_STAGES))
            fold.recent.judged(rid, in_flight=verdict is Verdict.IN_FLIGHT)
            rep.checked += 1
            if verdict is Verdict.OK:
                rep.ok += 1
            elif verdict is Verdict.IN_FLIGHT:
                rep.in_flight += 1
            elif verdict is Verdict.DEAD_LETTERED:
                rep.dead_lettered += 1
            else:
                rep.mismatches.append(Mismatch(
                    "online", group.name, "value", record_id=rid, in_store=got.get(rid), on_topic=expected,
                    version=None if state is None else f"{state.key.partition}:{state.key.offset}"))
        return rep

    def read_online(self, group: FeatureGroup, ids: Sequence[str], now_ns: int) -> dict[str, Any]:
        """What GetRecord answers for each id (None: no record); a corrupt stored record reads as
        ``{"<corrupt>": reason}``, a difference like any other."""
        assert self.store is not None
        out: dict[str, Any] = dict.fromkeys(ids)
        for i in range(0, len(ids), MAX_IDS_PER_GROUP):
            res = self.store.batch_get([(group, list(ids[i:i + MAX_IDS_PER_GROUP]), None)], now_ns=now_ns)
            for r in res.records:
                out[r.record_id] = r.record
            for e in res.errors:
                if e.code == "ServiceUnavailable":
                    raise ServiceUnavailableError(f"the auditor could not read the online store: {e.message}")
                out[e.record_id] = {"<corrupt>": e.message}
        return out

    # ------------------------------------------------------------------ offline

    def _audit_offline(self, group: FeatureGroup, fold: GroupFold, rows: int) -> StoreReport:
        assert self.tables is not None
        rep = StoreReport("offline")
        topic = fold.topic
        table = self.tables.existing(group)
        snap = None if table is None else table.current_snapshot()
        if table is None or snap is None:
            fold.advance(group)
            rep.in_flight = sum(fold.tail.next.get(p, 0) - low for p, low in fold.tail.low.items())
            rep.note = "no offline table yet: every record is in flight"
            return rep
        recorded = recorded_offsets(table)
        coords = table.scan(selected_fields=("_kafka_topic", "_kafka_partition", "_kafka_offset"),
                            snapshot_id=snap.snapshot_id).to_arrow()
        fold.advance(group)          # the topic now reaches at least every recorded offset
        self.deadletters.catch_up()
        per_partition: dict[int, Counter[int]] = {}
        foreign: Counter[str] = Counter()
        for t, p, o in zip(coords["_kafka_topic"].to_pylist(), coords["_kafka_partition"].to_pylist(),
                           coords["_kafka_offset"].to_pylist(), strict=True):
            if t != topic:
                foreign[t] += 1
                continue
            per_partition.setdefault(p, Counter())[o] += 1
        for t, n in foreign.items():
            rep.mismatches.append(Mismatch("offline", group.name, "unexpected", record_id=None,
                                           in_store=f"{n} rows of topic {t!r}", on_topic=topic))
        for p in sorted(set(per_partition) | set(fold.tail.next)):
            found = judge_offsets(per_partition.get(p, Counter()), low=fold.tail.low.get(p, 0),
                                  recorded=recorded.get((topic, p)), end=fold.tail.next.get(p, 0),
                                  not_targeted=fold.not_targeted.get(p, ()), poison=fold.poison.get(p, ()),
                                  dead_lettered=self.deadletters.offsets(topic, p, OFFLINE_STAGES))
            rep.checked += found.checked
            rep.ok += found.checked - len(found.missing) - len(found.doubled)
            rep.in_flight += found.in_flight
            rep.excluded += found.excluded
            for kind in ("missing", "doubled", "unexpected", "lost_poison"):
                offsets = getattr(found, kind)
                if offsets:
                    rep.mismatches.append(Mismatch("offline", group.name, kind, partition=p,
                                                   offsets=offset_ranges(offsets)))
        if rows > 0:
            self._compare_rows(group, table, snap.snapshot_id, per_partition, recorded, topic, rows, rep)
        return rep

    def _compare_rows(self, group: FeatureGroup, table: Any, snapshot_id: int, per_partition: dict[int, Counter[int]],
                      recorded: dict[tuple[str, int], int], topic: str, rows: int, rep: StoreReport) -> None:
        candidates = [(p, o) for p, c in per_partition.items() for o, n in c.items()
                      if n == 1 and o < recorded.get((topic, p), 0)]
        if not candidates:
            return
        picked = self.rng.sample(candidates, min(rows, len(candidates)))
        scan = table.scan(row_filter=In("_kafka_offset", {o for _, o in picked}), snapshot_id=snapshot_id).to_arrow()
        wanted = set(picked)
        found = {(r["_kafka_partition"], r["_kafka_offset"]): r for r in scan.to_pylist()
                 if r["_kafka_topic"] == topic and (r["_kafka_partition"], r["_kafka_offset"]) in wanted}
        raws = fetch_messages(self.bootstrap, topic, found)
        integral_id = group.feature(group.record_identifier_name).type is ScalarType.INTEGRAL
        for (p, o), row in sorted(found.items()):
            raw = raws.get((p, o))
            msg = None if raw is None else decode_checked(group, raw)
            if msg is None:
                continue  # gone by retention, or poison (judged by offsets already)
            values = {k: v for k, v in row.items() if k not in _ROW_META}
            values.pop(group.event_time_name, None)
            rid: Any = int(msg.id) if integral_id else msg.id
            diffs = row_differences(values, "delete" if isinstance(msg, DeleteMessage) else "put",
                                    msg.record if isinstance(msg, PutMessage) else None, msg.event_time_ns,
                                    event_time_column=group.event_time_name, id_column=group.record_identifier_name,
                                    record_id=rid, row_event_time_ns=row.get(EVENT_TIME_NS))
            rep.rows_compared += 1
            if diffs:
                rep.mismatches.append(Mismatch(
                    "offline", group.name, "value", record_id=msg.id, partition=p, version=f"{p}:{o}",
                    in_store={k: a for k, (a, _) in diffs.items()}, on_topic={k: b for k, (_, b) in diffs.items()}))

