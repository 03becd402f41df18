"""docker-compose.yml is valid against the compose specification and wired consistently."""

from __future__ import annotations

import importlib.util
import json
import re
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


def _replicas_by_role(services: dict, profiles: set[str]) -> dict[str, int]:
    """How many containers run each featurestream command when ``profiles`` are active."""
    counts: dict[str, int] = {}
    for svc in services.values():
        if set(svc.get("profiles", [])) - profiles or svc.get("image") != "featurestream:local":
            continue
        role = svc["command"][0]
        counts[role] = counts.get(role, 0) + svc.get("deploy", {}).get("replicas", 1)
    return counts


def test_the_scale_profile_runs_3_processors_2_sinks_and_2_api_servers_behind_one_port():
    spec = _load(COMPOSE)
    services = spec["services"]
    assert _replicas_by_role(services, set()) == {"process": 1, "sink": 1, "serve": 1}
    assert _replicas_by_role(services, {"scale"}) == {"process": 3, "sink": 2, "serve": 2}
    scaled = {name for name, svc in services.items() if "scale" in svc.get("profiles", [])}
    assert scaled == {"processor-extra", "sink-extra", "api-extra", "api-lb"}
    for name in scaled - {"api-lb"}:
        base = name.removesuffix("-extra")
        # The extra workers are the same program with the same settings: same consumer groups.
        assert services[name]["environment"] == services[base]["environment"], name
        assert services[name]["command"] == services[base]["command"], name
        assert "ports" not in services[name], f"{name} must not publish a host port (replicas would collide)"
    lb = services["api-lb"]
    assert lb["ports"] == ["127.0.0.1:8088:8080"]
    (config,) = lb["configs"]
    content = spec["configs"][config["source"]]["content"]
    api_port = services["api"]["command"][services["api"]["command"].index("--port") + 1]
    upstreams = re.findall(r"^\s*server\s+([\w-]+):(\d+)", content, re.M)
    assert upstreams == [("api", api_port), ("api-extra", api_port)]
    # Compose interpolates $: nginx's own variables must be written $$ to survive.
    assert "$$http_host" in content and not re.search(r"(?<!\$)\$http_host", content)
    assert {"api", "api-extra"} <= set(lb["depends_on"])


def test_workers_serve_health_on_all_interfaces_in_containers():
    services = _load(COMPOSE)["services"]
    for name in ("processor", "sink", "processor-extra", "sink-extra"):
        command = services[name]["command"]
        assert command[command.index("--metrics-host") + 1] == "0.0.0.0", name
        port = command[command.index("--metrics-port") + 1]
        test = services[name]["healthcheck"]["test"]
        assert "/health" in " ".join(test) and test[-1] == port, name
