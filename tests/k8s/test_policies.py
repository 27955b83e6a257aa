"""Hardening, scaling, least privilege and routing rules every overlay must keep, and
proof that each checker catches the breakage it exists for."""

from __future__ import annotations

import pytest

from tests.k8s import needs
from tests.k8s.manifests import (
    Doc,
    acl_problems,
    autoscaling_problems,
    connection_budget_problems,
    copy_docs,
    database_problems,
    deployment_problems,
    ingress_problems,
    monitoring_problems,
    named,
    network_problems,
    of_kind,
    resolve_route,
    secret_problems,
    service_problems,
    topic_problems,
)


def test_deployments_are_hardened(docs: list[Doc]) -> None:
    assert deployment_problems(docs) == []


def test_consumers_scale_on_lag_within_partitions(docs: list[Doc]) -> None:
    assert autoscaling_problems(docs, needs.CONSUMES) == []


def test_kafka_users_hold_exactly_what_they_need(docs: list[Doc]) -> None:
    assert acl_problems(docs, needs.KAFKA_ACLS) == []


def test_vote_topics_keep_every_record(docs: list[Doc]) -> None:
    assert topic_problems(docs, needs.VOTE_TOPICS) == []


def test_database_roles_are_per_service(docs: list[Doc]) -> None:
    assert database_problems(docs, needs.DATABASE_ROLES) == []


def test_pooler_connections_fit_the_database(docs: list[Doc]) -> None:
    assert connection_budget_problems(docs) == []


def test_network_is_default_deny(docs: list[Doc]) -> None:
    assert network_problems(docs) == []


def test_secrets_are_referenced_not_committed(docs: list[Doc]) -> None:
    assert secret_problems(docs, needs.SECRETS) == []


def test_services_and_ingress_backends_connect(docs: list[Doc]) -> None:
    assert service_problems(docs) == []
    assert ingress_problems(docs) == []


def test_scrape_jobs_match_the_alert_rules(docs: list[Doc]) -> None:
    assert monitoring_problems(docs, needs.SCRAPE_JOBS) == []


@pytest.mark.parametrize(("path", "expected"), sorted(needs.ROUTES.items()))
def test_public_routes_mirror_the_gateway(
    docs: list[Doc], path: str, expected: tuple[str, str]
) -> None:
    assert resolve_route(docs, path) == expected


def test_ingress_limits_and_restrictions(docs: list[Doc], overlay: str) -> None:
    annotations = {
        i["metadata"]["name"]: i["metadata"].get("annotations", {})
        for i in of_kind(docs, "Ingress")
    }
    prefix = "nginx.ingress.kubernetes.io/"
    for name in ("votes-public", "votes-lookups", "votes-results-stream"):
        assert annotations[name][prefix + "proxy-body-size"] == "4k"
    # The same bounds per client address as the local gateway's (deploy/local).
    lookups = annotations["votes-lookups"]
    assert (lookups[prefix + "limit-rps"], lookups[prefix + "limit-burst-multiplier"]) == (
        "100",
        "10",
    )
    assert annotations["votes-results-stream"][prefix + "limit-connections"] == "200"
    assert annotations["votes-staff"][prefix + "proxy-body-size"] == "16k"
    assert annotations["votes-results-stream"][prefix + "proxy-buffering"] == "off"
    assert int(annotations["votes-results-stream"][prefix + "proxy-read-timeout"]) >= 600
    staff = annotations["votes-staff"][prefix + "whitelist-source-range"]
    assert "0.0.0.0/0" not in staff and staff
    assert annotations["votes-internal-paths"][prefix + "whitelist-source-range"] == "127.0.0.1/32"
    if overlay == "prod":
        for ingress in of_kind(docs, "Ingress"):
            assert ingress["spec"].get("tls"), ingress["metadata"]["name"]


# --- each checker fails on a deliberately broken copy --------------------------------------

pytestmark_prod = pytest.mark.parametrize("overlay", ["prod"])


def _container(docs: list[Doc], name: str) -> Doc:
    container: Doc = named(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
    return container


@pytestmark_prod
def test_missing_probe_is_caught(docs: list[Doc]) -> None:
    broken = copy_docs(docs)
    del _container(broken, "lottery")["livenessProbe"]
    assert deployment_problems(broken) == ["Deployment/lottery container lottery: no livenessProbe"]


@pytestmark_prod
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("runAsUser", None, "runAsUser"),
        ("readOnlyRootFilesystem", False, "readOnlyRootFilesystem"),
        ("allowPrivilegeEscalation", True, "allowPrivilegeEscalation"),
        ("capabilities", {"drop": ["NET_RAW"]}, "capabilities"),
        ("seccompProfile", {"type": "Unconfined"}, "seccompProfile"),
    ],
)
def test_weakened_security_context_is_caught(
    docs: list[Doc], field: str, value: object, message: str
) -> None:
    broken = copy_docs(docs)
    deployment = named(broken, "Deployment", "antifraud")
    pod = deployment["spec"]["template"]["spec"]
    pod["securityContext"].pop(field, None)
    ctx = pod["containers"][0]["securityContext"]
    if value is None:
        ctx.pop(field)
    else:
        ctx[field] = value
    problems = deployment_problems(broken)
    assert problems and all(message in p for p in problems)


@pytestmark_prod
def test_missing_limits_spread_and_pdb_are_caught(docs: list[Doc]) -> None:
    broken = copy_docs(docs)
    del _container(broken, "tally")["resources"]["limits"]
    del named(broken, "Deployment", "vote-ingest")["spec"]["template"]["spec"][
        "topologySpreadConstraints"
    ]
    broken.remove(named(broken, "PodDisruptionBudget", "antifraud"))
    problems = deployment_problems(broken)
    assert "Deployment/tally container tally: no resources.limits.cpu" in problems
    assert "Deployment/vote-ingest: no topology spread across zones" in problems
    assert "Deployment/antifraud: no PodDisruptionBudget" in problems


@pytestmark_prod
def test_scaling_past_the_partitions_is_caught(docs: list[Doc]) -> None:
    broken = copy_docs(docs)
    named(broken, "ScaledObject", "tally")["spec"]["maxReplicaCount"] = 48
    assert autoscaling_problems(broken, needs.CONSUMES) == [
        "ScaledObject/tally: maxReplicaCount 48 > 24 partitions of votes.accepted"
    ]


@pytestmark_prod
def test_scaling_on_cpu_instead_of_lag_is_caught(docs: list[Doc]) -> None:
    cpu = {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}}
    broken = copy_docs(docs)
    named(broken, "ScaledObject", "antifraud")["spec"]["triggers"].append(cpu)
    tally = named(broken, "ScaledObject", "tally")["spec"]
    tally["triggers"] = [t for t in tally["triggers"] if t["type"] == "cpu"]
    assert autoscaling_problems(broken, needs.CONSUMES) == [
        "ScaledObject/antifraud: trigger cpu is not consumer lag",
        "Deployment/tally: not scaled on its consumer lag",
    ]


@pytestmark_prod
def test_fewer_partitions_than_replicas_is_caught(docs: list[Doc]) -> None:
    broken = copy_docs(docs)
    named(broken, "KafkaTopic", "votes-submitted")["spec"]["partitions"] = 12
    assert any("maxReplicaCount 24 > 12" in p for p in autoscaling_problems(broken, needs.CONSUMES))
    assert any("KAFKA_TOPIC_PARTITIONS" in p for p in topic_problems(broken, needs.VOTE_TOPICS))


@pytestmark_prod
def test_extra_and_missing_acls_are_caught(docs: list[Doc]) -> None:
    broken = copy_docs(docs)
    tally = named(broken, "KafkaUser", "tally")["spec"]["authorization"]["acls"]
    tally.append({"resource": {"type": "topic", "name": "votes.accepted"}, "operations": ["Write"]})
    lottery = named(broken, "KafkaUser", "lottery")["spec"]["authorization"]["acls"]
    lottery[:] = [a for a in lottery if a["resource"]["type"] != "group"]
    named(broken, "KafkaUser", "antifraud")["spec"]["authorization"]["acls"].append(
        {
            "resource": {"type": "topic", "name": "votes.", "patternType": "prefix"},
            "operations": ["Read"],
        }
    )
    assert acl_problems(broken, needs.KAFKA_ACLS) == [
        "KafkaUser/antifraud: ACL not needed: ('topic', 'prefix:votes.', 'Read')",
        "KafkaUser/lottery: ACL missing: ('group', 'antifraud', 'Describe')",
        "KafkaUser/lottery: ACL missing: ('group', 'lottery', 'Read')",
        "KafkaUser/tally: ACL not needed: ('topic', 'votes.accepted', 'Write')",
    ]


@pytestmark_prod
def test_compacted_or_expiring_vote_topic_is_caught(docs: list[Doc]) -> None:
    broken = copy_docs(docs)
    config = named(broken, "KafkaTopic", "votes-accepted")["spec"]["config"]
    config["cleanup.policy"] = "compact"
    config["retention.ms"] = 604800000
    problems = topic_problems(broken, needs.VOTE_TOPICS)
    assert len(problems) == 2 and all("KafkaTopic/votes-accepted" in p for p in problems)


@pytestmark_prod
def test_shared_or_privileged_database_role_is_caught(docs: list[Doc]) -> None:
    broken = copy_docs(docs)
    roles = named(broken, "Cluster", "votes-db")["spec"]["managed"]["roles"]
    roles[0]["superuser"] = True
    url = next(e for e in _container(broken, "tally")["env"] if e["name"] == "DATABASE_URL")
    url["value"] = "postgresql://antifraud@votes-db-rw:5432/votes"
    named(broken, "Pooler", "votes-db-pooler-rw")["spec"]["pgbouncer"]["parameters"][
        "pool_mode"
    ] = "session"
    problems = database_problems(broken, needs.DATABASE_ROLES)
    assert "Cluster/votes-db: role antifraud has superuser" in problems
    assert "Deployment/tally: DATABASE_URL must use role tally via the pooler" in problems
    assert "Pooler/votes-db-pooler-rw: PgBouncer parameter pool_mode is not accepted" in problems


@pytestmark_prod
def test_open_network_and_committed_secret_are_caught(docs: list[Doc]) -> None:
    broken = copy_docs(docs)
    broken.remove(named(broken, "NetworkPolicy", "default-deny-ingress"))
    named(broken, "NetworkPolicy", "tally")["spec"]["ingress"].append({})
    broken.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "votes-pii"}})
    network = network_problems(broken)
    assert "no default-deny ingress NetworkPolicy for the whole namespace" in network
    assert "NetworkPolicy/tally: a rule allows any peer or any port" in network
    assert secret_problems(broken, needs.SECRETS) == [
        "Secret/votes-pii: Secrets must not be committed"
    ]


@pytestmark_prod
def test_route_to_metrics_or_unrestricted_staff_is_caught(docs: list[Doc]) -> None:
    broken = copy_docs(docs)
    broken.remove(named(broken, "Ingress", "votes-internal-paths"))
    staff = named(broken, "Ingress", "votes-staff")
    staff["metadata"]["name"] = "votes-public-2"
    assert resolve_route(broken, "/metrics") == ("votes-public", "vote-ingest")
    assert resolve_route(broken, "/staff/") == ("votes-public-2", "lottery")


@pytestmark_prod
def test_a_pooler_opening_more_than_the_database_allows_is_caught(docs: list[Doc]) -> None:
    broken = copy_docs(docs)
    pooler = named(broken, "Pooler", "votes-db-pooler-rw")["spec"]
    pooler["instances"] = 5
    problems = connection_budget_problems(broken)
    assert any("connections of role tally, above its connectionLimit" in p for p in problems)
    assert any(p.startswith("Cluster/votes-db: poolers open up to") for p in problems)
