"""Settings shared by every service; each service extends `ServiceSettings`.

Every value comes from the environment (contract section 2). A bad or missing value stops
the process at start with a message naming the variable. Secrets have no defaults: the
local runner generates them into `.run/secrets.env`, Kubernetes mounts them from Secrets.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal, NoReturn, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

DEMO_CATALOG = Path(__file__).parent / "demo_polls.yaml"

S = TypeVar("S", bound="ServiceSettings")


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True, case_sensitive=False)

    # production: no setting may fall back to a local default (LOCAL_DEFAULTS).
    votes_env: Literal["development", "production"] = "development"
    http_host: str = "127.0.0.1"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic_partitions: int = Field(default=4, ge=1, le=1024)
    kafka_replication_factor: int = Field(default=1, ge=1, le=7)
    polls_file: Path = DEMO_CATALOG
    # Services whose Kafka user may not create topics (ACLs in Kubernetes) set this off;
    # the topics are then declared by the platform (Strimzi KafkaTopic objects).
    kafka_create_topics: bool = True
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_ssl_cafile: Path | None = None
    build_version: str = "dev"


class DatabaseSettings(ServiceSettings):
    database_url: SecretStr = SecretStr("postgresql://127.0.0.1:5433/votes")
    db_pool_max: int = Field(default=10, ge=1, le=200)
    # Behind a transaction pooler (PgBouncer in Kubernetes), with one login role per
    # service: the session settings become the role's defaults (shared.pg.store_on_role)
    # instead of startup parameters, which the pooler refuses.
    db_settings_on_role: bool = False


# Settings whose defaults are a developer's machine (a local broker and database, the
# demo catalog): with VOTES_ENV=production each must be set, so that a deployment that
# forgot one stops at start instead of serving the demo polls or waiting on 127.0.0.1.
LOCAL_DEFAULTS = ("kafka_bootstrap_servers", "database_url", "polls_file")


def load_settings(cls: type[S]) -> S:
    """Build settings from the environment or exit naming every bad variable."""
    try:
        settings = cls()
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper()
            lines.append(f"  {name}: {error['msg']}")
        _refuse(lines)
    if settings.votes_env == "production":
        unset = [
            name
            for name in LOCAL_DEFAULTS
            if name in type(settings).model_fields and name not in settings.model_fields_set
        ]
        if unset:
            _refuse([f"  {name.upper()}: must be set when VOTES_ENV=production" for name in unset])
    return settings


def _refuse(lines: list[str]) -> NoReturn:
    sys.stderr.write("invalid settings:\n" + "\n".join(lines) + "\n")
    raise SystemExit(2)
