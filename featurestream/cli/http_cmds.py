"""`featurestream serve`: the HTTP API compatible with the AWS SDKs (see featurestream/http/README.md)."""

from __future__ import annotations

import argparse
import re
import sys
from typing import TYPE_CHECKING

from featurestream.cli import CliError
from featurestream.cli._common import add_delivery_timeout, config_from_args
from featurestream.config import Config
from featurestream.http.limits import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_BODY_IN_FLIGHT_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_REDIS_TIMEOUT_S,
    MIN_BODY_TIMEOUT_S,
    MIN_MAX_RESPONSE_BYTES,
    MIN_REDIS_TIMEOUT_S,
    Limits,
)

if TYPE_CHECKING:
    from featurestream.http.credentials import AccessKey

NO_AUTH_WARNING = """\
featurestream: WARNING: AUTHENTICATION IS OFF (--no-auth).
featurestream: WARNING: anyone who can reach this port can read, write and delete every feature group.
featurestream: WARNING: use it only on a developer machine bound to 127.0.0.1."""


def register(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser(
        "serve", help="serve the SageMaker Feature Store API over HTTP (boto3 and other AWS SDKs work)",
        description="Serve PutRecord, GetRecord, BatchGetRecord, DeleteRecord, BatchWriteRecord and the "
                    "feature-group operations (Create/Describe/List/Update/DeleteFeatureGroup) on one endpoint, "
                    "on the wire protocols of SageMaker Feature Store. Requests must be signed (AWS Signature "
                    "Version 4) with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a pair from --credentials.")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (8080; 0 picks a free one)")
    serve.add_argument("--workers", type=int, default=2, help="worker processes (2: one per core here)")
    serve.add_argument("--event-loop", choices=("uvloop", "asyncio"), default="uvloop",
                       help="uvloop (default: ~20%% less CPU per request here) or asyncio's own loop")
    serve.add_argument("--no-fast-lane", dest="fast_lane", action="store_false",
                       help="serve every request through aiohttp's server, not only the connections the fast "
                            "lane hands over (it answers plain HTTP/1.1 requests itself, at less CPU each): "
                            "to tell a fast-lane problem from another")
    serve.add_argument("--threads", type=int, default=32,
                       help="threads per worker for blocking calls: the registry, the control plane, "
                            "ListRecords/UpdateRecord (32); GetRecord/BatchGetRecord need none")
    serve.add_argument("--credentials", metavar="FILE",
                       help="more access keys, in the AWS credentials file format ([name] with "
                            "aws_access_key_id and aws_secret_access_key), each optionally limited with "
                            "featurestream_read/featurestream_write/featurestream_admin = group patterns "
                            "(a key without them has full access)")
    serve.add_argument("--no-auth", action="store_true",
                       help="accept unsigned requests (local development only; prints a warning)")
    serve.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                       help="largest request body accepted (2 MiB); larger ones are answered 413")
    serve.add_argument("--max-response-bytes", type=int, default=DEFAULT_MAX_RESPONSE_BYTES,
                       help="most bytes one BatchGetRecord answer holds (16 MiB); identifiers beyond it come "
                            "back in UnprocessedIdentifiers, to ask again")
    serve.add_argument("--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT_S, metavar="SECONDS",
                       help="time a client has to send its whole request body (30); after it, 408 and the "
                            "connection is closed")
    serve.add_argument("--max-body-in-flight-bytes", type=int, default=DEFAULT_MAX_BODY_IN_FLIGHT_BYTES,
                       help="bytes of request bodies one worker receives at once (16 MiB; at least "
                            "--max-body-bytes); a request beyond it is answered 503 ThrottlingException, which "
                            "the AWS SDKs retry")
    serve.add_argument("--regions", metavar="REGION[,REGION...]",
                       help="the regions requests may be signed for (default: any); others are refused with "
                            "InvalidSignatureException")
    serve.add_argument("--redis-timeout", type=float, default=DEFAULT_REDIS_TIMEOUT_S, metavar="SECONDS",
                       help="socket timeout of the server's Redis reads (1); a Redis that stops answering fails "
                            "reads with ServiceUnavailable after about twice this")
    add_delivery_timeout(serve)
    serve.set_defaults(func=_serve)


def _credentials(config: Config, path: str | None) -> dict[str, AccessKey]:
    from featurestream.http.credentials import AccessKey, CredentialsError, load_credentials
    from featurestream.http.permissions import Permissions

    keys: dict[str, AccessKey] = {}
    if config.aws_access_key_id and config.aws_secret_access_key:
        # The operator's own pair: full access, unless the file names the same key id (it then decides).
        keys[config.aws_access_key_id] = AccessKey(config.aws_secret_access_key, Permissions.everything())
    if path:
        try:
            keys.update(load_credentials(path))
        except CredentialsError as exc:
            raise CliError(str(exc), 2) from None
    if not keys:
        raise CliError("no access keys to verify request signatures with: set AWS_ACCESS_KEY_ID and "
                       "AWS_SECRET_ACCESS_KEY (`featurestream up` exports them), pass --credentials FILE, or "
                       "--no-auth for local development", 2)
    return keys


def _announce_keys(keys: dict[str, AccessKey]) -> None:
    """What each key may do, once at start-up: a key left with full access by mistake shows here."""
    for key, access in keys.items():
        print(f"featurestream: access key {key}: {access.permissions.describe()}", file=sys.stderr, flush=True)


def _regions(text: str | None) -> frozenset[str] | None:
    """--regions: a comma-separated list of region names (None: any region)."""
    if text is None:
        return None
    regions = frozenset(r.strip() for r in text.split(",") if r.strip())
    bad = sorted(r for r in regions if not re.fullmatch(r"[a-z0-9-]{1,40}", r))
    if not regions or bad:
        raise CliError(f"--regions must be region names separated by commas (us-east-1,eu-west-1); got {text!r}", 2)
    return regions


def _serve(args: argparse.Namespace) -> int:
    from featurestream.http.server import serve

    for flag, value, low in (("--port", args.port, 0), ("--workers", args.workers, 1), ("--threads", args.threads, 1),
                             ("--max-body-bytes", args.max_body_bytes, 1024),
                             ("--max-response-bytes", args.max_response_bytes, MIN_MAX_RESPONSE_BYTES),
                             ("--body-timeout", args.body_timeout, MIN_BODY_TIMEOUT_S),
                             ("--max-body-in-flight-bytes", args.max_body_in_flight_bytes, args.max_body_bytes),
                             ("--redis-timeout", args.redis_timeout, MIN_REDIS_TIMEOUT_S)):
        if value < low or (flag == "--port" and value > 65535):
            raise CliError(f"{flag} must be at least {low}" + (" and at most 65535" if flag == "--port" else "")
                           + (" (--max-body-bytes)" if flag == "--max-body-in-flight-bytes" else "")
                           + f"; got {value}", 2)
    from featurestream.config import ConfigError

    try:
        config = config_from_args(args)
        config.kafka()
        config.require("redis_url")
    except ConfigError as exc:
        raise CliError(str(exc), 2) from None
    if args.no_auth:
        if args.credentials:
            raise CliError("--no-auth and --credentials contradict each other; choose one", 2)
        print(NO_AUTH_WARNING, file=sys.stderr, flush=True)
        credentials = None
    else:
        credentials = _credentials(config, args.credentials)
        _announce_keys(credentials)
    limits = Limits(max_body_bytes=args.max_body_bytes, max_response_bytes=args.max_response_bytes,
                    body_timeout_s=args.body_timeout, max_body_in_flight_bytes=args.max_body_in_flight_bytes,
                    redis_timeout_s=args.redis_timeout)
    try:
        return serve(config, host=args.host, port=args.port, credentials=credentials, workers=args.workers,
                     threads=args.threads, limits=limits, regions=_regions(args.regions),
                     event_loop=args.event_loop, fast_lane=args.fast_lane)
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
