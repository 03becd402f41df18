"""`featurestream up | down | status`: the local stack of Kafka, Redis and an S3 server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from featurestream.config import Config


def _say(message: str) -> None:
    # stdout carries only `export` lines (for eval); everything a human reads goes to stderr.
    print(f"featurestream: {message}", file=sys.stderr, flush=True)


def _add_common(parser: argparse.ArgumentParser) -> None:
    from featurestream.stack.layout import DEFAULT_CACHE_DIR

    parser.add_argument("--state-dir", type=Path, default=None,
                        help="where data, logs and pid files live (default: FEATURESTREAM_STATE_DIR "
                             "or ~/.featurestream)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
                        help=f"where downloaded jars and built binaries are kept (default {DEFAULT_CACHE_DIR})")


def _config(args: argparse.Namespace) -> Config:
    state_dir = args.state_dir.expanduser().resolve() if args.state_dir else None
    return Config.from_env(state_dir=state_dir)


def _up(args: argparse.Namespace) -> int:
    from featurestream.stack.exports import format_exports
    from featurestream.stack.launcher import up
    from featurestream.stack.layout import StackLayout, StackPorts

    try:
        ports = StackPorts(kafka=args.kafka_port, controller=args.controller_port, redis=args.redis_port,
                           s3=args.s3_port, kafka_sasl=args.kafka_sasl_port)
    except ValueError as exc:
        from featurestream.cli import CliError

        raise CliError(str(exc), status=2) from exc
    config = _config(args)
    layout = StackLayout(config.state_dir, args.cache_dir.expanduser())
    endpoints = up(config, ports=ports, layout=layout, say=_say, kafka_security=args.kafka_security)
    sys.stdout.write(format_exports(endpoints.exports()))
    sys.stdout.flush()
    return 0


def _down(args: argparse.Namespace) -> int:
    from featurestream.stack.launcher import down

    stopped = down(_config(args).state_dir, say=_say)
    if not stopped:
        _say("nothing was running")
    return 0


def _status(args: argparse.Namespace) -> int:
    from featurestream.stack.launcher import status

    config = _config(args)
    statuses = status(config)
    for st in statuses:
        print(st.line())
    kafka_ok = any(st.answers for st in statuses if "kafka" in st.line().lower())
    if config.kafka_bootstrap and kafka_ok:
        urls = _worker_urls(config)
        families = {url: _metric_families(url) for _, url in urls}
        _print_pipeline_status(config, _freshness([f for f in families.values() if f is not None]))
        _print_workers(urls, families)  # even with no feature group yet; workers need Kafka to be of use
    # Non-zero when something configured or started does not answer, so scripts can wait on it.
    return 0 if all(st.answers for st in statuses if st.state != "stopped") else 1


def _freshness(per_worker: list[list]) -> dict:
    from featurestream.cli.freshness_status import freshness_by_group

    return freshness_by_group(f for families in per_worker for f in families)


def _print_pipeline_status(config: Config, freshness: dict) -> None:
    """Per feature group: records behind in the online and offline consumer groups, and the
    publish-to-applied latency (p50/p99) the workers of this host measured; then, per consumer
    group, which worker holds which partitions."""
    from schemas.errors import FeatureStoreError
    from streams.lag import partition_lag
    from streams.registry import Registry

    bootstrap = config.kafka()  # address and security settings
    consumer_groups = (f"{config.topic_prefix}-online", f"{config.topic_prefix}-offline")
    try:
        registry = Registry(bootstrap, prefix=config.topic_prefix, timeout_s=5)
        groups = registry.list()
        registry.close()
        if not groups:
            print("feature groups: none")
            return
        topics = {registry.topic_of(g): g for g in groups}
        lags = {cg: partition_lag(bootstrap, cg, topics, timeout_s=5) for cg in consumer_groups}
    except FeatureStoreError as exc:
        print(f"feature groups: cannot read ({exc})")
        return
    totals = {cg: _per_topic(lag) for cg, lag in lags.items()}
    print(f"{'GROUP':<32} {'ONLINE LAG':>11} {'OFFLINE LAG':>12} {'ONLINE p50/p99':>17} {'OFFLINE p50/p99':>17}")
    for topic, g in sorted(topics.items()):
        on = str(totals[consumer_groups[0]].get(topic, 0)) if g.online_enabled else "-"
        off = str(totals[consumer_groups[1]].get(topic, 0)) if g.offline_enabled else "-"
        fresh_on, fresh_off = (freshness.get((s, g.name)) for s in ("online", "offline"))
        on_f = fresh_on.text() if fresh_on is not None and g.online_enabled else "-"
        off_f = fresh_off.text() if fresh_off is not None and g.offline_enabled else "-"
        print(f"{g.name:<32} {on:>11} {off:>12} {on_f:>17} {off_f:>17}")
    print("(lag = records not yet committed by the processor / sink consumer groups; p50/p99 = time from "
          "the door to the store, measured by this host's workers since they started; - = none measured)")
    wanted = {consumer_groups[0]: {t for t, g in topics.items() if g.online_enabled},
              consumer_groups[1]: {t for t, g in topics.items() if g.offline_enabled}}
    _print_assignments(config, lags, {t: g.name for t, g in topics.items()}, wanted)
    if config.redis_url:
        print(f"online store: {_online_store_state(config)}")


def _per_topic(lag: dict[tuple[str, int], int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for (topic, _), n in lag.items():
        out[topic] = out.get(topic, 0) + n
    return out


def _print_assignments(config: Config, lags: dict[str, dict[tuple[str, int], int]], names: dict[str, str],
                       wanted: dict[str, set[str]]) -> None:
    """Each member of the processor and sink consumer groups with the partitions it holds."""
    from featurestream.cli.assignments import format_assignments
    from schemas.errors import FeatureStoreError
    from streams.group_members import describe_groups

    try:
        described = describe_groups(config.kafka(), list(lags), timeout_s=5)
    except FeatureStoreError as exc:
        print(f"consumer groups: cannot describe ({exc})")
        return
    for group_id, group in described.items():
        lag = lags[group_id]
        every = {tp for tp in lag if tp[0] in wanted[group_id]}
        for line in format_assignments(group, lag, names, every):
            print(line)


def _online_store_state(config: Config) -> str:
    """Whether the online store is whole, being rebuilt, or lost (its epoch marker; sinks/online/epoch.py)."""
    from sinks.online.epoch import READY, REBUILDING, EpochMarker
    from sinks.online.store import OnlineStore

    try:
        store = OnlineStore.from_url(config.redis_url or "", config.topic_prefix, timeout_s=2)
        try:
            marker = EpochMarker(store.client, config.topic_prefix).read()
        finally:
            store.close()
    except Exception as exc:  # noqa: BLE001 - status reports, it does not fail
        return f"cannot read ({type(exc).__name__})"
    if marker is None:
        return ("NOT WHOLE: no epoch marker (Redis lost its data, or no processor has built it yet); "
                "a running `featurestream process` rebuilds it from Kafka")
    if marker.startswith(REBUILDING):
        replayed = _scrape_gauge("http://127.0.0.1:9108", "featurestream_online_rebuild_records")
        more = f", {replayed:,.0f} records replayed so far" if replayed is not None else ""
        return f"REBUILDING from Kafka (claim {marker.removeprefix(REBUILDING)}{more})"
    return f"ready (epoch {marker.removeprefix(READY)})"


def _metric_families(url: str) -> list | None:
    """The Prometheus metric families a worker serves at ``url``/metrics (None if it does not answer)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=1) as resp:
            return list(text_string_to_metric_families(resp.read().decode()))
    except OSError:
        return None


def _scrape_gauge(url: str, name: str) -> float | None:
    for family in _metric_families(url) or ():
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return None


_PREFIXES = {"processor": "featurestream_online_", "sink": "featurestream_offline_",
             "auditor": "featurestream_parity_"}
_DEFAULT_PORTS = (("processor", 9108), ("sink", 9109), ("auditor", 9110))


def _worker_urls(config: Config) -> dict[tuple[str, str], str]:
    """(role, metrics URL) -> who, for each processor, sink and auditor of this host.

    Workers announce their port in the state dir (a taken default port moves to a free one);
    the default ports are asked too, for workers started with another state dir."""
    from featurestream.stack.workers import running_workers

    urls = {(w.role, w.url): f"pid {w.pid}" for w in running_workers(config.state_dir)}
    for role, port in _DEFAULT_PORTS:
        url = f"http://127.0.0.1:{port}"
        if not any(u == url for _, u in urls):
            urls[(role, url)] = "default port"
    return urls


def _print_workers(urls: dict[tuple[str, str], str], families: dict[str, list | None]) -> None:
    """Each worker of ``urls``: where its metrics are, whether it is ready, its counters."""
    for (role, url), who in sorted(urls.items()):
        summary = _scrape_counters(families.get(url), _PREFIXES.get(role, f"featurestream_{role}_"))
        if summary is None:
            continue
        print(f"{role} ({who}, metrics on {url.removeprefix('http://')}, {_ready(url)}): {summary}")


def _ready(url: str) -> str:
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/ready", timeout=1):
            return "ready"
    except urllib.error.HTTPError as exc:
        try:
            return f"not ready: {json.loads(exc.read())['reason']}"
        except (ValueError, KeyError):
            return "not ready"
    except OSError:
        return "not answering /ready"


def _scrape_counters(families: list | None, prefix: str) -> str | None:
    """One line of a worker's counters from its /metrics families (None: it did not answer)."""
    if families is None:
        return None
    totals: dict[str, float] = {}
    for family in families:
        if not family.name.startswith(prefix):
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            label = sample.labels.get("status") or sample.labels.get("outcome") or ""
            key = family.name.removeprefix(prefix) + (f"[{label}]" if label else "")
            totals[key] = totals.get(key, 0) + sample.value
    return ", ".join(f"{k}={v:,.0f}" for k, v in sorted(totals.items())) or "no counters yet"


def register(subparsers: argparse._SubParsersAction) -> None:
    from featurestream.stack.layout import StackPorts

    defaults = StackPorts()
    up = subparsers.add_parser(
        "up", help="start a local Kafka, Redis and S3 server; prints export lines for eval",
        description="Start what is missing of the local stack (idempotent) and print one `export NAME=value` "
                    "line per setting on stdout, so `eval \"$(featurestream up)\"` configures the shell. "
                    "Endpoints already set in the environment are used as they are, not started.",
    )
    _add_common(up)
    up.add_argument("--kafka-port", type=int, default=defaults.kafka, help="Kafka client port (%(default)s)")
    up.add_argument("--controller-port", type=int, default=defaults.controller,
                    help="KRaft controller port (%(default)s)")
    up.add_argument("--redis-port", type=int, default=defaults.redis, help="Redis port (%(default)s)")
    up.add_argument("--s3-port", type=int, default=defaults.s3, help="S3 server port (%(default)s)")
    up.add_argument("--kafka-security", choices=["plaintext", "sasl_ssl"], default=None,
                    help="sasl_ssl: Kafka also listens with SASL_SSL on --kafka-sasl-port (a throw-away CA and a "
                         "user 'featurestream' made in the state dir; SCRAM-SHA-512 or PLAIN), and the exports "
                         "point clients there with FEATURESTREAM_KAFKA_* settings. Default: as the running "
                         "broker is, else plaintext")
    up.add_argument("--kafka-sasl-port", type=int, default=defaults.kafka_sasl,
                    help="Kafka's SASL_SSL port with --kafka-security sasl_ssl (%(default)s)")
    up.set_defaults(func=_up)

    down = subparsers.add_parser("down", help="stop the processes `up` started",
                                 description="Stop exactly the processes `up` started from this state dir.")
    _add_common(down)
    down.set_defaults(func=_down)

    st = subparsers.add_parser("status", help="show what runs where and whether it answers")
    _add_common(st)
    st.set_defaults(func=_status)
