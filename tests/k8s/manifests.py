"""Offline checks of the Kubernetes manifests under deploy/k8s.

Each `*_problems` function takes the rendered documents of one overlay and returns what
is wrong with them as readable lines (empty when all is well), so the same functions
check the real overlays and, in the tests, deliberately broken copies of them.

- Core objects are validated strictly (unknown fields rejected) against the Kubernetes
  OpenAPI schemas shipped by kubernetes-validate, for the oldest and newest supported
  Kubernetes versions.
- Custom resources are validated against the operators' own CRD schemas (shared
  k8s-crds folder beside the repository). Those schemas let unknown fields through,
  because the API server prunes them; here every object that lists its properties is
  closed, so a misspelled field fails as it would silently vanish in a cluster.
"""

from __future__ import annotations

import copy
import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate.utils as kv  # type: ignore[import-untyped]
import yaml

Doc = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "deploy" / "k8s"
CRD_DIR = REPO_ROOT.parent / "shared" / "k8s-crds"
OVERLAYS = ("dev", "prod")
# Oldest Kubernetes release the manifests support, and the newest with shipped schemas.
K8S_VERSIONS = ("1.33.0", "1.37.0")

SERVICES = ("vote-ingest", "antifraud", "tally", "lottery")
NAMESPACE = "votes"
# Consumers that also serve many long-lived readers (tally's live-results streams) scale
# on their CPU as well as on their lag.
SCALED_ON_CPU_TOO = frozenset({"tally"})


# --- loading -----------------------------------------------------------------------------


def render(kustomize: Path, overlay: Path) -> list[Doc]:
    """`kustomize build` of one overlay, as a list of documents."""
    result = subprocess.run(
        [str(kustomize), "build", str(overlay)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        raise RenderError(f"kustomize build {overlay} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


class RenderError(Exception):
    pass


def ident(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def of_kind(docs: Iterable[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc.get("kind") == kind]


def named(docs: Iterable[Doc], kind: str, name: str) -> Doc:
    for doc in of_kind(docs, kind):
        if doc["metadata"]["name"] == name:
            return doc
    raise KeyError(f"{kind}/{name} not rendered")


def pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc["spec"]["template"]["spec"]
    return spec


def pod_labels(doc: Doc) -> dict[str, str]:
    labels: dict[str, str] = doc["spec"]["template"]["metadata"].get("labels", {})
    return labels


def env_of(container: Doc) -> dict[str, Doc]:
    return {item["name"]: item for item in container.get("env", [])}


# --- schemas -------------------------------------------------------------------------------


def api_group(doc: Doc) -> tuple[str, str]:
    group, _, version = str(doc.get("apiVersion", "")).rpartition("/")
    return group, version


def core_problems(doc: Doc, version: str) -> list[str]:
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as exc:
        where = ".".join(str(part) for part in exc.path)
        return [f"{ident(doc)} (Kubernetes {version}): {where}: {exc.message}"]
    except kv.SchemaNotFoundError:
        return [f"{ident(doc)}: no Kubernetes {version} schema for {doc.get('apiVersion')}"]
    return []


def _go_regex_to_python(pattern: str) -> str:
    # Go (RE2) accepts a flag group anywhere; Python wants it first.
    return "(?i)" + pattern.replace("(?i)", "") if "(?i)" in pattern else pattern


def closed_schema(schema: Any) -> Any:
    """A copy of an OpenAPI schema where objects with listed properties reject others."""
    if isinstance(schema, list):
        return [closed_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: closed_schema(value) for key, value in schema.items()}
    if isinstance(result.get("pattern"), str):
        result["pattern"] = _go_regex_to_python(result["pattern"])
    if (
        "properties" in result
        and "additionalProperties" not in result
        and not result.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


@dataclass(frozen=True)
class CrdSchemas:
    """The openAPIV3Schema of every CRD in a folder, by (group, version, kind)."""

    validators: dict[tuple[str, str, str], jsonschema.Draft7Validator]

    @classmethod
    def load(cls, folder: Path) -> CrdSchemas:
        if not folder.is_dir():
            raise FileNotFoundError(
                f"CRD schemas not found at {folder}: the shared k8s-crds folder must sit "
                "beside the repository (../shared/k8s-crds)"
            )
        validators: dict[tuple[str, str, str], jsonschema.Draft7Validator] = {}
        for path in sorted(folder.rglob("*.yaml")):
            with path.open(encoding="utf-8") as stream:
                crd = yaml.safe_load(stream)
            if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = closed_schema(version["schema"]["openAPIV3Schema"])
                jsonschema.Draft7Validator.check_schema(schema)
                validators[(group, version["name"], kind)] = jsonschema.Draft7Validator(schema)
        if not validators:
            raise FileNotFoundError(f"no CustomResourceDefinition found under {folder}")
        return cls(validators)

    def groups(self) -> set[str]:
        return {group for group, _, _ in self.validators}

    def problems(self, doc: Doc) -> list[str]:
        group, version = api_group(doc)
        validator = self.validators.get((group, version, str(doc.get("kind"))))
        if validator is None:
            return [f"{ident(doc)}: no CRD serves {doc.get('apiVersion')} {doc.get('kind')}"]
        return [
            f"{ident(doc)}: {'.'.join(str(p) for p in error.absolute_path) or '<root>'}: "
            f"{error.message}"
            for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        ]


def schema_problems(docs: Iterable[Doc], crds: CrdSchemas) -> list[str]:
    problems: list[str] = []
    for doc in docs:
        group, _ = api_group(doc)
        if group in crds.groups():
            problems += crds.problems(doc)
        else:
            for version in K8S_VERSIONS:
                problems += core_problems(doc, version)
    return problems


# --- workloads -----------------------------------------------------------------------------


def _selects(selector: Doc, labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        present, value = expr["key"] in labels, labels.get(expr["key"])
        match expr["operator"]:
            case "In" if value not in expr.get("values", []):
                return False
            case "NotIn" if value in expr.get("values", []):
                return False
            case "Exists" if not present:
                return False
            case "DoesNotExist" if present:
                return False
    return True


def _container_problems(where: str, container: Doc, pod: Doc) -> Iterator[str]:
    for probe in ("livenessProbe", "readinessProbe"):
        if not container.get(probe):
            yield f"{where}: no {probe}"
    resources = container.get("resources", {})
    for part in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in resources.get(part, {}):
                yield f"{where}: no resources.{part}.{resource}"
    pod_ctx: Doc = pod.get("securityContext", {})
    ctx: Doc = container.get("securityContext", {})

    def setting(key: str) -> Any:
        return ctx.get(key, pod_ctx.get(key))

    if setting("runAsNonRoot") is not True:
        yield f"{where}: runAsNonRoot is not true"
    user = setting("runAsUser")
    if not isinstance(user, int) or isinstance(user, bool) or user <= 0:
        yield f"{where}: runAsUser is not a numeric non-root user"
    if ctx.get("allowPrivilegeEscalation") is not False:
        yield f"{where}: allowPrivilegeEscalation is not false"
    if ctx.get("readOnlyRootFilesystem") is not True:
        yield f"{where}: readOnlyRootFilesystem is not true"
    if ctx.get("privileged"):
        yield f"{where}: privileged"
    capabilities = ctx.get("capabilities", {})
    if "ALL" not in capabilities.get("drop", []) or capabilities.get("add"):
        yield f"{where}: capabilities must drop ALL and add none"
    if (setting("seccompProfile") or {}).get("type") != "RuntimeDefault":
        yield f"{where}: seccompProfile is not RuntimeDefault"


def deployment_problems(docs: list[Doc]) -> list[str]:
    """Probes, requests and limits, restricted security context, spread, PDB."""
    problems: list[str] = []
    pdbs = of_kind(docs, "PodDisruptionBudget")
    for deployment in of_kind(docs, "Deployment"):
        where = ident(deployment)
        pod = pod_spec(deployment)
        labels = pod_labels(deployment)
        for container in pod.get("initContainers", []) + pod.get("containers", []):
            problems += _container_problems(
                f"{where} container {container['name']}", container, pod
            )
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(key):
                problems.append(f"{where}: {key}")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken is not false")
        spread = {c.get("topologyKey") for c in pod.get("topologySpreadConstraints", [])}
        if "topology.kubernetes.io/zone" not in spread:
            problems.append(f"{where}: no topology spread across zones")
        for constraint in pod.get("topologySpreadConstraints", []):
            if not _selects(constraint.get("labelSelector", {}), labels):
                problems.append(f"{where}: a topology spread selector misses its own pods")
        if not any(_selects(pdb["spec"]["selector"], labels) for pdb in pdbs):
            problems.append(f"{where}: no PodDisruptionBudget")
    return problems


def autoscaling_problems(docs: list[Doc], consumes: dict[str, tuple[str, str]]) -> list[str]:
    """KEDA never scales a consumer past its topic's partitions; ingest has an HPA."""
    problems: list[str] = []
    partitions = {
        t["spec"]["topicName"]: t["spec"]["partitions"] for t in of_kind(docs, "KafkaTopic")
    }
    deployments = {d["metadata"]["name"] for d in of_kind(docs, "Deployment")}
    auths = {a["metadata"]["name"] for a in of_kind(docs, "TriggerAuthentication")}
    hpa_targets = {
        h["spec"]["scaleTargetRef"]["name"] for h in of_kind(docs, "HorizontalPodAutoscaler")
    }
    scaled: set[str] = set()
    on_lag: set[str] = set()
    for scaled_object in of_kind(docs, "ScaledObject"):
        spec, where = scaled_object["spec"], ident(scaled_object)
        target = spec["scaleTargetRef"]["name"]
        scaled.add(target)
        if target not in deployments:
            problems.append(f"{where}: target Deployment {target} not rendered")
        if target in hpa_targets:
            problems.append(f"{where}: {target} also has a HorizontalPodAutoscaler")
        low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if not 1 <= low <= high:
            problems.append(f"{where}: replicas {low}..{high} (min must be >= 1 and <= max)")
        for trigger in spec["triggers"]:
            if trigger["type"] == "cpu" and target in SCALED_ON_CPU_TOO:
                continue  # also serves viewers (its requests are checked with every pod's)
            if trigger["type"] != "kafka":
                problems.append(f"{where}: trigger {trigger['type']} is not consumer lag")
                continue
            on_lag.add(target)
            meta = trigger["metadata"]
            topic, group = meta.get("topic"), meta.get("consumerGroup")
            if (group, topic) != consumes.get(target):
                problems.append(
                    f"{where}: scales on {group}/{topic}, expected {consumes.get(target)}"
                )
            if topic not in partitions:
                problems.append(f"{where}: topic {topic} has no KafkaTopic")
            elif high > partitions[topic]:
                problems.append(
                    f"{where}: maxReplicaCount {high} > {partitions[topic]} partitions of {topic}"
                )
            ref = trigger.get("authenticationRef", {}).get("name")
            if ref not in auths:
                problems.append(f"{where}: TriggerAuthentication {ref} not rendered")
    for name in consumes:
        if name not in scaled:
            problems.append(f"Deployment/{name}: not scaled by a ScaledObject")
        elif name not in on_lag:
            problems.append(f"Deployment/{name}: not scaled on its consumer lag")
    for name in deployments - scaled - hpa_targets:
        problems.append(f"Deployment/{name}: no autoscaler")
    return problems


# --- Kafka ---------------------------------------------------------------------------------

Acl = tuple[str, str, str]  # (resource type, resource name, operation)


def acls_of(user: Doc) -> set[Acl]:
    result: set[Acl] = set()
    for acl in user["spec"].get("authorization", {}).get("acls", []):
        resource = acl["resource"]
        kind = "allow" if acl.get("type", "allow") == "allow" else "deny"
        pattern = resource.get("patternType", "literal")
        name = resource.get("name", "*")
        if pattern != "literal" or "*" in name:
            name = f"{pattern}:{name}"
        for operation in acl["operations"]:
            result.add(
                (resource["type"], name, operation if kind == "allow" else f"deny {operation}")
            )
    return result


def acl_problems(docs: list[Doc], needs: dict[str, set[Acl]]) -> list[str]:
    """Every KafkaUser holds exactly the ACLs of `needs`: nothing missing, nothing extra."""
    problems: list[str] = []
    users = {u["metadata"]["name"]: u for u in of_kind(docs, "KafkaUser")}
    for name in sorted(set(users) | set(needs)):
        if name not in users:
            problems.append(f"KafkaUser/{name}: not rendered")
            continue
        if name not in needs:
            problems.append(f"KafkaUser/{name}: no statement of what it needs")
            continue
        actual = acls_of(users[name])
        for extra in sorted(actual - needs[name]):
            problems.append(f"KafkaUser/{name}: ACL not needed: {extra}")
        for missing in sorted(needs[name] - actual):
            problems.append(f"KafkaUser/{name}: ACL missing: {missing}")
        if users[name]["spec"].get("authentication", {}).get("type") != "scram-sha-512":
            problems.append(f"KafkaUser/{name}: not a SCRAM-SHA-512 user")
    topics = {t["spec"]["topicName"] for t in of_kind(docs, "KafkaTopic")}
    for name, acls in needs.items():
        for kind, resource, _ in acls:
            if kind == "topic" and resource not in topics:
                problems.append(f"KafkaUser/{name}: topic {resource} has no KafkaTopic")
    for deployment in of_kind(docs, "Deployment"):
        for container in pod_spec(deployment)["containers"]:
            env = env_of(container)
            user = env.get("KAFKA_SASL_USERNAME", {}).get("value")
            secret = env.get("KAFKA_SASL_PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef", {})
            if user not in users:
                problems.append(f"{ident(deployment)}: Kafka user {user!r} has no KafkaUser")
            elif secret.get("name") != f"kafka-user-{user}":
                problems.append(f"{ident(deployment)}: password not from kafka-user-{user}")
    return problems


def topic_problems(docs: list[Doc], vote_topics: Iterable[str]) -> list[str]:
    """Vote topics keep every record; replication tolerates one lost broker."""
    problems: list[str] = []
    topics = {t["spec"]["topicName"]: t for t in of_kind(docs, "KafkaTopic")}
    brokers = sum(p["spec"]["replicas"] for p in of_kind(docs, "KafkaNodePool"))
    for name in vote_topics:
        if name not in topics:
            problems.append(f"topic {name}: no KafkaTopic")
            continue
        spec, where = topics[name]["spec"], ident(topics[name])
        config = {key: str(value) for key, value in spec.get("config", {}).items()}
        for key, wanted in (
            ("retention.ms", "-1"),
            ("retention.bytes", "-1"),
            ("cleanup.policy", "delete"),
        ):
            if config.get(key) != wanted:
                problems.append(f"{where}: {key} is {config.get(key)}, must be {wanted}")
        replicas = spec.get("replicas", 0)
        if replicas > brokers:
            problems.append(f"{where}: {replicas} replicas on {brokers} brokers")
        if replicas > 1 and int(config.get("min.insync.replicas", "1")) != replicas - 1:
            problems.append(f"{where}: min.insync.replicas must be replicas - 1")
    settings = named(docs, "ConfigMap", _generated(docs, "votes-env"))["data"]
    for name in ("votes.submitted", "votes.accepted"):
        if name in topics and str(topics[name]["spec"]["partitions"]) != settings.get(
            "KAFKA_TOPIC_PARTITIONS"
        ):
            problems.append(
                f"votes-env: KAFKA_TOPIC_PARTITIONS differs from the partitions of {name}"
            )
    return problems


def _generated(docs: list[Doc], prefix: str) -> str:
    """The rendered name of a generated ConfigMap (kustomize appends a content hash)."""
    for doc in of_kind(docs, "ConfigMap"):
        name = str(doc["metadata"]["name"])
        if name == prefix or re.fullmatch(rf"{re.escape(prefix)}-[a-z0-9]{{10}}", name):
            return name
    raise KeyError(f"ConfigMap {prefix} not rendered")


# --- network, secrets, routes -------------------------------------------------------------


def network_problems(docs: list[Doc]) -> list[str]:
    """Default deny, and every service pod isolated for both directions."""
    problems: list[str] = []
    policies = of_kind(docs, "NetworkPolicy")
    if not any(
        p["spec"].get("podSelector") == {}
        and "Ingress" in p["spec"].get("policyTypes", [])
        and not p["spec"].get("ingress")
        for p in policies
    ):
        problems.append("no default-deny ingress NetworkPolicy for the whole namespace")
    for policy in policies:
        for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
            peers = rule.get("from", rule.get("to"))
            if not peers or not rule.get("ports"):
                problems.append(f"{ident(policy)}: a rule allows any peer or any port")
    for deployment in of_kind(docs, "Deployment"):
        labels = pod_labels(deployment)
        mine = [p for p in policies if _selects(p["spec"]["podSelector"], labels)]
        for direction in ("Ingress", "Egress"):
            if not any(direction in p["spec"].get("policyTypes", []) for p in mine):
                problems.append(
                    f"{ident(deployment)}: {direction} not restricted by a NetworkPolicy"
                )
    return problems


def referenced_secrets(docs: list[Doc]) -> set[str]:
    names: set[str] = set()
    for deployment in of_kind(docs, "Deployment"):
        pod = pod_spec(deployment)
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                names.add(volume["secret"]["secretName"])
        for container in pod["containers"]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    names.add(ref["name"])
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    names.add(source["secretRef"]["name"])
    return names


def secret_problems(docs: list[Doc], expected: set[str]) -> list[str]:
    problems = [f"{ident(doc)}: Secrets must not be committed" for doc in of_kind(docs, "Secret")]
    for name in sorted(referenced_secrets(docs) - expected):
        problems.append(f"Secret {name} is referenced but not documented")
    return problems


def resolve_route(docs: list[Doc], path: str) -> tuple[str, str]:
    """(Ingress, Service) that ingress-nginx picks for `path` with regex paths.

    ingress-nginx writes one case-insensitive regex location per path, anchored at the
    start, longest path first, and nginx takes the first regex that matches.
    """
    candidates: list[tuple[str, str, str]] = []
    for ingress in of_kind(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for item in rule["http"]["paths"]:
                backend = item["backend"]["service"]["name"]
                candidates.append((item["path"], ingress["metadata"]["name"], backend))
    for route, ingress_name, service in sorted(candidates, key=lambda c: -len(c[0])):
        if re.match("^" + route, path, flags=re.IGNORECASE):
            return ingress_name, service
    return "", ""


def ingress_problems(docs: list[Doc]) -> list[str]:
    problems: list[str] = []
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    for ingress in of_kind(docs, "Ingress"):
        annotations = ingress["metadata"].get("annotations", {})
        if annotations.get("nginx.ingress.kubernetes.io/use-regex") != "true":
            problems.append(f"{ident(ingress)}: paths are regexes but use-regex is not set")
        for rule in ingress["spec"]["rules"]:
            for item in rule["http"]["paths"]:
                backend = item["backend"]["service"]
                service = services.get(backend["name"])
                ports = {p.get("name") for p in service["spec"]["ports"]} if service else set()
                if backend["port"].get("name") not in ports:
                    problems.append(f"{ident(ingress)}: backend {backend} has no such Service port")
    return problems


def service_problems(docs: list[Doc]) -> list[str]:
    problems: list[str] = []
    deployments = of_kind(docs, "Deployment")
    for service in of_kind(docs, "Service"):
        selector = {"matchLabels": service["spec"].get("selector", {})}
        targets = [d for d in deployments if _selects(selector, pod_labels(d))]
        if len(targets) != 1:
            problems.append(f"{ident(service)}: selects {len(targets)} Deployments")
            continue
        ports = {p["name"] for c in pod_spec(targets[0])["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            if port.get("targetPort") not in ports:
                problems.append(f"{ident(service)}: targetPort {port.get('targetPort')} unknown")
    return problems


def copy_docs(docs: list[Doc]) -> list[Doc]:
    return copy.deepcopy(docs)


# --- database and monitoring ---------------------------------------------------------------

# PgBouncer settings the CloudNativePG admission webhook accepts in a Pooler (v1.30); any
# other key makes the operator reject the whole Pooler.
PGBOUNCER_PARAMETERS = frozenset(
    """application_name_add_host auth_type autodb_idle_timeout cancel_wait_timeout
    client_idle_timeout client_login_timeout client_tls_sslmode default_pool_size
    disable_pqexec dns_max_ttl dns_nxdomain_ttl idle_transaction_timeout
    ignore_startup_parameters listen_backlog log_connections log_disconnections
    log_pooler_errors log_stats max_client_conn max_db_connections max_packet_size
    max_prepared_statements max_user_connections min_pool_size pkt_buf query_timeout
    query_wait_timeout reserve_pool_size reserve_pool_timeout sbuf_loopcnt
    server_check_delay server_check_query server_connect_timeout server_fast_close
    server_idle_timeout server_lifetime server_login_retry server_reset_query
    server_reset_query_always server_round_robin server_tls_ciphers server_tls_protocols
    server_tls_sslmode stats_period suspend_timeout tcp_defer_accept tcp_socket_buffer
    tcp_keepalive tcp_keepcnt tcp_keepidle tcp_keepintvl tcp_user_timeout
    track_extra_parameters verbose""".split()
)


def database_problems(docs: list[Doc], roles: set[str]) -> list[str]:
    """One login role per service, each owning its schema; services use the pooler."""
    problems: list[str] = []
    clusters = of_kind(docs, "Cluster")
    if len(clusters) != 1:
        return [f"{len(clusters)} PostgreSQL Clusters rendered, expected 1"]
    cluster = clusters[0]
    managed = {r["name"]: r for r in cluster["spec"].get("managed", {}).get("roles", [])}
    sql = " ".join(cluster["spec"]["bootstrap"]["initdb"].get("postInitApplicationSQL", []))
    for role in sorted(roles):
        spec = managed.get(role)
        if spec is None or not spec.get("login"):
            problems.append(f"{ident(cluster)}: no login role {role}")
            continue
        for power in ("superuser", "createdb", "createrole", "replication", "bypassrls"):
            if spec.get(power):
                problems.append(f"{ident(cluster)}: role {role} has {power}")
        if spec.get("passwordSecret", {}).get("name") != f"votes-db-{role}":
            problems.append(f"{ident(cluster)}: role {role} password not from votes-db-{role}")
        if f"CREATE SCHEMA {role} AUTHORIZATION {role}" not in sql:
            problems.append(f"{ident(cluster)}: schema {role} is not owned by role {role}")
    for extra in sorted(set(managed) - roles):
        problems.append(f"{ident(cluster)}: role {extra} belongs to no service")
    for pooler in of_kind(docs, "Pooler"):
        if pooler["metadata"]["name"] == cluster["metadata"]["name"]:
            problems.append(f"{ident(pooler)}: a Pooler may not share its Cluster's name")
        for key in sorted(
            set(pooler["spec"]["pgbouncer"].get("parameters", {})) - PGBOUNCER_PARAMETERS
        ):
            problems.append(f"{ident(pooler)}: PgBouncer parameter {key} is not accepted")
    for deployment in of_kind(docs, "Deployment"):
        for container in pod_spec(deployment)["containers"]:
            url = env_of(container).get("DATABASE_URL", {}).get("value")
            name = deployment["metadata"]["name"]
            if name not in roles:
                if url is not None:
                    problems.append(f"{ident(deployment)}: has a DATABASE_URL but no database role")
                continue
            if not url or not url.startswith(f"postgresql://{name}@votes-db-pooler-rw:"):
                problems.append(
                    f"{ident(deployment)}: DATABASE_URL must use role {name} via the pooler"
                )
    return problems


# Connections of the primary not for the pooler: superuser_reserved_connections, the
# standbys' replication, the operator's and its exporter's sessions, backups.
RESERVED_CONNECTIONS = 30


def connection_budget_problems(docs: list[Doc]) -> list[str]:
    """The poolers' server connections, every instance at its maximum, fit within each
    role's connectionLimit and the primary's max_connections."""
    cluster = of_kind(docs, "Cluster")[0]
    room = int(cluster["spec"]["postgresql"]["parameters"]["max_connections"])
    room -= RESERVED_CONNECTIONS
    limits = {
        r["name"]: int(r["connectionLimit"])
        for r in cluster["spec"].get("managed", {}).get("roles", [])
    }
    problems: list[str] = []
    total = 0
    for pooler in of_kind(docs, "Pooler"):
        parameters = pooler["spec"]["pgbouncer"].get("parameters", {})
        instances = int(pooler["spec"].get("instances", 1))
        per_role = int(parameters.get("default_pool_size", 20))
        per_role += int(parameters.get("reserve_pool_size", 0))
        per_database = per_role * len(limits)
        if "max_db_connections" in parameters:
            per_database = min(per_database, int(parameters["max_db_connections"]))
        for role, limit in sorted(limits.items()):
            if instances * per_role > limit:
                problems.append(
                    f"{ident(pooler)}: {instances} x {per_role} connections of role {role}, "
                    f"above its connectionLimit {limit}"
                )
        total += instances * per_database
    if total > room:
        problems.append(
            f"{ident(cluster)}: poolers open up to {total} connections, above "
            f"max_connections less {RESERVED_CONNECTIONS} reserved ({room})"
        )
    return problems


def monitoring_problems(docs: list[Doc], jobs: set[str]) -> list[str]:
    """Scrape job names are the ones the alert rules select."""
    problems: list[str] = []
    monitors = [m for m in of_kind(docs, "PodMonitor") if m["spec"].get("jobLabel")]
    found: set[str] = set()
    for deployment in of_kind(docs, "Deployment"):
        labels = pod_labels(deployment)
        mine = [m for m in monitors if _selects(m["spec"]["selector"], labels)]
        if not mine:
            problems.append(f"{ident(deployment)}: no PodMonitor scrapes it")
        for monitor in mine:
            job = labels.get(monitor["spec"]["jobLabel"])
            if job is None:
                problems.append(f"{ident(deployment)}: no pod label {monitor['spec']['jobLabel']}")
            else:
                found.add(job)
    if found != jobs:
        problems.append(f"scrape jobs {sorted(found)} differ from {sorted(jobs)}")
    for rule in of_kind(docs, "PrometheusRule"):
        text = yaml.safe_dump(rule["spec"])
        for op, value in re.findall(r'job(=~?)\\?"([^"\\]+)\\?"', text):
            wanted = set(value.split("|")) if op == "=~" else {value}
            for job in sorted(wanted - jobs):
                problems.append(f"{ident(rule)}: selects job {job!r}, which no PodMonitor makes")
    return problems
