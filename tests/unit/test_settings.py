"""Settings from the environment: a bad or missing value stops the service at start with
a message naming the variable."""

from __future__ import annotations

import pytest

from services.antifraud.main import AntifraudSettings
from services.vote_ingest.main import IngestSettings
from shared.settings import load_settings

SECRETS = {"CAPTCHA_SECRET": "c" * 40, "VOTER_TOKEN_SECRET": "v" * 40}
DEPLOYED = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka:9093",
    "DATABASE_URL": "postgresql://antifraud@pooler:5432/votes",
    "POLLS_FILE": "/etc/votes/polls.yaml",
}


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VOTES_ENV", *DEPLOYED):
        monkeypatch.delenv(name, raising=False)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


def test_production_refuses_to_fall_back_on_local_defaults(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VOTES_ENV", "production")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", DEPLOYED["KAFKA_BOOTSTRAP_SERVERS"])
    with pytest.raises(SystemExit) as stopped:
        load_settings(AntifraudSettings)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "DATABASE_URL: must be set when VOTES_ENV=production" in err
    assert "POLLS_FILE: must be set when VOTES_ENV=production" in err
    assert "KAFKA_BOOTSTRAP_SERVERS" not in err


def test_production_takes_what_a_deployment_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOTES_ENV", "production")
    for name, value in DEPLOYED.items():
        monkeypatch.setenv(name, value)
    assert load_settings(AntifraudSettings).database_url.get_secret_value().endswith("/votes")
    # The edge has no database: only what it has must be set.
    assert load_settings(IngestSettings).votes_env == "production"


def test_development_keeps_the_local_defaults() -> None:
    settings = load_settings(AntifraudSettings)
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
