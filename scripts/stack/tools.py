"""The programs the stack runs: Debian packages installed when missing, Kafka's jars."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from .settings import CACHE, DEPLOY, StackError


def _which(name: str, *extra_dirs: str) -> str | None:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", *extra_dirs])
    return shutil.which(name, path=search)


def pg_bindir() -> Path | None:
    """The newest Debian PostgreSQL server binaries, or the ones on PATH."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    found = _which("initdb")
    return Path(found).parent if found else None


def missing_packages(*, browser: bool) -> list[str]:
    """Debian packages whose programs the stack needs and this machine lacks."""
    wanted = {
        "postgresql": pg_bindir() is not None,
        "nginx": _which("nginx") is not None,
        "prometheus": _which("prometheus") is not None,
        "default-jre-headless": _which("java") is not None,
        "maven": _which("mvn") is not None,
    }
    if browser:
        wanted["chromium"] = _which("chromium") is not None
        # The pages are Chinese; without a CJK font the browser draws boxes.
        wanted["fonts-wqy-microhei"] = Path(
            "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
        ).exists()
    return [package for package, present in wanted.items() if not present]


def install_packages(packages: Sequence[str], note: Callable[[str], None]) -> None:
    if not packages:
        return
    command = "apt-get install -y --no-install-recommends " + " ".join(packages)
    if os.geteuid() != 0 or _which("apt-get") is None:
        raise StackError(
            f"missing programs from the Debian packages: {' '.join(packages)}.\n"
            f"Install them (as root: {command}) or run this command as root."
        )
    note(f"installing {' '.join(packages)} (first run only)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = Path("/usr/sbin/policy-rc.d")
    # Debian starts a package's daemon on install (a system nginx on :80, a system
    # Prometheus on :9090 that would take our port); policy-rc.d exit 101 forbids it.
    added_policy = not policy.exists()
    if added_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(command.split(), check=True, env=env)
    except subprocess.CalledProcessError as exc:
        raise StackError(f"`{command}` failed (exit {exc.returncode})") from None
    finally:
        if added_policy:
            policy.unlink()


def kafka_libs(note: Callable[[str], None]) -> Path:
    """Kafka's jars, resolved by Maven from the pinned pom, cached by the pom's hash."""
    pom = DEPLOY / "local" / "kafka" / "pom.xml"
    key = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    libs = CACHE / "kafka-libs" / key
    if (libs / ".complete").exists():
        return libs
    note("resolving the Kafka jars with Maven (first run only)")
    partial = libs.with_name(key + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    goal = ["dependency:copy-dependencies", f"-DoutputDirectory={partial}"]
    command = ["mvn", "-q", "-B", "-f", str(pom), *goal]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not any(partial.glob("kafka_*.jar")):
        raise StackError(
            "Maven could not resolve Apache Kafka's jars from deploy/local/kafka/pom.xml:\n"
            + (result.stdout + result.stderr)[-3000:]
        )
    (partial / ".complete").touch()
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    return libs
