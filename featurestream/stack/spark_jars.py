"""The jars Spark needs to read featurestream's Iceberg tables, fetched once from Maven Central.

``deploy/spark/pom.xml`` lists them: Iceberg's Spark 4.1 runtime, its AWS bundle (S3FileIO) and
the JDBC drivers of the catalog database (SQLite, PostgreSQL). ``make setup`` fetches them into
``~/.featurestream/cache/spark-iceberg`` (see :mod:`featurestream.stack.fetch`); give them to
Spark with ``--jars`` (or ``spark.jars``). The interop test does exactly that.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from featurestream.stack import maven
from featurestream.stack.errors import StackError

SPARK_POM = Path(__file__).resolve().parents[2] / "deploy" / "spark" / "pom.xml"
_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


@dataclass(frozen=True)
class Artifact:
    group: str
    name: str
    version: str

    @property
    def coordinate(self) -> str:
        """``group:artifact:version``, as ``spark-submit --packages`` takes it."""
        return f"{self.group}:{self.name}:{self.version}"

    @property
    def jar(self) -> str:
        return f"{self.name}-{self.version}.jar"


def pom_artifacts(pom: Path = SPARK_POM) -> list[Artifact]:
    """The artifacts ``pom`` depends on, with its ``${property}`` versions resolved."""
    try:
        root = ET.parse(pom).getroot()
    except (OSError, ET.ParseError) as exc:
        raise StackError(f"spark jars: cannot read {pom}: {exc}") from None
    props = {el.tag.split("}", 1)[1]: (el.text or "").strip() for el in root.findall("m:properties/*", _NS)}
    out = []
    for dep in root.findall("m:dependencies/m:dependency", _NS):
        version = dep.findtext("m:version", "", _NS).strip()
        if version.startswith("${") and version.endswith("}"):
            version = props.get(version[2:-1], version)
        out.append(Artifact(dep.findtext("m:groupId", "", _NS).strip(), dep.findtext("m:artifactId", "", _NS).strip(),
                            version))
    return out


def jars_dir(cache_dir: Path) -> Path:
    return cache_dir / "spark-iceberg"


def _complete(directory: Path, pom: Path = SPARK_POM) -> bool:
    return all((directory / a.jar).is_file() for a in pom_artifacts(pom))


def jar_paths(cache_dir: Path, pom: Path = SPARK_POM) -> list[Path]:
    """The cached jars, in the pom's order; an error naming ``make setup`` if any is missing."""
    directory = jars_dir(cache_dir)
    missing = [a.jar for a in pom_artifacts(pom) if not (directory / a.jar).is_file()]
    if missing:
        raise StackError(f"spark jars: {', '.join(missing)} not in {directory}; run `make setup` (or "
                         "`python -m featurestream.stack.fetch`) to fetch them from Maven Central")
    return [directory / a.jar for a in pom_artifacts(pom)]


def fetch(cache_dir: Path, *, pom: Path = SPARK_POM, search_path: str | None = None) -> bool:
    """Download the jars unless cached; True when it downloaded."""
    return maven.copy_dependencies(pom, jars_dir(cache_dir), complete=lambda d: _complete(d, pom),
                                   what="spark jars", if_missing="; only reading the tables from Spark needs them",
                                   search_path=search_path)
