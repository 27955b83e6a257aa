"""Every rendered object validates: core kinds strictly against the Kubernetes schemas,
custom resources against their operators' CRDs (closed to unknown fields)."""

from __future__ import annotations

import pytest

from tests.k8s.manifests import CrdSchemas, Doc, copy_docs, named, schema_problems

CUSTOM_KINDS = {
    "Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "Cluster", "Pooler",
    "ScheduledBackup", "ScaledObject", "TriggerAuthentication", "PodMonitor", "PrometheusRule",
}  # fmt: skip


def test_every_object_matches_its_schema(docs: list[Doc], crds: CrdSchemas) -> None:
    assert schema_problems(docs, crds) == []


def test_every_custom_kind_has_a_crd(docs: list[Doc], crds: CrdSchemas) -> None:
    rendered = {doc["kind"] for doc in docs}
    assert CUSTOM_KINDS - {"ScheduledBackup"} <= rendered  # dev has no backups
    known = {kind for _, _, kind in crds.validators}
    assert CUSTOM_KINDS <= known


def test_strimzi_resources_use_the_current_api(docs: list[Doc]) -> None:
    for doc in docs:
        if doc["apiVersion"].startswith("kafka.strimzi.io/"):
            assert doc["apiVersion"] == "kafka.strimzi.io/v1", doc["metadata"]["name"]


# --- the validators catch broken manifests ---------------------------------------------------


def _broken(docs: list[Doc], kind: str, name: str) -> tuple[list[Doc], Doc]:
    copy = copy_docs(docs)
    return copy, named(copy, kind, name)


@pytest.mark.parametrize("overlay", ["prod"])
def test_misspelled_core_field_fails(docs: list[Doc], crds: CrdSchemas) -> None:
    copy, deployment = _broken(docs, "Deployment", "tally")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbes"] = container.pop("readinessProbe")
    problems = schema_problems(copy, crds)
    assert problems and all("readinessProbes" in p for p in problems)


@pytest.mark.parametrize("overlay", ["prod"])
def test_wrong_core_type_fails(docs: list[Doc], crds: CrdSchemas) -> None:
    copy, service = _broken(docs, "Service", "antifraud")
    service["spec"]["ports"][0]["port"] = "http"
    assert any("Service/antifraud" in p for p in schema_problems(copy, crds))


@pytest.mark.parametrize("overlay", ["prod"])
def test_misspelled_custom_field_fails(docs: list[Doc], crds: CrdSchemas) -> None:
    copy, topic = _broken(docs, "KafkaTopic", "votes-submitted")
    topic["spec"]["partiton"] = topic["spec"].pop("partitions")
    assert any("'partiton' was unexpected" in p for p in schema_problems(copy, crds))


@pytest.mark.parametrize("overlay", ["prod"])
def test_wrong_custom_type_fails(docs: list[Doc], crds: CrdSchemas) -> None:
    copy, topic = _broken(docs, "KafkaTopic", "votes-accepted")
    topic["spec"]["partitions"] = "24"
    assert any("is not of type 'integer'" in p for p in schema_problems(copy, crds))


@pytest.mark.parametrize("overlay", ["prod"])
def test_old_strimzi_api_fails(docs: list[Doc], crds: CrdSchemas) -> None:
    copy, kafka = _broken(docs, "Kafka", "votes-kafka")
    kafka["apiVersion"] = "kafka.strimzi.io/v1beta2"
    assert any("no CRD serves" in p for p in schema_problems(copy, crds))


@pytest.mark.parametrize("overlay", ["prod"])
def test_bad_enum_in_cnpg_and_keda_fails(docs: list[Doc], crds: CrdSchemas) -> None:
    copy, pooler = _broken(docs, "Pooler", "votes-db-pooler-rw")
    pooler["spec"]["pgbouncer"]["poolMode"] = "statement"
    named(copy, "ScaledObject", "tally")["spec"]["fallback"]["behavior"] = "sometimes"
    problems = schema_problems(copy, crds)
    assert any("Pooler/" in p and "statement" in p for p in problems)
    assert any("ScaledObject/tally" in p and "sometimes" in p for p in problems)


def test_prometheus_rule_with_go_regex_field_validates(crds: CrdSchemas) -> None:
    rule: Doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "r"},
        "spec": {"groups": [{"name": "g", "partial_response_strategy": "warn", "rules": []}]},
    }
    assert crds.problems(rule) == []
    rule["spec"]["groups"][0]["partial_response_strategy"] = "ignore"
    assert crds.problems(rule)
