"""The local stack's PostgreSQL writes batches as the shipped cluster does."""

from __future__ import annotations

from pathlib import Path

import yaml

from scripts.stack.postgres import CLUSTER_SETTINGS

CLUSTER = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base" / "postgres"


def test_the_stack_runs_with_the_shipped_clusters_settings() -> None:
    docs = yaml.safe_load_all((CLUSTER / "cluster.yaml").read_text(encoding="utf-8"))
    cluster = next(doc for doc in docs if doc and doc["kind"] == "Cluster")
    shipped = cluster["spec"]["postgresql"]["parameters"]
    local = dict(setting.split("=", 1) for setting in CLUSTER_SETTINGS)
    assert {"max_locks_per_transaction", "shared_buffers", "work_mem", "max_wal_size"} <= set(local)
    for name, value in local.items():
        assert value == str(shipped[name]), name
