"""The stack's fixed layout: repository paths, component names, ports, its one error."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CACHE = REPO / ".cache"
SERVICES = ("vote_ingest", "antifraud", "tally", "lottery")
# Start order; stop is the reverse except that the gateway goes first (see Stack.stop).
COMPONENTS = ("postgres", "kafka", *SERVICES, "gateway", "prometheus")
TEST_PORT_OFFSET = 10_000
# Everything here shares one machine's cores. The voter waits on the edge (and on Kafka,
# which acknowledges each vote), while the consumers and Postgres have seconds of room:
# under contention they yield the CPU to the edge, as pods with CPU requests would on a
# cluster. Nice 5 weighs a process about a third of one at nice 0.
BACKGROUND_NICE = 5
EXEC_PORT_OFFSET = 20_000
DEMO_POLL = "demo-reform"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
# Variables that describe which stack a process talks to: a fresh test stack sets its
# own and ignores whatever the developer exported for `make run`.
STACK_OWNED = (
    "GATEWAY_PORT",
    "VOTE_INGEST_PORT",
    "ANTIFRAUD_PORT",
    "TALLY_PORT",
    "LOTTERY_PORT",
    "PROMETHEUS_PORT",
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_CONTROLLER_PORT",
    "DATABASE_URL",
    "POLLS_FILE",
    "CAPTCHA_SECRET",
    "VOTER_TOKEN_SECRET",
    "PII_KEY",
    "STAFF_TOKENS",
)


class StackError(RuntimeError):
    """The stack cannot be prepared or started; the message says what to do."""


@dataclass(frozen=True)
class Ports:
    gateway: int = 8080
    vote_ingest: int = 8081
    antifraud: int = 8082
    tally: int = 8083
    lottery: int = 8084
    kafka: int = 9092
    kafka_controller: int = 9093
    postgres: int = 5433
    prometheus: int = 9090

    def offset(self, by: int) -> Ports:
        shifted = Ports(**{name: port + by for name, port in asdict(self).items()})
        highest = max(asdict(shifted).values())
        # Linux hands out 32768-60999 to outgoing connections: a listener there can find
        # its port taken by a client socket when it restarts (seen with Kafka).
        if highest >= 32768:
            raise StackError(f"port offset {by} puts a port at {highest}: keep them below 32768")
        return shifted

    @classmethod
    def from_env(cls, env: Mapping[str, str], base: Ports | None = None) -> Ports:
        """The contract's defaults (or `base`), each overridable from the environment."""
        values = asdict(base or cls())
        for name in ("gateway", *SERVICES, "prometheus", "kafka_controller"):
            var = f"{name.upper()}_PORT"
            if var in env:
                values[name] = _port(env[var], var)
        if "KAFKA_BOOTSTRAP_SERVERS" in env:
            first = env["KAFKA_BOOTSTRAP_SERVERS"].split(",")[0]
            values["kafka"] = _port(first.rpartition(":")[2], "KAFKA_BOOTSTRAP_SERVERS")
            if "KAFKA_CONTROLLER_PORT" not in env:
                values["kafka_controller"] = values["kafka"] + 1
        if "DATABASE_URL" in env:
            port = urllib.parse.urlsplit(env["DATABASE_URL"]).port
            values["postgres"] = port or 5432
        return cls(**values)


def _port(text: str, var: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise StackError(f"{var}={text!r} is not a port number")
    return int(text)


def _is_local(host: str | None) -> bool:
    return host in LOCAL_HOSTS
