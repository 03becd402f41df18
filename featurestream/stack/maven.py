"""Jars from Maven Central, fetched once into the cache with ``mvn dependency:copy-dependencies``.

A small pom under ``deploy/`` lists what to fetch (the Kafka broker's, Spark's Iceberg jars);
Maven resolves and downloads them. Shared by :mod:`featurestream.stack.kafka` and
:mod:`featurestream.stack.spark_jars`.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from featurestream.stack.errors import StackError, ToolMissingError


def copy_dependencies(pom: Path, dest: Path, *, complete: Callable[[Path], bool], what: str,
                      if_missing: str, search_path: str | None = None) -> bool:
    """Download the dependencies ``pom`` lists into ``dest`` unless ``complete(dest)`` already
    holds; True when it downloaded. ``what`` names the jars in errors; ``if_missing`` is the
    advice given when Maven itself is not installed."""
    if complete(dest):
        return False
    mvn = shutil.which("mvn", path=search_path)
    if mvn is None:
        raise ToolMissingError(f"{what}: `mvn` (Apache Maven) was not found on PATH; it fetches the jars from "
                               f"Maven Central. Install it (Debian: apt-get install maven){if_missing}.")
    if not pom.is_file():
        raise StackError(f"{what}: {pom} is missing; it lists the jars to fetch (in the featurestream "
                         "source tree)")
    # Download into a sibling dir and rename: a half-finished fetch is never taken for a cache.
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={partial}"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
    )
    if result.returncode != 0 or not complete(partial):
        output = (result.stdout + result.stderr).strip().splitlines()[-20:]
        raise StackError(f"{what}: fetching the jars with Maven ({pom}) failed (exit {result.returncode}):\n"
                         + "\n".join(output))
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    return True
