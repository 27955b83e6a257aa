"""Both overlays render, hold what an operator expects, and the generated monitoring
objects match their sources."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from services.antifraud.main import AntifraudSettings
from services.lottery.main import LotterySettings
from services.tally.main import TallySettings
from services.vote_ingest.main import IngestSettings
from shared.catalog import parse_catalog
from shared.settings import LOCAL_DEFAULTS, ServiceSettings
from tests.k8s.manifests import (
    K8S_DIR,
    NAMESPACE,
    REPO_ROOT,
    Doc,
    RenderError,
    env_of,
    named,
    of_kind,
    pod_spec,
    render,
)

EXPECTED_KINDS = {
    "Namespace": 1,
    "Deployment": 4,
    "Service": 4,
    "ServiceAccount": 4,
    "PodDisruptionBudget": 4,
    "HorizontalPodAutoscaler": 1,
    "ScaledObject": 3,
    "TriggerAuthentication": 1,
    "Kafka": 1,
    "KafkaNodePool": 1,
    "KafkaTopic": 4,
    "KafkaUser": 5,
    "Cluster": 1,
    "Pooler": 1,
    "PodMonitor": 4,
    "PrometheusRule": 1,
}


def test_overlay_renders_every_component(docs: list[Doc], overlay: str) -> None:
    kinds = Counter(doc["kind"] for doc in docs)
    for kind, count in EXPECTED_KINDS.items():
        assert kinds[kind] == count, f"{overlay}: {kinds[kind]} {kind}, expected {count}"
    assert kinds["ScheduledBackup"] == (1 if overlay == "prod" else 0)
    assert kinds["Ingress"] >= 3


def test_everything_lives_in_the_namespace(docs: list[Doc]) -> None:
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]


def test_prod_is_production_shaped(rendered: dict[str, list[Doc]]) -> None:
    prod = rendered["prod"]
    assert named(prod, "KafkaNodePool", "nodes")["spec"]["replicas"] == 3
    assert set(named(prod, "KafkaNodePool", "nodes")["spec"]["roles"]) == {"controller", "broker"}
    cluster = named(prod, "Cluster", "votes-db")["spec"]
    assert cluster["instances"] == 3
    assert cluster["postgresql"]["synchronous"]["number"] >= 1
    assert any(p.get("isWALArchiver") for p in cluster["plugins"])
    for deployment in of_kind(prod, "Deployment"):
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image.partition(":")[2] not in {"", "latest", "dev"}, image


def test_poll_catalog_config_map_validates(docs: list[Doc]) -> None:
    config_maps = [c for c in of_kind(docs, "ConfigMap") if "polls.yaml" in c.get("data", {})]
    assert len(config_maps) == 1
    catalog = parse_catalog(config_maps[0]["data"]["polls.yaml"], "ConfigMap votes-polls")
    assert catalog.polls


def test_dashboard_config_map_is_labelled_for_the_grafana_sidecar(docs: list[Doc]) -> None:
    dashboard = named(docs, "ConfigMap", "votes-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(dashboard["data"]) == {"votes.json"}


def test_generated_monitoring_objects_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "render_prometheusrule.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_render_script_wraps_the_rule_file(tmp_path: Path) -> None:
    (tmp_path / "deploy" / "prometheus").mkdir(parents=True)
    (tmp_path / "deploy" / "grafana").mkdir(parents=True)
    (tmp_path / "deploy" / "k8s" / "base" / "monitoring").mkdir(parents=True)
    rules = {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up == 0\nor vector(0)"}]}]}
    (tmp_path / "deploy" / "prometheus" / "alerts.yaml").write_text(yaml.safe_dump(rules))
    (tmp_path / "deploy" / "grafana" / "dashboard.json").write_text('{"title": "t"}')
    script = [sys.executable, str(REPO_ROOT / "scripts" / "render_prometheusrule.py")]
    root = ["--root", str(tmp_path)]
    stale = subprocess.run([*script, "--check", *root], capture_output=True, text=True, check=False)
    assert stale.returncode == 1 and "out of date" in stale.stderr
    subprocess.run([*script, *root], capture_output=True, check=True)
    assert subprocess.run([*script, "--check", *root], check=False).returncode == 0
    out = tmp_path / "deploy" / "k8s" / "base" / "monitoring"
    rule = yaml.safe_load((out / "prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule" and rule["spec"]["groups"] == rules["groups"]
    assert (out / "dashboard.json").read_text() == '{"title": "t"}'
    (tmp_path / "deploy" / "prometheus" / "alerts.yaml").write_text("groups: {}\n")
    bad = subprocess.run([*script, *root], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "groups" in bad.stderr


def test_a_broken_kustomization_fails_to_render(kustomize: Path, tmp_path: Path) -> None:
    shutil.copytree(K8S_DIR, tmp_path / "k8s")
    base = tmp_path / "k8s" / "base" / "kustomization.yaml"
    base.write_text(base.read_text().replace("app/tally.yaml", "app/talley.yaml"))
    with pytest.raises(RenderError, match="talley"):
        render(kustomize, tmp_path / "k8s" / "overlays" / "prod")


SETTINGS: dict[str, type[ServiceSettings]] = {
    "vote-ingest": IngestSettings,
    "antifraud": AntifraudSettings,
    "tally": TallySettings,
    "lottery": LotterySettings,
}


def test_each_service_is_given_what_production_requires(docs: list[Doc]) -> None:
    """VOTES_ENV=production stops a service missing one of LOCAL_DEFAULTS at start."""
    config_maps = {m["metadata"]["name"]: m.get("data", {}) for m in of_kind(docs, "ConfigMap")}
    for deployment in of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        container = pod_spec(deployment)["containers"][0]
        given = set(env_of(container))
        for source in container.get("envFrom", []):
            given |= set(config_maps[source["configMapRef"]["name"]])
        fields = SETTINGS[name].model_fields
        wanted = {f.upper() for f in LOCAL_DEFAULTS if f in fields} | {"VOTES_ENV"}
        assert wanted <= given, f"{name} lacks {sorted(wanted - given)}"
