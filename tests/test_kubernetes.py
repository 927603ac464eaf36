"""deploy/kubernetes/, checked offline: no cluster runs here.

Every manifest is validated against pinned Kubernetes versions' schemas with kubernetes-validate
in strict mode (an unknown field fails), the CloudNativePG objects against a small schema of the
fields we set, written from the CNPG API types. Then the rules a schema cannot express, each a
function returning its problems: kustomization lists, replicas, probes that work under mutual
TLS, securityContext, resources against the measured RSS, Service selectors and ports, the
headless Service the reputation service's round_robin channel dials, every variable documented
and read by the service's own config loader (recorded while it runs), every Secret and ConfigMap
reference resolved, files mounted where the variables say, the loaders accepting the environment
the pods get, PodDisruptionBudgets, autoscalers, migration Jobs, one image, one namespace, Secret
templates holding placeholders only, graceful shutdown. `test_each_rule_can_fail` breaks a copy
of the manifests once per rule to show that rule reports it.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import re
import secrets
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from common import keygen
from common.app import SHUTDOWN_GRACE_SECONDS
from common.config import ConfigError, database_url, listen_address
from reputation_service.sessions_client import CHANNEL_OPTIONS
from tests.helpers import CONFIG_LOADERS, DATABASE_VARIABLE, FLOOD_PEAK_RSS_MB, Recording

ROOT = Path(__file__).resolve().parents[1]
KUBE = ROOT / "deploy" / "kubernetes"
README = ROOT / "README.md"
DOCKERFILE = ROOT / "Dockerfile"
BENCH = ROOT / "bench" / "results" / "reference.md"

# The oldest Kubernetes minor the manifests are meant for, and the newest kubernetes-validate
# (pinned in pyproject.toml) has schemas of.
KUBERNETES_VERSIONS = ("1.35.0", "1.37.0")
# Copies to fill in and apply by hand, never listed in a kustomization (they hold placeholders).
TEMPLATE_SUFFIX = ".example.yaml"
PLACEHOLDER = "REPLACE-ME"
# Keys of a Secret that name something without being secret.
NOT_SECRET_KEYS = {"username"}
CNPG_API = "postgresql.cnpg.io/v1"
CLUSTER_SCOPED = {"Namespace"}

HEALTHCHECK = ["python", "-m", "common.healthcheck"]


# ---- reading the manifests ----


@dataclass
class Manifests:
    """Every object under deploy/kubernetes with the file it is in (relative to it), each folder's
    kustomization, and the manifest files present in each folder."""

    objects: list[tuple[str, dict[str, Any]]]
    kustomizations: dict[str, dict[str, Any]]
    present: dict[str, set[str]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for _, doc in self.objects if doc.get("kind") == kind]

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        for doc in self.of_kind(kind):
            if doc.get("metadata", {}).get("name") == name:
                return doc
        return None


@functools.cache
def _texts() -> dict[str, str]:
    return {str(path.relative_to(KUBE)): path.read_text() for path in sorted(KUBE.rglob("*.yaml"))}


def load() -> Manifests:
    objects: list[tuple[str, dict[str, Any]]] = []
    kustomizations: dict[str, dict[str, Any]] = {}
    present: dict[str, set[str]] = {}
    for file, text in _texts().items():
        folder, name = str(Path(file).parent), Path(file).name
        if name == "kustomization.yaml":
            kustomizations[folder] = yaml.safe_load(text)
            present.setdefault(folder, set())
            continue
        present.setdefault(folder, set()).add(name)
        objects += [(file, doc) for doc in yaml.safe_load_all(text) if doc is not None]
    return Manifests(objects, kustomizations, present)


def name_of(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def workloads(m: Manifests) -> list[dict[str, Any]]:
    return m.of_kind("Deployment") + m.of_kind("Job")


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"].get("metadata", {}).get("labels", {})


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return pod_spec(workload).get("containers", [])


def argv_of(container: dict[str, Any]) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def module_of(container: dict[str, Any]) -> str:
    """The package a container runs (`python -m <module> ...`), or ""."""
    argv = argv_of(container)
    return argv[2] if argv[:2] == ["python", "-m"] and len(argv) > 2 else ""


def deployment_running(m: Manifests, module: str) -> dict[str, Any] | None:
    for deployment in m.of_kind("Deployment"):
        if any(module_of(c) == module for c in containers(deployment)):
            return deployment
    return None


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def port_number(address: str) -> int:
    return int(address.rpartition(":")[2])


def container_port(container: dict[str, Any], port: int | str) -> int | None:
    """The container port a probe's or Service's port (number or name) names, if it has it."""
    for entry in container.get("ports", []):
        if port in (entry.get("name"), entry.get("containerPort")):
            return int(entry["containerPort"])
    return None


@dataclass(frozen=True)
class FromSecret:
    name: str
    key: str


Env = dict[str, "str | FromSecret | None"]


def container_env(m: Manifests, container: dict[str, Any]) -> Env:
    """The variables a container gets, as Kubernetes builds them: envFrom in order, then env.
    A Secret's value is a FromSecret; a reference that resolves to nothing is None."""
    env: Env = {}
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            config = m.get("ConfigMap", source["configMapRef"]["name"]) or {}
            env.update({prefix + k: str(v) for k, v in (config.get("data") or {}).items()})
        if "secretRef" in source:
            secret = m.get("Secret", source["secretRef"]["name"]) or {}
            keys = {**(secret.get("data") or {}), **(secret.get("stringData") or {})}
            env.update({prefix + k: FromSecret(source["secretRef"]["name"], k) for k in keys})
    for item in container.get("env", []):
        source = item.get("valueFrom") or {}
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "secretKeyRef" in source:
            env[item["name"]] = FromSecret(source["secretKeyRef"]["name"], source["secretKeyRef"]["key"])
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            data = (m.get("ConfigMap", ref["name"]) or {}).get("data") or {}
            env[item["name"]] = data.get(ref["key"])
        else:
            env[item["name"]] = None
    return env


def keys_of(doc: dict[str, Any]) -> set[str]:
    """The keys of a Secret or ConfigMap."""
    return set(doc.get("data") or {}) | set(doc.get("stringData") or {}) | set(doc.get("binaryData") or {})


def parse_quantity(value: Any) -> float:
    """A Kubernetes quantity in base units (bytes, or cores): 250m, 1, 128Mi, 1G."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


def documented_variables() -> set[str]:
    """Every variable named in the first column of README's "Configuration" table."""
    section = README.read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]*)`", line.split("|")[1]))
    return names


def measured_peak_rss_mib() -> dict[str, float]:
    """Peak RSS of each service with one worker, from the benchmark's reference report."""
    found = {}
    for module in CONFIG_LOADERS:
        match = re.search(rf"^\| {module} \(1 worker\) \| ([\d.]+) \|$", BENCH.read_text(), re.M)
        assert match, f"{BENCH} has no peak RSS for {module}"
        found[module] = float(match.group(1))
    return found


def dockerfile_user() -> int:
    match = re.search(r"^USER (\d+)", DOCKERFILE.read_text(), re.M)
    assert match, "the Dockerfile sets no numeric USER"
    return int(match.group(1))


# ---- stand-ins for the Secrets' values: what an operator puts in them ----


@functools.cache
def _scratch() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="kube-test-")  # removed when the run ends


def scratch() -> str:
    return _scratch().name


@functools.cache
def key_material() -> dict[str, str]:
    """A value for every key the Secret templates have, from `common.keygen` like README.md's
    recipe: the same mapping of keygen's files to Secret keys."""
    folder = Path(tempfile.mkdtemp(prefix="keys-", dir=scratch()))
    assert keygen.main([str(folder), "--services", "reputation", "--hosts", "session-headless"]) == 0
    identity_provider = ed25519.Ed25519PrivateKey.generate().public_key()
    return {
        "jwt-key": identity_provider.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode(),
        "page-token-secret": secrets.token_urlsafe(32),
        "url": "postgresql://role:password@pooler:6432/interview",
        "migrate-url": "postgresql://role:password@postgres:5432/interview",
        "tls.crt": (folder / "tls" / "server.pem").read_text(),
        "tls.key": (folder / "tls" / "server.key").read_text(),
        "ca.crt": (folder / "tls" / "ca.pem").read_text(),
        "service-jwks.json": (folder / keygen.SERVICE_JWKS).read_text(),
        "service-reputation.pem": keygen.service_key_file(folder, "reputation").read_text(),
    }


def mounted_files(m: Manifests, workload: dict[str, Any], container: dict[str, Any]) -> dict[str, FromSecret]:
    """Each file path the container sees from a Secret volume, with the Secret key behind it."""
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    files: dict[str, FromSecret] = {}
    for mount in container.get("volumeMounts", []):
        source = volumes.get(mount["name"], {}).get("secret")
        if source is None:
            continue
        secret = m.get("Secret", source["secretName"]) or {}
        items = source.get("items") or [{"key": k, "path": k} for k in sorted(keys_of(secret))]
        for item in items:
            path = f"{mount['mountPath'].rstrip('/')}/{item['path']}"
            files[path] = FromSecret(source["secretName"], item["key"])
    return files


def runtime_env(m: Manifests, workload: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """The container's environment with stand-in Secret values, and its mounted Secret files
    written to a scratch folder (the *_FILE paths rewritten to it): what the process would see."""
    material = key_material()
    folder = Path(tempfile.mkdtemp(prefix="mounts-", dir=scratch()))
    files = mounted_files(m, workload, container)
    local = {}
    for index, (path, ref) in enumerate(sorted(files.items())):
        target = folder / str(index) / Path(path).name
        target.parent.mkdir()
        target.write_text(material.get(ref.key, ""))
        local[path] = str(target)
    env = {}
    for name, value in container_env(m, container).items():
        if isinstance(value, FromSecret):
            env[name] = material.get(value.key, "")
        elif value is not None:
            env[name] = local.get(value, value)
    return env

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


def run_loader(module: str, env: Mapping[str, str]) -> tuple[set[str], str | None]:
    """The names the service's own config loader reads from `env`, and its error if it refuses."""
    recording = Recording(env)
    try:
        CONFIG_LOADERS[module](recording)
    except ConfigError as error:
        return recording.read, str(error)
    return recording.read, None


# ---- the rules: each returns what it finds wrong ----


def kustomizations_list_every_manifest(m: Manifests) -> list[str]:
    problems = []
    images = {c.get("image", "").partition(":")[0] for w in workloads(m) for c in containers(w)}
    for folder, files in sorted(m.present.items()):
        kustomization = m.kustomizations.get(folder)
        if kustomization is None:
            problems.append(f"{folder}/: no kustomization.yaml")
            continue
        if kustomization.get("apiVersion") != "kustomize.config.k8s.io/v1beta1" or (
            kustomization.get("kind") != "Kustomization"
        ):
            problems.append(
                f"{folder}/kustomization.yaml: not a kustomize.config.k8s.io/v1beta1 Kustomization"
            )
        unknown = set(kustomization) - {"apiVersion", "kind", "resources", "images"}
        if unknown:
            problems.append(
                f"{folder}/kustomization.yaml: fields this check does not know: {sorted(unknown)}"
            )
        listed = kustomization.get("resources") or []
        expected = sorted(f for f in files if not f.endswith(TEMPLATE_SUFFIX))
        if sorted(listed) != expected:
            problems.append(
                f"{folder}/kustomization.yaml lists {sorted(listed)}, the manifests present are {expected}"
            )
        for image in kustomization.get("images") or []:
            if image.get("name") not in images:
                problems.append(
                    f"{folder}/kustomization.yaml: image {image.get('name')} is used by no container"
                )
    return problems


def objects_are_valid_kubernetes(m: Manifests) -> list[str]:
    problems = []
    for file, doc in m.objects:
        if doc.get("apiVersion") == CNPG_API:
            continue  # custom resources: crds_match_their_schema
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = ".".join(str(p) for p in error.path)
                problems.append(f"{file}: {name_of(doc)} on Kubernetes {version}: {where}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                problems.append(f"{file}: {name_of(doc)}: {error.message}")
    return problems


# The CloudNativePG fields we set, from its API types (api/v1/cluster_types.go, pooler_types.go):
# their types and enums, and nothing else allowed, so a misspelt or misplaced field fails here as
# it would be dropped or refused by the operator's CRD. Not the whole CRD: only what we use.
def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


_STRING = {"type": "string", "minLength": 1}
_REFERENCE = _object({"name": _STRING}, ("name",))
_METADATA = _object(
    {"name": _STRING, "namespace": _STRING, "labels": {"type": "object", "additionalProperties": _STRING}},
    ("name", "namespace"),
)
CNPG_SCHEMAS = {
    "Cluster": _object(
        {
            "apiVersion": {"const": CNPG_API},
            "kind": {"const": "Cluster"},
            "metadata": _METADATA,
            "spec": _object(
                {
                    "instances": {"type": "integer", "minimum": 1},
                    "imageName": _STRING,
                    "primaryUpdateStrategy": {"enum": ["unsupervised", "supervised"]},
                    "storage": _object({"size": _STRING, "storageClass": _STRING}, ("size",)),
                    "bootstrap": _object(
                        {
                            "initdb": _object(
                                {
                                    "database": _STRING,
                                    "owner": _STRING,
                                    "postInitApplicationSQL": {"type": "array", "items": _STRING},
                                }
                            )
                        }
                    ),
                    "managed": _object(
                        {
                            "roles": {
                                "type": "array",
                                "items": _object(
                                    {
                                        "name": _STRING,
                                        "ensure": {"enum": ["present", "absent"]},
                                        "login": {"type": "boolean"},
                                        "passwordSecret": _REFERENCE,
                                    },
                                    ("name",),
                                ),
                            }
                        }
                    ),
                },
                ("instances",),
            ),
        },
        ("apiVersion", "kind", "metadata", "spec"),
    ),
    "Pooler": _object(
        {
            "apiVersion": {"const": CNPG_API},
            "kind": {"const": "Pooler"},
            "metadata": _METADATA,
            "spec": _object(
                {
                    "cluster": _REFERENCE,
                    "instances": {"type": "integer", "minimum": 0},
                    "type": {"enum": ["rw", "ro"]},
                    "pgbouncer": _object(
                        {
                            "poolMode": {"enum": ["session", "transaction"]},
                            "parameters": {"type": "object", "additionalProperties": {"type": "string"}},
                        }
                    ),
                },
                ("cluster", "pgbouncer"),
            ),
        },
        ("apiVersion", "kind", "metadata", "spec"),
    ),
}


def crds_match_their_schema(m: Manifests) -> list[str]:
    problems = []
    for file, doc in m.objects:
        if doc.get("apiVersion") != CNPG_API:
            continue
        schema = CNPG_SCHEMAS.get(doc.get("kind", ""))
        if schema is None:
            problems.append(f"{file}: {name_of(doc)}: no schema for this kind here")
            continue
        for error in jsonschema.Draft202012Validator(schema).iter_errors(doc):
            where = ".".join(str(p) for p in error.path)
            problems.append(f"{file}: {name_of(doc)}: {where}: {error.message}")
    clusters = {c["metadata"]["name"]: c for c in m.of_kind("Cluster")}
    for cluster in clusters.values():
        if cluster.get("spec", {}).get("instances") != 3:
            problems.append(f"{name_of(cluster)}: instances is not 3 (a primary and two replicas)")
        roles = {r.get("name"): r for r in cluster.get("spec", {}).get("managed", {}).get("roles", [])}
        for role in roles.values():
            secret = m.get("Secret", (role.get("passwordSecret") or {}).get("name", ""))
            if secret is None:
                problems.append(
                    f"{name_of(cluster)}: role {role.get('name')}: its passwordSecret is not defined"
                )
            elif secret.get("type") != "kubernetes.io/basic-auth" or (
                (secret.get("stringData") or {}).get("username") != role.get("name")
            ):
                problems.append(f"{name_of(secret)}: not a basic-auth Secret for role {role.get('name')}")
        # Every database URL the services are given logs in as a role the Cluster manages.
        for secret in m.of_kind("Secret"):
            for key, value in (secret.get("stringData") or {}).items():
                if str(value).startswith("postgresql://"):
                    user = urlsplit(str(value)).username
                    if user not in roles:
                        problems.append(
                            f"{name_of(secret)} {key}: logs in as {user}, not a role of {name_of(cluster)}"
                        )
    for pooler in m.of_kind("Pooler"):
        spec = pooler.get("spec", {})
        if spec.get("cluster", {}).get("name") not in clusters:
            problems.append(
                f"{name_of(pooler)}: pools for cluster {spec.get('cluster', {}).get('name')}, not defined"
            )
        if spec.get("pgbouncer", {}).get("poolMode") != "transaction":
            problems.append(f"{name_of(pooler)}: poolMode is not transaction")
        if spec.get("type") != "rw":
            problems.append(f"{name_of(pooler)}: type is not rw (the services write)")
    return problems


def deployments_replicated(m: Manifests) -> list[str]:
    problems = []
    for deployment in m.of_kind("Deployment"):
        if not isinstance(deployment["spec"].get("replicas"), int) or deployment["spec"]["replicas"] < 2:
            problems.append(
                f"{name_of(deployment)}: replicas is {deployment['spec'].get('replicas')}, not 2 or more"
            )
    for hpa in m.of_kind("HorizontalPodAutoscaler"):
        if hpa["spec"].get("minReplicas", 1) < 2:
            problems.append(f"{name_of(hpa)}: minReplicas below 2")
    return problems


def probes_work_under_mutual_tls(m: Manifests) -> list[str]:
    """Readiness is the gRPC health check over the service's own TLS when it requires client
    certificates (the kubelet's gRPC probe has none); liveness does not depend on the database."""
    problems = []
    for deployment in m.of_kind("Deployment"):
        for container in containers(deployment):
            where = f"{name_of(deployment)} {container['name']}"
            env = container_env(m, container)
            listen = env.get(f"{module_of(container).split('_')[0].upper()}_LISTEN")
            grpc_port = port_number(listen) if isinstance(listen, str) else None
            readiness = container.get("readinessProbe")
            liveness = container.get("livenessProbe")
            if readiness is None:
                problems.append(f"{where}: no readinessProbe")
            elif env.get("TLS_CLIENT_CA_FILE"):
                argv = (readiness.get("exec") or {}).get("command", [])
                if argv != [*HEALTHCHECK, f"127.0.0.1:{grpc_port}"]:
                    problems.append(
                        f"{where}: readinessProbe {readiness} is not `python -m common.healthcheck "
                        f"127.0.0.1:{grpc_port}`: with TLS_CLIENT_CA_FILE a grpc or tcp probe "
                        "cannot check health"
                    )
            elif (readiness.get("grpc") or {}).get("port") != grpc_port and "exec" not in readiness:
                problems.append(f"{where}: readinessProbe does not check gRPC health on port {grpc_port}")
            for kind, probe in (
                ("readinessProbe", readiness),
                ("livenessProbe", liveness),
                ("startupProbe", container.get("startupProbe")),
            ):
                if probe and "grpc" in probe and env.get("TLS_CERT_FILE"):
                    problems.append(f"{where}: {kind} is a grpc probe, which cannot complete a TLS handshake")
            if liveness is None:
                problems.append(f"{where}: no livenessProbe")
            elif (
                "tcpSocket" not in liveness
                or container_port(container, liveness["tcpSocket"]["port"]) != grpc_port
            ):
                problems.append(
                    f"{where}: livenessProbe {liveness} is not a TCP connect to the gRPC port {grpc_port}: "
                    "health is NOT_SERVING while the database is down, which must not restart pods"
                )
            startup = container.get("startupProbe")
            if (
                startup
                and "tcpSocket" in startup
                and container_port(container, startup["tcpSocket"]["port"]) is None
            ):
                problems.append(
                    f"{where}: startupProbe port {startup['tcpSocket']['port']} is not a container port"
                )
    return problems


def locked_down(m: Manifests) -> list[str]:
    problems = []
    user = dockerfile_user()
    for workload in workloads(m):
        pod = pod_spec(workload)
        pod_security = pod.get("securityContext") or {}
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{name_of(workload)}: automountServiceAccountToken is not false")
        if pod.get("enableServiceLinks") is not False:
            problems.append(
                f"{name_of(workload)}: enableServiceLinks is not false (Service variables leak in)"
            )
        for container in containers(workload):
            where = f"{name_of(workload)} {container['name']}"
            security = container.get("securityContext") or {}
            effective = {**pod_security, **security}
            if effective.get("runAsNonRoot") is not True:
                problems.append(f"{where}: runAsNonRoot is not true")
            if effective.get("runAsUser") != user:
                problems.append(
                    f"{where}: runAsUser {effective.get('runAsUser')} is not the image's USER {user}"
                )
            if (effective.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                problems.append(f"{where}: seccompProfile is not RuntimeDefault")
            if security.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if security.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            capabilities = security.get("capabilities") or {}
            if "ALL" not in (capabilities.get("drop") or []) or capabilities.get("add"):
                problems.append(f"{where}: capabilities do not drop ALL (or add some)")
            if security.get("privileged"):
                problems.append(f"{where}: privileged")
    return problems


def resources_from_measurements(m: Manifests) -> list[str]:
    problems = []
    rss = measured_peak_rss_mib()
    for workload in workloads(m):
        for container in containers(workload):
            where = f"{name_of(workload)} {container['name']}"
            resources = container.get("resources") or {}
            for bound in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(bound) or {}):
                        problems.append(f"{where}: no {bound}.{resource}")
            requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
            for resource in ("cpu", "memory"):
                if resource in requests and resource in limits:
                    if parse_quantity(requests[resource]) > parse_quantity(limits[resource]):
                        problems.append(f"{where}: requests.{resource} above limits.{resource}")
            module = module_of(container)
            if workload["kind"] == "Deployment" and module in rss and "memory" in requests:
                if parse_quantity(requests["memory"]) < rss[module] * 2**20:
                    problems.append(
                        f"{where}: requests.memory {requests['memory']} is below the measured peak RSS "
                        f"{rss[module]} MiB"
                    )
                if "memory" in limits and parse_quantity(limits["memory"]) < 2 * rss[module] * 2**20:
                    problems.append(
                        f"{where}: limits.memory {limits['memory']} leaves no headroom over the RSS"
                    )
                if "memory" in limits and parse_quantity(limits["memory"]) < FLOOD_PEAK_RSS_MB * 2**20:
                    problems.append(
                        f"{where}: limits.memory {limits['memory']} is below the {FLOOD_PEAK_RSS_MB} MiB a "
                        "flood may take the process to (tests/test_overload.py)"
                    )
    return problems


def services_select_deployments(m: Manifests) -> list[str]:
    problems = []
    for service in m.of_kind("Service"):
        selector = service["spec"].get("selector") or {}
        chosen = [d for d in m.of_kind("Deployment") if selects(selector, pod_labels(d))]
        if len(chosen) != 1:
            problems.append(
                f"{name_of(service)}: selector {selector} matches {len(chosen)} Deployments, not one"
            )
        for job in m.of_kind("Job"):
            if selects(selector, pod_labels(job)):
                problems.append(
                    f"{name_of(service)}: selector {selector} also matches the pods of {name_of(job)}"
                )
        for deployment in chosen:
            for port in service["spec"].get("ports", []):
                target = port.get("targetPort", port["port"])
                if not any(container_port(c, target) for c in containers(deployment)):
                    problems.append(
                        f"{name_of(service)}: targetPort {target} is not a port of {name_of(deployment)}"
                    )
    return problems


def reputation_dials_the_headless_service(m: Manifests) -> list[str]:
    problems = []
    if ("grpc.lb_policy_name", "round_robin") not in CHANNEL_OPTIONS:
        problems.append("reputation_service.sessions_client: the channel does not use round_robin")
    session = deployment_running(m, "session_service")
    reputation = deployment_running(m, "reputation_service")
    if session is None or reputation is None:
        return [*problems, "no Deployment for the session or the reputation service"]
    headless = [
        s
        for s in m.of_kind("Service")
        if s["spec"].get("clusterIP") == "None"
        and selects(s["spec"].get("selector") or {}, pod_labels(session))
    ]
    if not headless:
        return [*problems, f"no headless Service (clusterIP: None) selects the pods of {name_of(session)}"]
    container = next(c for c in containers(reputation) if module_of(c) == "reputation_service")
    target = container_env(m, container).get("SESSION_SERVICE_TARGET")
    if not isinstance(target, str):
        return [*problems, f"{name_of(reputation)}: SESSION_SERVICE_TARGET is not set in its manifests"]
    host, _, port = target.rpartition(":")
    session_grpc = next(c for c in containers(session) if module_of(c) == "session_service")
    for service in headless:
        name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
        if host not in (name, f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"):
            continue
        for entry in service["spec"].get("ports", []):
            if str(entry["port"]) == port:
                listen = container_env(m, session_grpc).get("SESSION_LISTEN")
                if container_port(session_grpc, entry.get("targetPort", entry["port"])) != (
                    port_number(listen) if isinstance(listen, str) else None
                ):
                    problems.append(f"{name_of(service)}: port {port} does not lead to the session gRPC port")
                return problems
        return [*problems, f"SESSION_SERVICE_TARGET {target}: {name_of(service)} has no port {port}"]
    return [
        *problems,
        f"SESSION_SERVICE_TARGET {target} is not a headless Service's name: "
        f"{[s['metadata']['name'] for s in headless]}",
    ]


def variables_documented_and_read(m: Manifests) -> list[str]:
    problems = []
    documented = documented_variables()
    for workload in workloads(m):
        for container in containers(workload):
            where = f"{name_of(workload)} {container['name']}"
            module = module_of(container)
            names = set(container_env(m, container))
            problems += [
                f"{where}: {n} is not in README's Configuration table" for n in sorted(names - documented)
            ]
            if module not in CONFIG_LOADERS:
                problems.append(f"{where}: runs no service (python -m {module})")
                continue
            command = " ".join(argv_of(container)[2:])
            if argv_of(container)[3:] == ["migrate"]:
                read = {DATABASE_VARIABLE[module]}  # common.cli: migrate reads only the URL
            else:
                read, _ = run_loader(module, runtime_env(m, workload, container))
            problems += [f"{where}: {n} is set but `{command}` never reads it" for n in sorted(names - read)]
    return problems


def references_resolve(m: Manifests) -> list[str]:
    problems: list[str] = []

    def find(kind: str, name: str, workload: dict[str, Any], where: str) -> dict[str, Any] | None:
        namespace = workload["metadata"].get("namespace")
        found = m.get(kind, name)
        if found is None or found["metadata"].get("namespace") != namespace:
            problems.append(f"{where}: {kind} {name} is not defined in namespace {namespace}")
            return None
        return found

    for workload in workloads(m):
        for container in containers(workload):
            where = f"{name_of(workload)} {container['name']}"
            for source in container.get("envFrom", []):
                for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if field in source:
                        find(kind, source[field]["name"], workload, where)
            for item in container.get("env", []):
                source = item.get("valueFrom") or {}
                for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                    if field in source:
                        ref = source[field]
                        found = find(kind, ref["name"], workload, f"{where} {item['name']}")
                        if found is not None and ref["key"] not in keys_of(found):
                            problems.append(
                                f"{where} {item['name']}: {kind} {ref['name']} has no key {ref['key']}"
                            )
            volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    problems.append(f"{where}: volumeMount {mount['name']} names no volume")
        for volume in pod_spec(workload).get("volumes", []):
            for kind, field, name_field in (
                ("Secret", "secret", "secretName"),
                ("ConfigMap", "configMap", "name"),
            ):
                if field not in volume:
                    continue
                found = find(
                    kind, volume[field][name_field], workload, f"{name_of(workload)} volume {volume['name']}"
                )
                for item in volume[field].get("items") or []:
                    if found is not None and item["key"] not in keys_of(found):
                        problems.append(
                            f"{name_of(workload)} volume {volume['name']}: "
                            f"{kind} {volume[field][name_field]} has no key {item['key']}"
                        )
    return problems


def files_are_mounted(m: Manifests) -> list[str]:
    """Every *_FILE variable names a file the pod has: a key of a Secret mounted there."""
    problems = []
    for workload in workloads(m):
        for container in containers(workload):
            files = mounted_files(m, workload, container)
            for name, value in container_env(m, container).items():
                if name.endswith("_FILE") and isinstance(value, str) and value not in files:
                    problems.append(
                        f"{name_of(workload)} {container['name']}: {name}={value} "
                        "is no file mounted from a Secret"
                    )
    return problems


def services_accept_their_environment(m: Manifests) -> list[str]:
    """Each service's own config loader, run on what its pods get (Secret values and files
    standing in): the check start-up makes, which stops a pod with one line naming the variable."""
    problems = []
    for workload in workloads(m):
        for container in containers(workload):
            module = module_of(container)
            if module not in CONFIG_LOADERS:
                continue
            env = runtime_env(m, workload, container)
            where = f"{name_of(workload)} {container['name']}"
            try:
                if argv_of(container)[3:] == ["migrate"]:
                    database_url(env, DATABASE_VARIABLE[module])
                    continue
                _, error = run_loader(module, env)
            except ConfigError as refused:
                error = str(refused)
            if error:
                problems.append(f"{where}: {error}")
    return problems


def disruption_and_autoscaling(m: Manifests) -> list[str]:
    problems = []
    deployments = m.of_kind("Deployment")
    for pdb in m.of_kind("PodDisruptionBudget"):
        selector = pdb["spec"].get("selector", {}).get("matchLabels") or {}
        chosen = [d for d in deployments if selects(selector, pod_labels(d))]
        if len(chosen) != 1:
            problems.append(f"{name_of(pdb)}: selects {len(chosen)} Deployments, not one")
        if pdb["spec"].get("minAvailable") != 1:
            problems.append(f"{name_of(pdb)}: minAvailable is {pdb['spec'].get('minAvailable')}, not 1")
    for hpa in m.of_kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"].get("scaleTargetRef") or {}
        target = m.get("Deployment", ref.get("name", ""))
        if ref.get("kind") != "Deployment" or ref.get("apiVersion") != "apps/v1" or target is None:
            problems.append(f"{name_of(hpa)}: scales {ref}, not a Deployment defined here")
        elif any("cpu" not in (c.get("resources") or {}).get("requests", {}) for c in containers(target)):
            problems.append(
                f"{name_of(hpa)}: {name_of(target)} has no CPU request to measure utilisation against"
            )
        metrics = hpa["spec"].get("metrics") or []
        if not any(
            x.get("type") == "Resource" and x.get("resource", {}).get("name") == "cpu" for x in metrics
        ):
            problems.append(f"{name_of(hpa)}: does not scale on CPU")
        if hpa["spec"].get("maxReplicas", 0) < hpa["spec"].get("minReplicas", 1):
            problems.append(f"{name_of(hpa)}: maxReplicas below minReplicas")
    for deployment in deployments:
        pdbs = [
            p
            for p in m.of_kind("PodDisruptionBudget")
            if selects(p["spec"].get("selector", {}).get("matchLabels") or {}, pod_labels(deployment))
        ]
        if len(pdbs) != 1:
            problems.append(f"{name_of(deployment)}: {len(pdbs)} PodDisruptionBudgets, not one")
        hpas = [
            h
            for h in m.of_kind("HorizontalPodAutoscaler")
            if (h["spec"].get("scaleTargetRef") or {}).get("name") == deployment["metadata"]["name"]
        ]
        if len(hpas) != 1:
            problems.append(f"{name_of(deployment)}: {len(hpas)} HorizontalPodAutoscalers, not one")
    return problems


def migrations_run_as_jobs(m: Manifests) -> list[str]:
    problems = []
    for job in m.of_kind("Job"):
        for container in containers(job):
            if argv_of(container)[3:] != ["migrate"] or module_of(container) not in CONFIG_LOADERS:
                problems.append(
                    f"{name_of(job)}: runs {argv_of(container)}, not `python -m <service> migrate`"
                )
        if pod_spec(job).get("restartPolicy") not in ("OnFailure", "Never"):
            problems.append(f"{name_of(job)}: restartPolicy {pod_spec(job).get('restartPolicy')}")
    for module, variable in DATABASE_VARIABLE.items():
        deployment = deployment_running(m, module)
        jobs = [
            (job, c)
            for job in m.of_kind("Job")
            for c in containers(job)
            if module_of(c) == module and argv_of(c)[3:] == ["migrate"]
        ]
        if len(jobs) != 1:
            problems.append(f"{module}: {len(jobs)} migration Jobs, not one")
            continue
        job, container = jobs[0]
        used = container_env(m, container).get(variable)
        if deployment is not None:
            served = container_env(m, next(c for c in containers(deployment) if module_of(c) == module)).get(
                variable
            )
            if used == served:
                problems.append(
                    f"{name_of(job)}: {variable} is the one the service uses (through the pooler), "
                    "not a URL straight to PostgreSQL"
                )
    return problems


def listen_addresses_match_ports(m: Manifests) -> list[str]:
    problems = []
    for deployment in m.of_kind("Deployment"):
        for container in containers(deployment):
            prefix = module_of(container).split("_")[0].upper()
            env = container_env(m, container)
            for variable, port_name in (
                (f"{prefix}_LISTEN", "grpc"),
                (f"{prefix}_METRICS_LISTEN", "metrics"),
            ):
                value = env.get(variable)
                if not isinstance(value, str):
                    problems.append(f"{name_of(deployment)}: {variable} is not set in the manifests")
                    continue
                listen_address({variable: value}, variable, "")
                if not value.startswith("0.0.0.0:"):
                    problems.append(
                        f"{name_of(deployment)}: {variable}={value} is not reachable from outside the pod"
                    )
                if container_port(container, port_name) != port_number(value):
                    problems.append(
                        f"{name_of(deployment)}: containerPort {port_name} "
                        f"{container_port(container, port_name)} is not the port of {variable}={value}"
                    )
    return problems


def one_image(m: Manifests) -> list[str]:
    problems = []
    images = {c.get("image") for w in workloads(m) for c in containers(w)}
    if len(images) != 1:
        problems.append(f"the services and their migrations run {sorted(map(str, images))}, not one image")
    for workload in workloads(m):
        for container in containers(workload):
            module = module_of(container)
            if not module or importlib.util.find_spec(module) is None:
                problems.append(f"{name_of(workload)}: {argv_of(container)} runs no module of the image")
    return problems


def one_namespace(m: Manifests) -> list[str]:
    namespaces = [n["metadata"]["name"] for n in m.of_kind("Namespace")]
    if len(namespaces) != 1:
        return [f"{len(namespaces)} Namespace objects, not one"]
    return [
        f"{file}: {name_of(doc)} is in namespace {doc['metadata'].get('namespace')}, not {namespaces[0]}"
        for file, doc in m.objects
        if doc.get("kind") not in CLUSTER_SCOPED and doc["metadata"].get("namespace") != namespaces[0]
    ]


def secrets_are_templates(m: Manifests) -> list[str]:
    """Secrets only in *.example.yaml, with placeholders only, each key one the README recipe
    (and this test's stand-ins) knows."""
    problems = []
    for file, doc in m.objects:
        if doc.get("kind") != "Secret":
            continue
        if not file.endswith(TEMPLATE_SUFFIX):
            problems.append(
                f"{file}: {name_of(doc)} is outside a {TEMPLATE_SUFFIX} template: kustomize would apply it"
            )
        if doc.get("data"):
            problems.append(f"{file}: {name_of(doc)} has base64 `data`; templates use readable stringData")
        for key, value in (doc.get("stringData") or {}).items():
            if key not in NOT_SECRET_KEYS and PLACEHOLDER not in str(value):
                problems.append(
                    f"{file}: {name_of(doc)} {key} holds a value, not a {PLACEHOLDER} placeholder"
                )
            if (
                doc.get("apiVersion") == "v1"
                and key not in key_material()
                and key not in {"username", "password"}
            ):
                problems.append(f"{file}: {name_of(doc)} {key}: no stand-in for this key in the test")
    return problems


def stops_gracefully(m: Manifests) -> list[str]:
    problems = []
    for deployment in m.of_kind("Deployment"):
        grace = pod_spec(deployment).get("terminationGracePeriodSeconds", 30)
        for container in containers(deployment):
            argv = (((container.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get(
                "command", []
            )
            pause = int(argv[1]) if argv[:1] == ["sleep"] and len(argv) == 2 else 0
            if grace < pause + SHUTDOWN_GRACE_SECONDS + 5:
                problems.append(
                    f"{name_of(deployment)}: terminationGracePeriodSeconds {grace} does not cover preStop "
                    f"{pause} s + the server's {SHUTDOWN_GRACE_SECONDS:g} s graceful stop"
                )
    return problems


RULES = [
    kustomizations_list_every_manifest,
    objects_are_valid_kubernetes,
    crds_match_their_schema,
    deployments_replicated,
    probes_work_under_mutual_tls,
    locked_down,
    resources_from_measurements,
    services_select_deployments,
    reputation_dials_the_headless_service,
    variables_documented_and_read,
    references_resolve,
    files_are_mounted,
    services_accept_their_environment,
    disruption_and_autoscaling,
    migrations_run_as_jobs,
    listen_addresses_match_ports,
    one_image,
    one_namespace,
    secrets_are_templates,
    stops_gracefully,
]


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
def test_manifests_follow(rule: Callable[[Manifests], list[str]]) -> None:
    assert rule(load()) == []


def test_the_manifests_cover_what_the_design_asks_for() -> None:
    m = load()
    kinds = {doc["kind"] for _, doc in m.objects}
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "Service", "Job"} <= kinds
    assert {"PodDisruptionBudget", "HorizontalPodAutoscaler", "Cluster", "Pooler"} <= kinds
    assert {module_of(c) for d in m.of_kind("Deployment") for c in containers(d)} == set(CONFIG_LOADERS)


# ---- each rule can fail: break a copy of the manifests, expect that rule to say so ----


Mutation = Callable[[Manifests], None]


def _get(m: Manifests, kind: str, name: str) -> dict[str, Any]:
    found = m.get(kind, name)
    assert found is not None, f"{kind}/{name}"
    return found


def _container(m: Manifests, kind: str, name: str) -> dict[str, Any]:
    return containers(_get(m, kind, name))[0]


def _pod(m: Manifests, kind: str, name: str) -> dict[str, Any]:
    return pod_spec(_get(m, kind, name))


def _env(m: Manifests, kind: str, name: str, variable: str) -> dict[str, Any]:
    return next(e for e in _container(m, kind, name)["env"] if e["name"] == variable)


def _drop_object(kind: str, name: str) -> Mutation:
    def mutate(m: Manifests) -> None:
        m.objects = [(f, d) for f, d in m.objects if name_of(d) != f"{kind}/{name}"]

    return mutate


def _move_object(kind: str, name: str, to: str) -> Mutation:
    def mutate(m: Manifests) -> None:
        m.objects = [(to if name_of(d) == f"{kind}/{name}" else f, d) for f, d in m.objects]

    return mutate


REAL_LOOKING_KEY = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n"
    "-----END PUBLIC KEY-----\n"
)

MUTATIONS: list[tuple[str, Mutation, Callable[[Manifests], list[str]], str]] = [
    (
        "a manifest missing from the kustomization",
        lambda m: m.kustomizations["."]["resources"].remove("migrations.yaml"),
        kustomizations_list_every_manifest,
        "migrations.yaml",
    ),
    (
        "a manifest nobody listed",
        lambda m: m.present["."].add("extra.yaml"),
        kustomizations_list_every_manifest,
        "extra.yaml",
    ),
    (
        "a Secret template listed",
        lambda m: m.kustomizations["."]["resources"].append("secrets.example.yaml"),
        kustomizations_list_every_manifest,
        "secrets.example.yaml",
    ),
    (
        "an unknown field",
        lambda m: _container(m, "Deployment", "session").update(readinessprobe={}),
        objects_are_valid_kubernetes,
        "readinessprobe",
    ),
    (
        "replicas as a string",
        lambda m: _get(m, "Deployment", "reputation")["spec"].update(replicas="2"),
        objects_are_valid_kubernetes,
        "replicas",
    ),
    (
        "a misspelt pool mode",
        lambda m: _get(m, "Pooler", "interview-db-pooler")["spec"]["pgbouncer"].update(
            poolMode="transactoin"
        ),
        crds_match_their_schema,
        "transactoin",
    ),
    (
        "a field CloudNativePG does not have",
        lambda m: _get(m, "Cluster", "interview-db")["spec"].update(replicas=3),
        crds_match_their_schema,
        "replicas",
    ),
    (
        "a pooler for another cluster",
        lambda m: _get(m, "Pooler", "interview-db-pooler")["spec"]["cluster"].update(name="other-db"),
        crds_match_their_schema,
        "other-db",
    ),
    (
        "a pooler in session mode",
        lambda m: _get(m, "Pooler", "interview-db-pooler")["spec"]["pgbouncer"].update(poolMode="session"),
        crds_match_their_schema,
        "poolMode",
    ),
    (
        "a database user the cluster does not manage",
        lambda m: _get(m, "Secret", "session-database")["stringData"].update(
            url="postgresql://someone:REPLACE-ME@host:6432/interview"
        ),
        crds_match_their_schema,
        "someone",
    ),
    (
        "one replica",
        lambda m: _get(m, "Deployment", "session")["spec"].update(replicas=1),
        deployments_replicated,
        "replicas",
    ),
    (
        "no readiness probe",
        lambda m: _container(m, "Deployment", "session").pop("readinessProbe"),
        probes_work_under_mutual_tls,
        "no readinessProbe",
    ),
    (
        "a native gRPC probe under mutual TLS",
        lambda m: _container(m, "Deployment", "session").update(readinessProbe={"grpc": {"port": 50051}}),
        probes_work_under_mutual_tls,
        "grpc",
    ),
    (
        "the health check probing the other service's port",
        lambda m: _container(m, "Deployment", "session")["readinessProbe"]["exec"].update(
            command=[*HEALTHCHECK, "127.0.0.1:50052"]
        ),
        probes_work_under_mutual_tls,
        "127.0.0.1:50051",
    ),
    (
        "liveness on database health",
        lambda m: _container(m, "Deployment", "reputation").update(
            livenessProbe={"exec": {"command": [*HEALTHCHECK, "127.0.0.1:50052"]}}
        ),
        probes_work_under_mutual_tls,
        "livenessProbe",
    ),
    (
        "running as root",
        lambda m: _container(m, "Deployment", "session")["securityContext"].update(runAsUser=0),
        locked_down,
        "runAsUser",
    ),
    (
        "a writable root filesystem",
        lambda m: _container(m, "Deployment", "reputation")["securityContext"].update(
            readOnlyRootFilesystem=False
        ),
        locked_down,
        "readOnlyRootFilesystem",
    ),
    (
        "capabilities kept",
        lambda m: _container(m, "Deployment", "session")["securityContext"]["capabilities"].update(drop=[]),
        locked_down,
        "capabilities",
    ),
    (
        "no seccomp profile",
        lambda m: _pod(m, "Deployment", "session")["securityContext"].pop("seccompProfile"),
        locked_down,
        "seccompProfile",
    ),
    (
        "a migration that may escalate",
        lambda m: _container(m, "Job", "session-migrate")["securityContext"].update(
            allowPrivilegeEscalation=True
        ),
        locked_down,
        "allowPrivilegeEscalation",
    ),
    (
        "Service variables in the environment",
        lambda m: _pod(m, "Deployment", "reputation").update(enableServiceLinks=True),
        locked_down,
        "enableServiceLinks",
    ),
    (
        "no memory limit",
        lambda m: _container(m, "Deployment", "session")["resources"]["limits"].pop("memory"),
        resources_from_measurements,
        "limits.memory",
    ),
    (
        "less memory requested than measured",
        lambda m: _container(m, "Deployment", "reputation")["resources"]["requests"].update(memory="64Mi"),
        resources_from_measurements,
        "peak RSS",
    ),
    (
        "a Service selecting nothing",
        lambda m: _get(m, "Service", "session")["spec"]["selector"].update(
            {"app.kubernetes.io/name": "sesion"}
        ),
        services_select_deployments,
        "matches 0 Deployments",
    ),
    (
        "a Service selecting the migration pods too",
        lambda m: _get(m, "Service", "reputation")["spec"]["selector"].pop("app.kubernetes.io/component"),
        services_select_deployments,
        "reputation-migrate",
    ),
    (
        "a targetPort the pods do not have",
        lambda m: _get(m, "Service", "session-headless")["spec"]["ports"][0].update(targetPort="grcp"),
        services_select_deployments,
        "grcp",
    ),
    (
        "the headless Service given a cluster IP",
        lambda m: _get(m, "Service", "session-headless")["spec"].pop("clusterIP"),
        reputation_dials_the_headless_service,
        "headless",
    ),
    (
        "the reputation service dialling the virtual IP",
        lambda m: _get(m, "ConfigMap", "reputation-config")["data"].update(
            SESSION_SERVICE_TARGET="session.interview.svc.cluster.local:50051"
        ),
        reputation_dials_the_headless_service,
        "session.interview.svc.cluster.local",
    ),
    (
        "a variable nobody documented",
        lambda m: _get(m, "ConfigMap", "session-config")["data"].update(SESSION_LISTN="0.0.0.0:50051"),
        variables_documented_and_read,
        "SESSION_LISTN",
    ),
    (
        "a variable the service does not read",
        lambda m: _get(m, "ConfigMap", "session-config")["data"].update(SERVICE_SIGNING_KEY_ID="session"),
        variables_documented_and_read,
        "SERVICE_SIGNING_KEY_ID is set but `session_service` never reads it",
    ),
    (
        "a migration given what only the server reads",
        lambda m: _container(m, "Job", "reputation-migrate")["env"].append(
            {"name": "JWT_ALGORITHM", "value": "EdDSA"}
        ),
        variables_documented_and_read,
        "JWT_ALGORITHM",
    ),
    (
        "a Secret key that does not exist",
        lambda m: _env(m, "Deployment", "session", "JWT_KEY")["valueFrom"]["secretKeyRef"].update(key="jwt"),
        references_resolve,
        "no key jwt",
    ),
    (
        "a ConfigMap that does not exist",
        lambda m: _container(m, "Deployment", "reputation")["envFrom"][1]["configMapRef"].update(
            name="reputation-cfg"
        ),
        references_resolve,
        "reputation-cfg",
    ),
    (
        "a mounted key that does not exist",
        lambda m: _pod(m, "Deployment", "session")["volumes"][1]["secret"]["items"][0].update(
            key="jwks.json"
        ),
        references_resolve,
        "jwks.json",
    ),
    (
        "a file variable pointing nowhere",
        lambda m: _get(m, "ConfigMap", "reputation-config")["data"].update(
            SERVICE_SIGNING_KEY_FILE="/keys/x.pem"
        ),
        files_are_mounted,
        "SERVICE_SIGNING_KEY_FILE",
    ),
    (
        "the signing key left out of the mount",
        lambda m: _pod(m, "Deployment", "reputation")["volumes"][1]["secret"]["items"].pop(),
        files_are_mounted,
        "service-reputation.pem",
    ),
    (
        "a dns:/// target, which the config check refuses",
        lambda m: _get(m, "ConfigMap", "reputation-config")["data"].update(
            SESSION_SERVICE_TARGET="dns:///session-headless.interview.svc.cluster.local:50051"
        ),
        services_accept_their_environment,
        "SESSION_SERVICE_TARGET must be host:port",
    ),
    (
        "a statement cache setting the code does not know",
        lambda m: _get(m, "ConfigMap", "interview-config")["data"].update(DB_STATEMENT_CACHE="no"),
        services_accept_their_environment,
        "DB_STATEMENT_CACHE",
    ),
    (
        "a migration without its database",
        lambda m: _container(m, "Job", "session-migrate")["env"][0].update(name="DATABASE_URL"),
        services_accept_their_environment,
        "SESSION_DATABASE_URL",
    ),
    (
        "no PodDisruptionBudget",
        _drop_object("PodDisruptionBudget", "session"),
        disruption_and_autoscaling,
        "PodDisruptionBudgets",
    ),
    (
        "a budget that blocks every drain of two replicas",
        lambda m: _get(m, "PodDisruptionBudget", "reputation")["spec"].update(minAvailable=2),
        disruption_and_autoscaling,
        "minAvailable",
    ),
    (
        "an autoscaler for a missing Deployment",
        lambda m: _get(m, "HorizontalPodAutoscaler", "session")["spec"]["scaleTargetRef"].update(
            name="sessions"
        ),
        disruption_and_autoscaling,
        "sessions",
    ),
    (
        "a Job that serves instead of migrating",
        lambda m: _container(m, "Job", "reputation-migrate")["command"].pop(),
        migrations_run_as_jobs,
        "migrate",
    ),
    (
        "migrations through the pooler",
        lambda m: _env(m, "Job", "session-migrate", "SESSION_DATABASE_URL")["valueFrom"][
            "secretKeyRef"
        ].update(key="url"),
        migrations_run_as_jobs,
        "pooler",
    ),
    (
        "no migration Job",
        _drop_object("Job", "session-migrate"),
        migrations_run_as_jobs,
        "0 migration Jobs",
    ),
    (
        "a container port that is not the listen port",
        lambda m: _container(m, "Deployment", "session")["ports"][0].update(containerPort=50053),
        listen_addresses_match_ports,
        "50053",
    ),
    (
        "listening on loopback",
        lambda m: _get(m, "ConfigMap", "reputation-config")["data"].update(
            REPUTATION_METRICS_LISTEN="127.0.0.1:9152"
        ),
        listen_addresses_match_ports,
        "REPUTATION_METRICS_LISTEN",
    ),
    (
        "a second image",
        lambda m: _container(m, "Job", "session-migrate").update(image="other:1"),
        one_image,
        "other:1",
    ),
    (
        "an object in another namespace",
        lambda m: _get(m, "ConfigMap", "session-config")["metadata"].update(namespace="default"),
        one_namespace,
        "default",
    ),
    (
        "a real key in a template",
        lambda m: _get(m, "Secret", "interview-tokens")["stringData"].update({"jwt-key": REAL_LOOKING_KEY}),
        secrets_are_templates,
        "jwt-key",
    ),
    (
        "a Secret among the applied manifests",
        _move_object("Secret", "interview-tls", "config.yaml"),
        secrets_are_templates,
        "config.yaml",
    ),
    (
        "too little time to stop",
        lambda m: _pod(m, "Deployment", "session").update(terminationGracePeriodSeconds=10),
        stops_gracefully,
        "terminationGracePeriodSeconds",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "rule", "expected"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS]
)
def test_each_rule_can_fail(mutate: Mutation, rule: Callable[[Manifests], list[str]], expected: str) -> None:
    broken = copy.deepcopy(load())
    mutate(broken)
    problems = rule(broken)
    assert any(expected in problem for problem in problems), problems


def test_every_rule_has_a_breaking_case() -> None:
    assert {m[2] for m in MUTATIONS} == set(RULES)


def test_quantities_parse() -> None:
    assert parse_quantity("250m") == 0.25
    assert parse_quantity("1") == 1
    assert parse_quantity("128Mi") == 128 * 2**20
    assert parse_quantity("1G") == 1e9


def test_every_file_with_placeholders_is_named_in_the_readme() -> None:
    readme = (KUBE / "README.md").read_text()
    with_placeholders = [file for file, text in _texts().items() if PLACEHOLDER in text]
    assert with_placeholders
    assert [file for file in with_placeholders if file not in readme] == []
