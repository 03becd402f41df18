"""`featurestream serve`: the HTTP API compatible with the AWS SDKs (see featurestream/http/README.md)."""

from __future__ import annotations

import argparse
import sys

from featurestream.cli import CliError
from featurestream.config import Config

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
    serve.add_argument("--threads", type=int, default=32, help="threads per worker for Redis/registry calls (32)")
    serve.add_argument("--credentials", metavar="FILE",
                       help="more access keys, in the AWS credentials file format ([name] with "
                            "aws_access_key_id and aws_secret_access_key)")
    serve.add_argument("--no-auth", action="store_true",
                       help="accept unsigned requests (local development only; prints a warning)")
    serve.add_argument("--max-body-bytes", type=int, default=2 * 1024 * 1024,
                       help="largest request body accepted (2 MiB)")
    serve.set_defaults(func=_serve)


def _credentials(config: Config, path: str | None) -> dict[str, str]:
    from featurestream.http.credentials import CredentialsError, load_credentials

    keys: dict[str, str] = {}
    if config.aws_access_key_id and config.aws_secret_access_key:
        keys[config.aws_access_key_id] = config.aws_secret_access_key
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


def _serve(args: argparse.Namespace) -> int:
    from featurestream.http.server import serve

    for flag, value, low in (("--port", args.port, 0), ("--workers", args.workers, 1), ("--threads", args.threads, 1),
                             ("--max-body-bytes", args.max_body_bytes, 1024)):
        if value < low or (flag == "--port" and value > 65535):
            raise CliError(f"{flag} must be at least {low}" + (" and at most 65535" if flag == "--port" else "")
                           + f"; got {value}", 2)
    from featurestream.config import ConfigError

    config = Config.from_env(catalog_uri=getattr(args, "catalog_uri", None))
    try:
        config.require("kafka_bootstrap")
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
    try:
        return serve(config, host=args.host, port=args.port, credentials=credentials, workers=args.workers,
                     threads=args.threads, max_body=args.max_body_bytes)
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
