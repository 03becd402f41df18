"""docker-compose.yml is valid against the compose specification and wired consistently."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML  # installed with check-jsonschema

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def _compose_spec_validator() -> jsonschema.protocols.Validator:
    # check-jsonschema vendors the compose-spec JSON schema; read the file directly (no network,
    # and no import of its CLI, whose click requirement can clash with faust's).
    spec = importlib.util.find_spec("check_jsonschema")
    assert spec is not None and spec.submodule_search_locations, "check-jsonschema is not installed"
    path = Path(spec.submodule_search_locations[0]) / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(path.read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def _load(path: Path) -> dict:
    return YAML(typ="safe").load(path.read_text())


def test_compose_file_validates_against_the_compose_spec():
    errors = sorted(_compose_spec_validator().iter_errors(_load(COMPOSE)), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


@pytest.mark.parametrize("text", [
    "services:\n  api:\n    image: 42\n    ports: {not: a-list}\n",
    "services:\n  api:\n    image: x\n    restart: sometimes-maybe\n    bogus_key: 1\n",
])
def test_a_broken_compose_file_is_refused(text, tmp_path):
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(text)
    assert list(_compose_spec_validator().iter_errors(_load(bad)))


def test_featurestream_services_share_the_same_configuration():
    spec = _load(COMPOSE)
    services = spec["services"]
    assert {"kafka", "redis", "minio", "minio-init", "processor", "sink", "api"} <= set(services)
    env = {name: services[name]["environment"] for name in ("processor", "sink", "api")}
    assert env["processor"] == env["sink"] == env["api"]
    assert env["api"]["FEATURESTREAM_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert services["processor"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (ROOT / "deploy" / "Dockerfile").exists()
    assert services["processor"]["command"][0] == "process"
    assert services["sink"]["command"][0] == "sink"
    assert services["api"]["command"][0] == "serve"
