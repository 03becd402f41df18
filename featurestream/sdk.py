"""The Python SDK: one object, ``FeatureStore``, in front of the registry, Kafka, Redis and S3.

    from featurestream import FeatureStore
    fs = FeatureStore()                      # endpoints from the environment (featurestream up)
    fs.put_record("customers", {"customer_id": "c1", "event_time": "2021-10-02T12:00:00Z", "age": 42})

Clients are created lazily, so a process that only publishes never connects to Redis or S3.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from datetime import datetime
from functools import cached_property
from typing import Any

from featurestream.config import Config
from schemas.backoff import backoff_delays
from schemas.errors import GroupNotFoundError, RecordValidationError, ServiceUnavailableError, ValidationError
from schemas.eventtime import format_iso, parse_event_time
from schemas.group import FeatureGroup
from schemas.messages import HARD_DELETE, ONLINE, SOFT_DELETE, Message
from schemas.names import validate_name
from schemas.ordering import version_key
from schemas.validate import compile_validator, validate_delete
from schemas.wire import encode
from streams.datafiles import FileRows
from streams.fileingest import ingest_file
from streams.group_view import GroupView
from streams.ingest import IngestResult, ingest
from streams.publisher import Publisher
from streams.registry import Registry
from streams.tail import StreamRecord, read_stream

_DELETE_MODES = {"soft": SOFT_DELETE, "hard": HARD_DELETE, SOFT_DELETE: SOFT_DELETE, HARD_DELETE: HARD_DELETE}


class FeatureStore:
    """Publish, consume and read features. Thread-safe for publishing and reading."""

    def __init__(self, config: Config | None = None, *, timeout_s: float | None = None,
                 group_cache_s: float = 1.0, redis_timeout_s: float | None = None) -> None:
        self.config = config or Config.from_env()
        # The online store's socket timeout (None: sinks.online.connect's default); the HTTP API
        # sets a short one (--redis-timeout).
        self.redis_timeout_s = redis_timeout_s
        # The delivery timeout (Config.delivery_timeout_s unless given here): how long publishing
        # and registry reads wait out a broker that answered before and is now away. A broker
        # that never answered this process is reported within a few seconds (streams.contact).
        self.timeout_s = self.config.delivery_timeout_s if timeout_s is None else timeout_s
        # Data-path calls look their group up in ``groups`` (streams.group_view: the one refresh
        # rule every process shares); one registry round trip per put or get would dominate
        # their latency. A miss always asks the registry.
        self.group_cache_s = group_cache_s
        self._validators: dict[tuple[str, int], Any] = {}
        self._offline_tables: Any = None

    # -- clients (lazy) --------------------------------------------------------------------------
    @cached_property
    def registry(self) -> Registry:
        return Registry(self.config.kafka(), prefix=self.config.topic_prefix,
                        offline_base_uri=self.config.offline_uri, timeout_s=self.timeout_s)

    @cached_property
    def groups(self) -> GroupView:
        return GroupView(self.registry.refresh, max_age_s=self.group_cache_s)

    @cached_property
    def publisher(self) -> Publisher:
        return Publisher(self.config.kafka(), timeout_s=self.timeout_s)

    @cached_property
    def online(self) -> Any:
        from sinks.online.store import OnlineStore

        url = self.config.require("redis_url")
        if self.redis_timeout_s is None:
            return OnlineStore.from_url(url, self.config.topic_prefix)
        return OnlineStore.from_url(url, self.config.topic_prefix, timeout_s=self.redis_timeout_s)

    def close(self) -> None:
        if "online" in self.__dict__:
            self.online.close()
        if "publisher" in self.__dict__:
            self.publisher.close()
        if "registry" in self.__dict__:
            self.registry.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- control plane ---------------------------------------------------------------------------
    def create_feature_group(self, group: FeatureGroup) -> FeatureGroup:
        return self.registry.create(group)

    def create_aggregation_group(self, name: str, source: str, by: str, features: Sequence[str] | Any, *,
                                 allowed_lateness: Any = None, description: str = "", backfill: bool = True,
                                 progress: bool = False) -> FeatureGroup:
        """Create an aggregation group: ``features`` are texts like ``"amount:sum,mean@10m,1h"`` and
        ``"amount:last_n(10)"`` (or Aggregate objects) over the events of group ``source``, keyed by its
        feature ``by``. ``allowed_lateness``: seconds or text like ``"7d"`` (default 7 days).
        ``backfill``: then fold the source topic's history into it (returns once done; ``progress``
        shows a bar on a terminal), while a running processor folds new events."""
        from schemas.aggregation import DEFAULT_LATENESS_NS, Aggregate, AggregationSpec, parse_aggregates
        from schemas.aggregation_group import aggregation_group

        items = list(features)
        texts = [f for f in items if isinstance(f, str)]
        aggs = (*parse_aggregates(texts, group=name), *(f for f in items if isinstance(f, Aggregate)))
        lateness = DEFAULT_LATENESS_NS if allowed_lateness is None else _ttl_seconds(allowed_lateness) * 10**9
        spec = AggregationSpec(source, by, aggs, lateness)
        if backfill:
            self.config.require("redis_url")  # before the group exists: a backfill needs the online store
        created = self.registry.create(aggregation_group(name, spec, self.registry.get(source),
                                                         description=description))
        if backfill:
            self.backfill_aggregation(created, progress=progress)
        return created

    def backfill_aggregation(self, group: FeatureGroup | str, *, progress: bool = False) -> Any:
        """Fold the history of an aggregation group's source topic into it (streams.replay)."""
        from streams.replay import backfill_aggregation

        g = self.describe_feature_group(group) if isinstance(group, str) else group
        cfg = self.config
        return backfill_aggregation(cfg.kafka(), cfg.require("redis_url"), cfg.topic_prefix, g, progress=progress)

    def create_group_from_json(self, definition: Mapping[str, Any], *, backfill: bool = True,
                               progress: bool = False) -> FeatureGroup:
        """Create a group from its JSON form: ``FeatureGroup.to_dict()``'s, or for an aggregation group
        ``{"name", "source", "by", "aggregates": [...] or "features": ["amount:sum@1h", ...],
        "allowed_lateness_s"}``."""
        from schemas.aggregation import AggregationSpec, parse_aggregates
        from schemas.aggregation_group import aggregation_group

        d = dict(definition)
        if "source" in d:
            name = d.get("name")
            if isinstance(d.get("features"), list):
                d["aggregates"] = [a.to_dict() for a in parse_aggregates(d.pop("features"), group=name)]
            spec = AggregationSpec.from_dict(d, group=name)
            if backfill:
                self.config.require("redis_url")  # before the group exists: a backfill needs the online store
            created = self.registry.create(aggregation_group(name, spec, self.registry.get(spec.source),
                                                             description=d.get("description", "")))
            if backfill:
                self.backfill_aggregation(created, progress=progress)
            return created
        return self.registry.create(FeatureGroup.from_dict(d))

    def describe_feature_group(self, name: str) -> FeatureGroup:
        return self.registry.describe(name)

    def list_feature_groups(self) -> list[FeatureGroup]:
        return self.registry.list()

    def delete_feature_group(self, name: str, *, purge: bool = False) -> FeatureGroup:
        """Delete the group and its topic; ``purge`` also deletes its online and offline data."""
        self.groups.forget(name)
        if not purge:
            return self.registry.delete(name)
        return self.registry.delete(name, on_purge=self._purge_online, after_delete=self._purge_offline)

    def _purge_online(self, group: FeatureGroup) -> None:
        """Before the delete: wipe the group's online keys, and check that its offline table can be
        reached. A store that is down fails the delete here, with the group kept."""
        if group.online_enabled and self.config.redis_url:
            self.online.wipe_group(group)  # an aggregation group's keys share the pattern
        if group.offline_enabled and group.offline_uri:
            self.offline_tables().registered(group)  # raises only if the catalog or S3 does not answer

    def _purge_offline(self, group: FeatureGroup) -> None:
        """After the delete (registry tombstone written): unregister the table and delete its files."""
        if not (group.offline_enabled and group.offline_uri):
            return
        from sinks.offline.fs import open_filesystem, storage_errors

        tables = self.offline_tables()
        tables.drop_life(group)
        fs, root = open_filesystem(group.offline_uri, self.config.storage_options())
        with storage_errors("delete the files under", root):  # a typed error: Registry.delete names what is left
            if fs.exists(root):
                fs.rm(root, recursive=True)
        # A sink that flushed this life's rows between the drop and the delete registered the table
        # again: its entry now points at deleted files. (A later life's table is left alone.)
        tables.drop_life(group)

    def _group(self, name: str) -> FeatureGroup:
        return self.groups.describe(name)

    def _current(self, name: str) -> FeatureGroup:
        """The group as the registry has it now, for a bulk write: the view may be up to a second and
        a half old, and an ingest is no per-record put that can ask again when a row names a feature
        added meanwhile (or the group was created again, with a topic of its own)."""
        return self.groups.describe(name, fresh=True)

    def _readable(self, name: str) -> FeatureGroup:
        """The group, for a read: ValidationError for an aggregation group whose source is gone."""
        group = self._group(name)
        problem = self.groups.aggregation_problem(group)
        if problem is not None:
            raise ValidationError(problem, group=name)
        return group

    def aggregation_problem(self, name: str) -> str | None:
        """Why aggregation group ``name`` is in an error state (its source deleted, or deleted and
        created again), or None if it is fine (and for a plain group)."""
        return self.groups.aggregation_problem(self._group(name))

    def _validator(self, group: FeatureGroup) -> Any:
        key = (group.name, group.version)
        validator = self._validators.get(key)
        if validator is None:
            validator = self._validators[key] = compile_validator(group)
        return validator

    # -- publishing ------------------------------------------------------------------------------
    def _encode_put(self, group_name: str, record: Mapping[str, Any], target_stores: Sequence[str] | None,
                    ttl: Any) -> tuple[str, tuple[bytes, bytes, list[tuple[str, bytes]]], Message]:
        group = self._group(group_name)
        try:
            msg = self._validator(group).validate(record, target_stores=target_stores,
                                                  ttl_seconds=_ttl_seconds(ttl),
                                                  api_invocation_time_ns=time.time_ns())
        except RecordValidationError as exc:
            # A feature our view of the group lacks may have been added a moment ago by another
            # process: re-read the definition once before refusing (streams.group_view's rule).
            newer = None if exc.feature is None or group.has_feature(exc.feature) else \
                self.groups.get(group_name, fresh=True)
            if newer is None or newer.version == group.version:
                raise
            group = newer
            msg = self._validator(group).validate(record, target_stores=target_stores,
                                                  ttl_seconds=_ttl_seconds(ttl),
                                                  api_invocation_time_ns=time.time_ns())
        return self.registry.topic_of(group), encode(msg, group.name), msg

    def put_record(self, group: str, record: Mapping[str, Any], target_stores: Sequence[str] | None = None,
                   ttl: Any = None, *, wait_online: bool = False, wait_timeout_s: float = 10.0) -> tuple[int, int]:
        """Validate and publish one record; returns (partition, offset) once Kafka acknowledged it.

        ``ttl``: seconds, a ``Ttl``, or text like ``"7d"``, overriding the group's TTL.
        ``wait_online``: also wait until the record (or a newer one) is readable online.
        """
        topic, (key, value, headers), msg = self._encode_put(group, record, target_stores, ttl)
        coords = self.publisher.publish_sync(topic, key, value, headers)
        if wait_online:
            self._wait_online(group, msg, coords, wait_timeout_s)
        return coords

    def put_record_async(self, group: str, record: Mapping[str, Any], target_stores: Sequence[str] | None = None,
                         ttl: Any = None) -> Future:
        """Like put_record, but returns a Future resolving to (partition, offset). Validation errors raise now."""
        topic, (key, value, headers), _ = self._encode_put(group, record, target_stores, ttl)
        return self.publisher.publish(topic, key, value, headers)

    def delete_record(self, group: str, record_id: Any, event_time: Any, mode: str = "soft",
                      target_stores: Sequence[str] | None = None) -> tuple[int, int]:
        """Publish a delete (``mode`` "soft" or "hard") of ``record_id`` at ``event_time``."""
        g = self._group(group)
        if mode not in _DELETE_MODES:
            raise RecordValidationError(f"delete mode must be 'soft' or 'hard' (or SoftDelete/HardDelete), "
                                        f"not {mode!r}", group=group)
        msg = validate_delete(g, record_id, event_time, mode=_DELETE_MODES[mode], target_stores=target_stores,
                              api_invocation_time_ns=time.time_ns())
        self.check_hard_delete(g, msg)
        key, value, headers = encode(msg, g.name)
        return self.publisher.publish_sync(self.registry.topic_of(g), key, value, headers)

    def check_hard_delete(self, group: FeatureGroup, msg: Message) -> None:
        """Refuse, as the reference does, a HardDelete older than the online record it would delete.

        The online store itself treats such a delete as historic (kept offline, the online record
        stays), so this is the door's synchronous answer, not a guarantee: a newer put still in
        flight is not seen, and with Redis away the check is skipped rather than the delete refused."""
        if getattr(msg, "mode", None) != HARD_DELETE or not group.online_enabled or ONLINE not in msg.target_stores:
            return
        try:
            meta = self.online.record_meta(group, msg.id)
        except ServiceUnavailableError:
            return
        stored = None if meta is None else meta["event_time_ns"]
        if stored is not None and stored > msg.event_time_ns:
            raise RecordValidationError(
                f"feature group {group.name!r}, record {msg.id!r}: a HardDelete at event time "
                f"{format_iso(msg.event_time_ns)} is older than the online record's event time "
                f"{format_iso(stored)}; a HardDelete must not be older than the record it deletes",
                group=group.name, value=msg.event_time_ns)

    def ingest(self, group: str, data: object, *, max_workers: int | None = None, progress: bool = True,
               strict: bool = False, target_stores: Sequence[str] | None = None, ttl: Any = None,
               resume_token: int | None = None) -> IngestResult:
        """Validate every row, publish the valid ones; see streams.ingest.

        If Kafka does not acknowledge some rows within the delivery timeout, raises
        ``IngestIncompleteError``; its ``result.unacknowledged`` lists exactly those rows. Ingest
        them again, and only them, with ``resume_token=result.resume_token``: rows the broker did
        keep without acknowledging them are found on the topic and not published twice. Resume with
        the same ``target_stores`` and ``ttl``, before the group's definition changes: the rows must
        encode to the same bytes as in the first attempt.
        """
        g = self._current(group)
        return ingest(self.publisher, self.registry.topic_of(g), g, data, strict=strict,
                      max_workers=max_workers, progress=progress, target_stores=target_stores,
                      ttl_seconds=_ttl_seconds(ttl), resume_token=resume_token)

    def ingest_file(self, group: str, path: str, *, fmt: str | None = None, max_workers: int | None = None,
                    progress: bool = True, strict: bool = False, target_stores: Sequence[str] | None = None,
                    ttl: Any = None, only: set[int] | None = None,
                    resume_token: int | None = None) -> tuple[IngestResult, FileRows]:
        """Ingest a CSV, JSON Lines or Parquet file read with the group's schema; see streams.fileingest
        (``only`` + ``resume_token`` resume an ingest Kafka did not fully acknowledge)."""
        g = self._current(group)
        return ingest_file(self.publisher, self.registry.topic_of(g), g, path, fmt=fmt, strict=strict,
                           max_workers=max_workers, progress=progress, target_stores=target_stores,
                           ttl_seconds=_ttl_seconds(ttl), only=only, resume_token=resume_token)

    # -- consuming -------------------------------------------------------------------------------
    def stream(self, group: str, *, start: str | datetime | int = "end", consumer_group: str | None = None,
               max_records: int | None = None, idle_timeout_s: float | None = None) -> Iterator[StreamRecord]:
        """Iterate a group's records as decoded messages.

        ``start``: "end" (new records only), "beginning", an aware datetime / ISO-8601 string, or
        epoch milliseconds. With ``consumer_group`` offsets are committed and partitions shared.
        """
        g = self._group(group)
        return read_stream(self.config.kafka(), self.registry.topic_of(g),
                           start=_start_position(start), group_id=consumer_group, max_records=max_records,
                           idle_timeout_s=idle_timeout_s)

    def _wait_online(self, group: str, msg: Message, coords: tuple[int, int], timeout_s: float) -> None:
        """Wait until the online store holds this write or a newer one (read-after-write)."""
        g = self._group(group)
        if not g.online_enabled or "OnlineStore" not in msg.target_stores:
            raise RecordValidationError(f"wait_online: record {msg.id!r} of {group!r} does not go to the online "
                                        "store (online disabled or target_stores excludes it)", group=group)
        ttl = getattr(msg, "ttl_seconds", None) or (g.ttl.seconds if g.ttl else None)
        if ttl and msg.event_time_ns + ttl * 1_000_000_000 <= time.time_ns():
            raise RecordValidationError(
                f"record {msg.id!r} of {group!r} was published (partition {coords[0]}, offset {coords[1]}) but "
                f"expired on arrival: its event time plus the TTL ({ttl} s) is in the past, so the online store "
                "will never return it", group=group)
        mine = version_key(msg.event_time_ns, coords[0], coords[1])
        deadline = time.monotonic() + timeout_s
        delays = backoff_delays(0.001, 0.05)
        while True:
            meta = self.online.record_meta(g, msg.id)
            if meta and meta.get("event_time_ns") is not None and meta.get("seq"):
                part, _, off = str(meta["seq"]).partition(":")
                if version_key(meta["event_time_ns"], int(part), int(off)) >= mine:
                    return
            if time.monotonic() > deadline:
                raise ServiceUnavailableError(
                    f"record {msg.id!r} of {group!r} was published (partition {coords[0]}, offset {coords[1]}) "
                    f"but was not visible online within {timeout_s:.1f} s: is `featurestream process` running?")
            time.sleep(next(delays))

    # -- replay, backfill, rebuild ---------------------------------------------------------------
    def replay(self, group: str, *, target: str, from_ms: int | None = None, to_ms: int | None = None,
               progress: bool = True) -> Any:
        """Re-read ``group``'s topic (broker time in [from_ms, to_ms)) into the ``target`` store,
        "online" or "offline", idempotently; see streams.replay."""
        from streams import replay

        g = self.describe_feature_group(group)
        cfg = self.config
        if target == "online":
            return replay.replay_online(cfg.kafka(), cfg.require("redis_url"), cfg.topic_prefix,
                                        g, offline_uri=cfg.offline_uri, from_ms=from_ms, to_ms=to_ms,
                                        progress=progress)
        if target == "offline":
            return replay.replay_offline(cfg.kafka(), cfg.topic_prefix, self.offline_tables(),
                                         g, from_ms=from_ms, to_ms=to_ms, progress=progress)
        raise ValueError(f"target must be 'online' or 'offline', not {target!r}")

    def rebuild_online(self, group: str, *, progress: bool = True) -> Any:
        """Wipe ``group``'s online keys and replay its whole topic; returns (keys removed, ReplayResult)."""
        from streams.replay import rebuild_online

        cfg = self.config
        return rebuild_online(cfg.kafka(), cfg.require("redis_url"), cfg.topic_prefix,
                              self.describe_feature_group(group), offline_uri=cfg.offline_uri, progress=progress)

    # -- dead letters ----------------------------------------------------------------------------
    def dead_letters(self, group: str | None = None, *, since: str | datetime | int | None = None,
                     progress: bool = True) -> list[Any]:
        """The dead letters (``streams.deadletter_records.DeadLetter``), oldest first, of ``group`` or
        of every group, parked at or after ``since`` (ISO-8601 text, relative text like ``1h``/``30m``/
        ``7d``, an aware datetime or epoch milliseconds). Empty when nothing was ever dead-lettered.
        GroupNotFoundError for a group that is neither registered nor named by any dead letter."""
        from streams.deadletter_records import parse_since
        from streams.redrive import list_dead_letters

        since_ms = None if since is None else parse_since(since, time.time_ns() // 1_000_000)
        self._check_group_name(group)
        found = list_dead_letters(self.config.kafka(), self.config.topic_prefix, group=group, since_ms=since_ms,
                                  progress=progress) or []
        if group is not None and not found and self.registry.get(group) is None:
            raise GroupNotFoundError(group)
        return found

    def redrive(self, group: str | None = None, *, dry_run: bool = False, progress: bool = True) -> Any:
        """Re-publish the dead letters (of ``group``, or all) that now pass validation against their
        group's current definition; a ``streams.redrive.RedriveReport`` says per dead letter what
        happened. Running it again re-publishes nothing already redriven (see streams/redrive_plan.py).
        ``dry_run``: report the same, publish nothing."""
        from streams.redrive import RedriveReport, redrive

        self._check_group_name(group)
        report = redrive(self.config.kafka(), self.config.topic_prefix, self.publisher, self.registry.get,
                         group=group, dry_run=dry_run, progress=progress) or RedriveReport(dry_run=dry_run)
        if group is not None and not report.outcomes and self.registry.get(group) is None:
            raise GroupNotFoundError(group)
        return report

    @staticmethod
    def _check_group_name(group: str | None) -> None:
        if group is not None:
            validate_name(group)

    # -- online reads ----------------------------------------------------------------------------
    def get_record(self, group: str, record_id: Any, features: Sequence[str] | None = None, *,
                   with_expires_at: bool = False) -> dict[str, Any] | None:
        """The latest record online (None if missing, deleted or expired); ``features`` selects some."""
        return self.online.get_record(self._readable(group), _id_text(record_id), features,
                                      with_expires_at=with_expires_at)

    def batch_get_record(self, requests: Sequence[tuple[str, Sequence[Any], Sequence[str] | None]]) -> Any:
        """Several groups at once, up to 100 identifiers each, one round trip (BatchGetRecord)."""
        resolved = [(self._readable(name), [_id_text(i) for i in ids], feats) for name, ids, feats in requests]
        return self.online.batch_get(resolved)

    # -- offline store ---------------------------------------------------------------------------
    def offline_tables(self) -> Any:
        """The Iceberg catalog's offline tables of this prefix (``sinks.offline.catalog.OfflineTables``)."""
        if self._offline_tables is None:
            from sinks.offline.catalog import OfflineTables

            self._offline_tables = OfflineTables.open(self.config.catalog(), self.config.topic_prefix,
                                                      self.config.storage_options())
        return self._offline_tables

    def offline_query(self, groups: Sequence[str] | None = None, *, as_of_commit: Any = None) -> Any:
        """An ``OfflineQuery`` (DuckDB) over ``groups`` (default: every offline-enabled group).

        Each group is a table by its name, read at one Iceberg snapshot: the current one, or the
        one current at ``as_of_commit`` (time travel by commit: aware datetime, ISO-8601 text or
        epoch seconds). Every statement of the returned object sees those snapshots. Close it.
        """
        from sinks.offline.query import OfflineQuery

        if groups is None:
            chosen = [g for g in self.list_feature_groups() if g.offline_enabled]
        else:
            chosen = [self._group(n) for n in groups]
        # An aggregation group is computed from its source group's table (sinks/offline/pit_aggregates.py).
        aggregations = [g for g in chosen if g.is_aggregation]
        tables = {g.name: g for g in chosen if not g.is_aggregation}
        for agg in aggregations:
            if agg.aggregation.source not in tables:
                tables[agg.aggregation.source] = self._group(agg.aggregation.source)
        return OfflineQuery(list(tables.values()), tables=self.offline_tables(), as_of_commit=as_of_commit,
                            aggregations=aggregations)

    def query(self, sql: str, *, as_pandas: bool = False, as_of_commit: Any = None) -> Any:
        """Run SQL over the offline tables; each feature group is a table by its name.

        ``as_of_commit``: read each table as it was committed at that time (time travel by commit)."""
        # An aggregation group is a table of its values now (snapshot() gives them at any time).
        offline = [g for g in self.list_feature_groups() if g.offline_enabled or g.is_aggregation]
        # Only groups the statement names are scanned.
        words = set(_IDENT.findall(sql))
        named = [g.name for g in offline if g.name in words or f'"{g.name}"' in sql] or \
            [g.name for g in offline if not g.is_aggregation]
        with self.offline_query(named, as_of_commit=as_of_commit) as q:
            return q.to_pandas(sql) if as_pandas else q.sql(sql)

    def snapshot(self, group: str, as_of: Any = None, include_deleted: bool = False, *,
                 as_of_commit: Any = None) -> Any:
        """The latest row per identifier with event time at or before ``as_of`` (Arrow table),
        from the table as committed at ``as_of_commit`` (default: now)."""
        with self.offline_query([group], as_of_commit=as_of_commit) as q:
            return q.snapshot(group, as_of, include_deleted)

    def get_historical_features(self, entity_rows: Any, features: Any, max_age: Any = None, *,
                                timestamp_column: str = "event_time", full_feature_names: bool = False,
                                engine: str = "duckdb", spark: Any = None) -> Any:
        """Point-in-time join: for each entity row, the latest features at or before its timestamp.

        ``features``: ``["group:feature", "group:*"]``, ``[(group, [features])]`` or ``{group: [features]}``.
        An aggregation group's features are its aggregates at each row's time, as the online store
        serves them (sinks/offline/pit_aggregates.py). ``engine="spark"`` (with ``spark``, a
        SparkSession whose catalog is featurestream's, as ``featurestream ddl`` prints) computes
        aggregation groups' features on Spark, with the same answers.
        """
        names = _groups_named_in(features)
        if engine == "spark":
            return self._spark_aggregates(spark, entity_rows, features, names, timestamp_column, full_feature_names)
        if engine != "duckdb":
            raise ValueError(f"engine must be 'duckdb' or 'spark', got {engine!r}")
        with self.offline_query(names) as q:
            return q.get_historical_features(entity_rows, features, max_age=max_age,
                                             timestamp_column=timestamp_column,
                                             full_feature_names=full_feature_names)

    def _spark_aggregates(self, spark: Any, entity_rows: Any, features: Any, names: list[str],
                          timestamp_column: str, full_feature_names: bool) -> Any:
        import pyarrow as pa

        from sinks.offline.catalog import CATALOG_NAME
        from sinks.offline.pit import append_aggregates, entity_table, split_aggregate_request
        from sinks.offline.spark_aggregates import spark_aggregates

        if spark is None:
            raise ValueError("engine='spark' needs spark=<a SparkSession with featurestream's Iceberg catalog "
                             "configured, as `featurestream ddl <group>` prints>")
        groups = {n: self._group(n) for n in names}
        plain = [n for n, g in groups.items() if not g.is_aggregation]
        if plain:
            raise ValueError(f"engine='spark' computes aggregation groups' features; {plain} are not aggregation "
                             "groups (read them with the default engine, or in Spark SQL over their tables)")
        wanted, _rest = split_aggregate_request(features, groups)
        table, ts_ns = entity_table(entity_rows, timestamp_column)
        out = table
        for name, feats in wanted.items():
            agg = groups[name]
            source = self._group(agg.aggregation.source)
            iceberg = self.offline_tables().existing(source)
            snap = None if iceberg is None else iceberg.current_snapshot()
            key_type = pa.int64() if source.feature(agg.aggregation.by).type.value == "Integral" else pa.string()
            spark_name = f"{CATALOG_NAME}.`{self.config.topic_prefix}`.`{source.name}`"

            def values(request: Any, keys: Any, times: Any, spark_name: str = spark_name, snap: Any = snap) -> Any:
                return spark_aggregates(spark, spark_name, request, keys, times,
                                        snapshot_id=None if snap is None else snap.snapshot_id)

            out = append_aggregates(out, table, ts_ns, agg, feats, key_type, values, full_feature_names)
        return out

    def ddl(self, group: str) -> str:
        """How Spark, Trino and Athena read the group's Iceberg table (catalog settings + a SELECT)."""
        from sinks.offline.engine_ddl import engine_instructions
        from sinks.offline.query_errors import QueryError

        g = self._group(group)
        if not g.offline_enabled or not g.offline_uri:
            raise QueryError(f"feature group {g.name!r} has no offline store, so no table to read")
        table = self.offline_tables().existing(g)
        return engine_instructions(g, self.config.topic_prefix, self.config.catalog(),
                                   metadata_location=None if table is None else table.metadata_location,
                                   storage_options=self.config.storage_options())

_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _groups_named_in(features: Any) -> list[str]:
    """Group names of a feature request, in order (sinks.offline.pit validates the request itself)."""
    if features is None or isinstance(features, str | bytes):
        return []
    items = features.keys() if isinstance(features, Mapping) else features
    names: list[str] = []
    for item in items:
        if isinstance(item, str):
            name = item.partition(":")[0]
        elif isinstance(item, tuple | list) and item and isinstance(item[0], str):
            name = item[0]
        else:
            continue
        if name and name not in names:
            names.append(name)
    return names


def _id_text(record_id: Any) -> str:


    if isinstance(record_id, bool):
        raise RecordValidationError(f"record identifier must be a string or an integer, not {record_id!r}")
    return str(record_id) if isinstance(record_id, int) else record_id


def _ttl_seconds(ttl: Any) -> int | None:
    if ttl is None:
        return None
    from schemas.ttl import Ttl, parse_ttl

    if isinstance(ttl, Ttl):
        return ttl.seconds
    if isinstance(ttl, str):
        return parse_ttl(ttl).seconds
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
        raise RecordValidationError(f"ttl must be a positive number of seconds, a Ttl or text like '7d', "
                                    f"not {ttl!r}")
    return ttl


def _start_position(start: str | datetime | int) -> str | int:
    if start in ("end", "beginning"):
        return start  # type: ignore[return-value]
    if isinstance(start, bool):
        raise ValueError(f"start must be 'end', 'beginning', a datetime or epoch milliseconds, not {start!r}")
    if isinstance(start, int):
        return start
    return parse_event_time(start) // 1_000_000


