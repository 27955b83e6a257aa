"""The single-node KRaft Kafka broker, run from the jars Maven resolved."""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import shutil
import subprocess
from pathlib import Path
from string import Template

from .base import StackBase
from .processes import _tail
from .settings import DEPLOY, StackError


def _kafka_ready(bootstrap: str) -> bool:
    async def probe() -> bool:
        from aiokafka.admin import AIOKafkaAdminClient

        client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await client.start()
            cluster = await client.describe_cluster()
            # A fresh broker creates its offsets topic on the first coordinator lookup;
            # until then every consumer group logs errors on joining. Ready means found.
            await client.find_coordinator("stack-ready")
            return bool(cluster.get("brokers"))
        finally:
            await client.close()

    # Connection errors while the broker starts are expected: keep them off the console.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(asyncio.wait_for(probe(), timeout=5))
    except Exception:  # any failure means "not ready yet"
        return False


def _kafka_cluster_id() -> str:
    # Kafka's own format (Uuid.randomUuid): 16 random bytes, URL-safe base64 without
    # padding, never starting with "-" (it would read as a command-line option).
    while True:
        text = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class KafkaMixin(StackBase):
    """The broker's command line and its storage, formatted on first start."""

    _libs: Path | None

    def _kafka_command(self) -> list[str]:
        if self._libs is None:
            raise StackError("Kafka's jars were not resolved: prepare() first")
        heap = self.overrides.get("KAFKA_HEAP_OPTS", "-Xms256m -Xmx1g").split()
        return [
            "java",
            *heap,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={DEPLOY / 'local' / 'log4j2.yaml'}",
            "-cp",
            f"{self._libs}/*",
            "kafka.Kafka",
            str(self.run_dir / "kafka" / "server.properties"),
        ]

    def _init_kafka(self) -> None:
        kafka_dir = self.run_dir / "kafka"
        props = kafka_dir / "server.properties"
        template = Template((DEPLOY / "local" / "server.properties.in").read_text())
        kafka_dir.mkdir(parents=True, exist_ok=True)
        props.write_text(
            template.substitute(
                KAFKA_PORT=self.ports.kafka,
                KAFKA_CONTROLLER_PORT=self.ports.kafka_controller,
                KAFKA_LOG_DIR=kafka_dir / "data",
            )
        )
        if (kafka_dir / "data" / "meta.properties").exists():
            return
        self.console.note("formatting the Kafka log directory (first run only)")
        shutil.rmtree(kafka_dir / "data", ignore_errors=True)
        java = self._kafka_command()[:-2]  # the JVM and class path, without the server
        command = [*java, "kafka.tools.StorageTool", "format", "-t", _kafka_cluster_id()]
        command += ["-c", str(props), "--standalone"]
        log = self.log_dir / "kafka.log"
        with log.open("ab") as out:
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            raise StackError(f"formatting Kafka's storage failed; see {log}:\n{_tail(log)}")
