"""Linters: checkov on each rendered overlay (skips justified in place, on the resource),
hadolint on the Dockerfile; both shown to fail on a broken input."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.manifests import REPO_ROOT, Doc, copy_docs, named


def run_checkov(checkov: Path, docs: list[Doc], folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    result = subprocess.run(
        [str(checkov), "--file", str(manifest), "--framework", "kubernetes",
         "--output", "json", "--skip-download", "--compact"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(folder), "BC_SKIP_MAPPING": "TRUE"},
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def failed(report: dict[str, Any]) -> list[str]:
    return [
        f"{check['check_id']} {check['resource']}: {check['check_name']}"
        for check in report["results"]["failed_checks"]
    ]


def test_checkov_passes_with_justified_skips(
    checkov: Path, docs: list[Doc], tmp_path: Path
) -> None:
    report = run_checkov(checkov, docs, tmp_path)
    assert failed(report) == []
    assert report["summary"]["passed"] > 100
    for check in report["results"]["skipped_checks"]:
        comment = check.get("check_result", {}).get("suppress_comment", "")
        assert len(comment) > 30, f"{check['check_id']} on {check['resource']}: no justification"


@pytest.mark.parametrize("overlay", ["prod"])
def test_checkov_fails_on_a_privileged_container(
    checkov: Path, docs: list[Doc], tmp_path: Path
) -> None:
    broken = copy_docs(docs)
    pod = named(broken, "Deployment", "vote-ingest")["spec"]["template"]["spec"]
    pod["containers"][0]["securityContext"]["privileged"] = True
    pod["hostNetwork"] = True
    ids = {line.split()[0] for line in failed(run_checkov(checkov, broken, tmp_path))}
    assert {"CKV_K8S_16", "CKV_K8S_19"} <= ids


def hadolint_run(hadolint: Path, dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(hadolint), "--config", str(REPO_ROOT / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_dockerfile_passes_hadolint(hadolint: Path) -> None:
    result = hadolint_run(hadolint, REPO_ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_numeric_user_without_build_tools() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    assert len(stages) >= 2, "multi-stage build expected"
    final = stages[-1]
    users = re.findall(r"^USER (\S+)", final, flags=re.MULTILINE)
    assert users and re.fullmatch(r"\d+(:\d+)?", users[-1]), users
    assert "apt-get" not in final and "gcc" not in final
    assert re.search(r'^ENTRYPOINT \["python", "-m"\]', final, flags=re.MULTILINE)
    lines = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert rules[0] == "*", ".dockerignore must admit only what the image needs"


def test_hadolint_fails_on_a_bad_dockerfile(hadolint: Path, tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install gcc\nUSER root\n", encoding="utf-8")
    result = hadolint_run(hadolint, bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3008" in result.stdout
