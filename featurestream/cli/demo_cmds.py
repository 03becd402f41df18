"""`featurestream demo`: the whole flow end to end on the local stack."""

from __future__ import annotations

import argparse

from featurestream.config import Config


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo", help="run the whole flow end to end on the local stack",
        description="Start the local stack (unless endpoints are configured), create two demo feature groups, "
                    "publish their data, read it online (SDK and HTTP API), then query the offline store "
                    "(snapshot and a point-in-time join). Re-running it starts the demo groups afresh.")
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from featurestream.demo import run_demo

    return run_demo(Config.from_env(catalog_uri=getattr(args, "catalog_uri", None)))
