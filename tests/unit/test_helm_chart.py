"""The Helm chart (deploy/helm/featurestream) lints, renders and validates without a cluster.

helm comes from `make fetch` (built with `go install`, cached under ~/.featurestream/cache/bin);
every rendered object is checked against the Kubernetes JSON schemas bundled in
kubernetes-validate, in strict mode (unknown fields are errors), for the oldest and the newest
Kubernetes version the chart targets. Then what matters is asserted: probes, env, replicas,
the security context, resources, the PDBs and the HPA, and that every container's arguments
parse with featurestream's own CLI.
"""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

from featurestream import config as fs_config
from featurestream.cli import build_parser
from featurestream.stack.helm import HELM_VERSION, find_helm
from featurestream.stack.layout import DEFAULT_CACHE_DIR

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "featurestream"
EXAMPLES = ROOT / "deploy" / "helm" / "examples"
PRODUCTION = CHART / "values-production.yaml"
KAFKA_SASL_SSL = CHART / "values-kafka-sasl-ssl.yaml"
KUBE_VERSIONS = ("1.25.0", "1.37.0")  # oldest with every API used here (policy/v1, autoscaling/v2) .. newest
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "Kafka", "KafkaNodePool", "KafkaTopic"}
ROLES = {"processor": "process", "sink": "sink", "api": "serve", "auditor": "auditor"}


@cache
def helm() -> str:
    found = find_helm(DEFAULT_CACHE_DIR / "bin")
    if found is None:
        pytest.fail(f"helm not found in {DEFAULT_CACHE_DIR / 'bin'} nor on PATH: run `make fetch`, which builds "
                    f"helm {HELM_VERSION} with `go install` (needs a Go toolchain)", pytrace=False)
    return found


def run_helm(*args: str) -> str:
    result = subprocess.run([helm(), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@cache
def render(*value_files: Path, release: str = "fs", sets: tuple[str, ...] = ()) -> tuple[dict, ...]:
    args = ["template", release, str(CHART), "--namespace", "features"]
    for f in value_files:
        args += ["-f", str(f)]
    for s in sets:
        args += ["--set", s]
    return tuple(doc for doc in yaml.safe_load_all(run_helm(*args)) if doc)


def by_kind(docs: tuple[dict, ...], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def deployments(docs: tuple[dict, ...]) -> dict[str, dict]:
    """Deployments by role (the app.kubernetes.io/component label)."""
    return {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in by_kind(docs, "Deployment").values()}


VALUE_SETS = {"default": (), "production": (PRODUCTION,), "production-kafka-sasl-ssl": (PRODUCTION, KAFKA_SASL_SSL)}


# --------------------------------------------------------------------------- lint and validate
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_helm_lint_strict(values: tuple[Path, ...]) -> None:
    args = ["lint", "--strict", str(CHART)]
    for f in values:
        args += ["-f", str(f)]
    assert "0 chart(s) failed" in run_helm(*args)


def _validate_strictly(doc: dict, version: str) -> None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except SchemaNotFoundError:
        assert doc["kind"] in CRD_KINDS, f"no schema for {doc['kind']} {doc['apiVersion']}"
    except kubernetes_validate.ValidationError as exc:
        raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']} is invalid for Kubernetes {version}: "
                             f"{'.'.join(map(str, exc.path))}: {exc.message}") from None


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_rendered_object_validates_in_strict_mode(values: tuple[Path, ...], version: str) -> None:
    docs = render(*values)
    assert len(docs) >= 12
    for doc in docs:
        _validate_strictly(doc, version)


def test_strict_validation_catches_a_misspelt_field() -> None:
    deployment = next(iter(by_kind(render(), "Deployment").values()))
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 5
    with pytest.raises(AssertionError, match="periodSecond"):
        _validate_strictly(broken, KUBE_VERSIONS[-1])


def test_example_manifests_render_known_kinds() -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert doc["kind"] in CRD_KINDS, f"{path.name}: unexpected kind {doc['kind']}"
                assert doc["metadata"]["name"] and doc["spec"], path.name


# --------------------------------------------------------------------------- what matters
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_role_is_non_root_with_a_read_only_root_and_a_writable_tmp(values: tuple[Path, ...]) -> None:
    for role, dep in deployments(render(*values)).items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, role
        assert pod["securityContext"]["runAsUser"] == 10001, role  # the image's user (deploy/Dockerfile)
        (container,) = pod["containers"]
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, role
        assert sc["capabilities"]["drop"] == ["ALL"], role
        tmp = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert tmp["tmp"] == "/tmp" and "emptyDir" in volumes["tmp"], role
        assert container["workingDir"] == "/tmp", role  # faust creates its data dir in the cwd
        assert pod["automountServiceAccountToken"] is False, role


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_probes_hit_health_and_ready_on_the_port_the_process_listens_on(values: tuple[Path, ...]) -> None:
    for role, dep in deployments(render(*values)).items():
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        live, ready = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
        assert (live["path"], ready["path"]) == ("/health", "/ready"), role
        assert live["port"] == ready["port"] and live["port"] in ports, role
        args = build_parser().parse_args(container["args"])
        listening = args.port if role == "api" else args.metrics_port
        host = args.host if role == "api" else args.metrics_host
        assert listening == ports[live["port"]], role
        assert host == "0.0.0.0", f"{role} listens on {host}: kubelet probes and Prometheus could not reach it"
        annotations = dep["spec"]["template"]["metadata"]["annotations"]
        if "prometheus.io/port" in annotations:
            assert annotations["prometheus.io/port"] == str(listening), role


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_each_role_runs_its_command_and_every_argument_parses(values: tuple[Path, ...]) -> None:
    for role, dep in deployments(render(*values)).items():
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        assert container["args"][0] == ROLES[role]
        build_parser().parse_args(container["args"])  # exits (SystemExit) on an unknown flag


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_env_comes_from_the_configmap_and_the_secret_with_variables_featurestream_reads(
        values: tuple[Path, ...]) -> None:
    docs = render(*values)
    (configmap,) = by_kind(docs, "ConfigMap").values()
    known = {getattr(fs_config, n) for n in dir(fs_config) if n.startswith("ENV_")}
    known |= set(fs_config.KAFKA_SECURITY_ENV.values())
    # Not read by Config: AWS's own region variable, HOME, and the catalog URI the SPEC's Iceberg
    # offline store will read (values.yaml says so).
    extra = {"AWS_DEFAULT_REGION", "HOME", "FEATURESTREAM_OFFLINE_CATALOG_URI"}
    assert set(configmap["data"]) <= known | extra, set(configmap["data"]) - known - extra
    assert {fs_config.ENV_KAFKA, fs_config.ENV_OFFLINE_URI, fs_config.ENV_TOPIC_PREFIX} <= set(configmap["data"])
    secrets = by_kind(docs, "Secret")
    for secret in secrets.values():
        assert set(secret["stringData"]) <= known | extra
        assert fs_config.ENV_REDIS in secret["stringData"]  # may hold a password: never in the ConfigMap
    assert fs_config.ENV_REDIS not in configmap["data"]
    secret_name = next(iter(secrets)) if secrets else "featurestream-credentials"
    for role, dep in deployments(docs).items():
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        assert container["envFrom"] == [{"configMapRef": {"name": configmap["metadata"]["name"]}},
                                        {"secretRef": {"name": secret_name}}], role


def _quantity(q: str | int) -> float:
    text = str(q)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_resources_are_set_and_requests_fit_within_limits(values: tuple[Path, ...]) -> None:
    for role, dep in deployments(render(*values)).items():
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        res = container["resources"]
        for kind in ("cpu", "memory"):
            assert _quantity(res["requests"][kind]) <= _quantity(res["limits"][kind]), (role, kind)
        # The processor runs two processes (faust + the apply child): README measured 0.7 + 0.5 core.
        if role == "processor":
            assert _quantity(res["requests"]["cpu"]) >= 1.2


def test_default_replicas_grace_periods_pdbs_and_hpa() -> None:
    docs = render()
    deps = deployments(docs)
    assert deps["processor"]["spec"]["replicas"] == 2
    assert deps["sink"]["spec"]["replicas"] == 1
    assert "replicas" not in deps["api"]["spec"]  # the HPA owns it
    grace = {role: d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] for role, d in deps.items()}
    assert grace == {"processor": 30, "sink": 60, "api": 30, "auditor": 30}
    # One auditor per deployment, never two at once (not even during an upgrade): a second one would
    # read every topic again and count every mismatch twice.
    assert deps["auditor"]["spec"]["replicas"] == 1
    assert deps["auditor"]["spec"]["strategy"] == {"type": "Recreate"}
    pdbs = by_kind(docs, "PodDisruptionBudget")
    assert len(pdbs) == 3  # processor, sink, api: a PDB over one auditor replica would only block drains
    for pdb in pdbs.values():
        selected = [role for role, d in deps.items()
                    if pdb["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1 and pdb["spec"]["maxUnavailable"] == 1, pdb["metadata"]["name"]
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deps["api"]["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    services = by_kind(docs, "Service")
    api_service = services[deps["api"]["metadata"]["name"]]
    assert api_service["spec"]["selector"] == deps["api"]["spec"]["selector"]["matchLabels"]
    assert not by_kind(docs, "ServiceMonitor")


def test_production_values_use_an_existing_secret_a_service_monitor_and_api_keys() -> None:
    docs = render(PRODUCTION)
    deps = deployments(docs)
    assert not by_kind(docs, "Secret")
    assert deps["processor"]["spec"]["replicas"] == 4 and deps["sink"]["spec"]["replicas"] == 3
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["minReplicas"] == 3
    (monitor,) = by_kind(docs, "ServiceMonitor").values()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"metrics", "http"}
    scraped = [s for s in by_kind(docs, "Service").values()
               if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert sorted(p["name"] for s in scraped for p in s["spec"]["ports"]) == ["http", "metrics", "metrics", "metrics"]
    api = deps["api"]["spec"]["template"]["spec"]
    (container,) = api["containers"]
    args = build_parser().parse_args(container["args"])
    mount = next(m for m in container["volumeMounts"] if m["name"] == "api-keys")
    assert args.credentials == f"{mount['mountPath']}/credentials"
    assert next(v for v in api["volumes"] if v["name"] == "api-keys")["secret"]["secretName"] == "featurestream-api-keys"
    sa = next(iter(by_kind(docs, "ServiceAccount").values()))
    assert "eks.amazonaws.com/role-arn" in sa["metadata"]["annotations"]


def test_alert_rules_name_metrics_that_exist() -> None:
    from tests.support.exported_metrics import FEATURESTREAM_METRIC, exported_metric_names

    ours = exported_metric_names()
    (rules,) = [d for d in yaml.safe_load_all((EXAMPLES / "prometheus-rules.yaml").read_text()) if d]
    alerts = [r for g in rules["spec"]["groups"] for r in g["rules"]]
    assert {a["alert"] for a in alerts} >= {"FeaturestreamOnlineLagHigh", "FeaturestreamDeadLetters",
                                           "FeaturestreamOnlineRebuild", "FeaturestreamSinkCommitStale",
                                           "FeaturestreamOnlineFreshnessSlow", "FeaturestreamOfflineFreshnessSlow",
                                           "FeaturestreamParityMismatch", "FeaturestreamAuditorStale"}
    named = {m for a in alerts for m in FEATURESTREAM_METRIC.findall(a["expr"])}
    assert named and named <= ours, named - ours
    assert {"featurestream_freshness_seconds_bucket", "featurestream_parity_mismatch_total"} <= named


def test_kafka_sasl_ssl_values_reach_config_and_mount_the_ca(tmp_path: Path) -> None:
    """The ConfigMap's Kafka settings plus the Secret's password build the KafkaSecurity they describe,
    and every role mounts the CA Secret where FEATURESTREAM_KAFKA_SSL_CA_LOCATION points."""
    docs = render(PRODUCTION, KAFKA_SASL_SSL)
    (configmap,) = by_kind(docs, "ConfigMap").values()
    ca_path = configmap["data"]["FEATURESTREAM_KAFKA_SSL_CA_LOCATION"]
    assert ca_path == "/etc/featurestream/kafka-tls/ca.crt"
    local_ca = tmp_path / "ca.crt"
    local_ca.write_text("pem")
    env = {**configmap["data"], "FEATURESTREAM_KAFKA_SSL_CA_LOCATION": str(local_ca),
           "FEATURESTREAM_KAFKA_SASL_PASSWORD": "from-the-existing-secret"}
    security = fs_config.Config.from_env(env).kafka().security
    assert (security.protocol, security.sasl_mechanism, security.sasl_username) == (
        "SASL_SSL", "SCRAM-SHA-512", "featurestream")
    for role, dep in deployments(docs).items():
        spec = dep["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "kafka-tls")
        assert mount["readOnly"] and ca_path.startswith(mount["mountPath"] + "/"), role
        volume = next(v for v in spec["volumes"] if v["name"] == "kafka-tls")
        assert volume["secret"]["secretName"] == "featurestream-kafka-cluster-ca-cert", role
    default = render()
    (plain,) = by_kind(default, "ConfigMap").values()
    assert not any(k.startswith("FEATURESTREAM_KAFKA_S") for k in plain["data"])  # PLAINTEXT: nothing added
    (secret,) = by_kind(default, "Secret").values()
    assert "FEATURESTREAM_KAFKA_SASL_PASSWORD" not in secret["stringData"]


def _scraped_auditor(docs: tuple[dict, ...]) -> tuple[dict, object]:
    """The auditor's Deployment and its parsed arguments; asserts Prometheus can scrape it the way it
    scrapes the other workers (pod annotations, and a metrics Service a ServiceMonitor selects)."""
    (auditor,) = [d for d in deployments(docs).values()
                  if d["spec"]["template"]["spec"]["containers"][0]["args"][0] == "auditor"]
    pod = auditor["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    args = build_parser().parse_args(container["args"])
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
    assert (args.metrics_host, args.metrics_port) == ("0.0.0.0", port)
    annotated = pod["metadata"]["annotations"].get("prometheus.io/port") == str(port)
    monitors = by_kind(docs, "ServiceMonitor").values()
    assert annotated or monitors, "nothing would scrape the auditor"
    services = [s for s in by_kind(docs, "Service").values()
                if s["metadata"]["labels"].get("featurestream.io/metrics") == "true"
                and s["spec"]["selector"].items() <= pod["metadata"]["labels"].items()]
    assert [p["name"] for s in services for p in s["spec"]["ports"]] == ["metrics"]
    for monitor in monitors:
        assert monitor["spec"]["selector"]["matchLabels"].items() <= services[0]["metadata"]["labels"].items()
        assert "metrics" in {e["port"] for e in monitor["spec"]["endpoints"]}
    return auditor, args


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_the_parity_alerts_have_a_source_in_the_chart(values: tuple[Path, ...]) -> None:
    """Every featurestream_parity_* series the example alerts read is one only `featurestream auditor`
    exports, and the chart runs one auditor, scraped like the other workers, at the CLI's defaults."""
    from streams.metrics import PARITY_METRICS
    from tests.support.exported_metrics import FEATURESTREAM_METRIC

    (rules,) = [d for d in yaml.safe_load_all((EXAMPLES / "prometheus-rules.yaml").read_text()) if d]
    named = {m for g in rules["spec"]["groups"] for r in g["rules"] for m in FEATURESTREAM_METRIC.findall(r["expr"])
             if m.startswith("featurestream_parity_")}
    parity = {family.name for m in vars(PARITY_METRICS).values() for family in m.describe()}
    assert named and {n.removesuffix("_total") for n in named} <= parity, named
    _auditor, args = _scraped_auditor(render(*values))
    defaults = build_parser().parse_args(["auditor"])
    for flag in ("interval_s", "sample", "rows", "offline_every", "no_heal", "heal_group_above"):
        assert getattr(args, flag) == getattr(defaults, flag), flag


def test_the_auditor_values_reach_its_arguments_and_it_can_be_disabled() -> None:
    docs = render(sets=("auditor.intervalSeconds=10", "auditor.sample=500", "auditor.rows=5", "auditor.offlineEvery=4",
                        "auditor.heal=false", "auditor.healGroupAbove=50", "auditor.metricsPort=9300"))
    _auditor, args = _scraped_auditor(docs)
    assert (args.interval_s, args.sample, args.rows, args.offline_every, args.no_heal, args.heal_group_above,
            args.metrics_port) == (10.0, 500, 5, 4, True, 50, 9300)
    off = render(sets=("auditor.enabled=false",))
    assert "auditor" not in deployments(off)
    assert not [s for s in by_kind(off, "Service") if "auditor" in s]
    assert set(deployments(off)) == {"processor", "sink", "api"}
