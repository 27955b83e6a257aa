"""What an SRE on call sees: the real Prometheus of the stack, and the services' logs.

Metrics are read back through Prometheus' HTTP API (it scrapes every 5 s), never from a
service directly, so a scrape that is broken, mislabelled or missing shows here. Logs are
read from the files the stack runner writes, one per process, after a scripted session
that handles every kind of personal data the system receives.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.captcha import ALPHABET
from tests.support.http import (
    Captcha,
    Voter,
    assert_problem,
    cast_vote,
    eventually,
    new_captcha,
    new_voter,
    open_poll,
    wait_for_decision,
)

pytestmark = pytest.mark.e2e

SERVICES = ("vote_ingest", "antifraud", "tally", "lottery")
CONSUMER_GROUPS = ("antifraud", "tally", "lottery")
# Three scrape intervals and the pipeline's own delay.
SCRAPED_WITHIN = 30.0
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
VOTER_ID = re.compile(r"\bv-[0-9a-f]{32}\b")
# The runner's own notes in a component's log ("--- <time> stack: starting ...").
RUNNER_LINE = "--- "


@pytest.fixture
def prometheus(prometheus_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=prometheus_url, timeout=10.0, trust_env=False) as http:
        yield http


def query(prometheus: httpx.Client, promql: str) -> list[dict[str, Any]]:
    """An instant query's vector: [{"metric": {...}, "value": [t, "v"]}, ...]."""
    response = prometheus.get("/api/v1/query", params={"query": promql})
    assert response.status_code == 200, f"{promql}: {response.status_code} {response.text}"
    body = response.json()
    assert body["status"] == "success", body
    assert body["data"]["resultType"] == "vector", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def scalar(prometheus: httpx.Client, promql: str) -> float:
    """The single value of an aggregating query; 0 when no series exists yet."""
    result = query(prometheus, promql)
    assert len(result) <= 1, f"{promql} is not a single series: {result}"
    return float(result[0]["value"][1]) if result else 0.0


def _accepted_votes(
    client: httpx.Client, poll: dict[str, Any], captcha_secret: str, count: int
) -> list[str]:
    vote_ids = []
    for index in range(count):
        choice = poll["options"][index % len(poll["options"])]
        voter = new_voter(client)
        response = cast_vote(client, poll["id"], voter, choice, new_captcha(client, captcha_secret))
        assert response.status_code == 202, response.text
        vote_ids.append(response.json()["vote_id"])
    for vote_id in vote_ids:
        assert wait_for_decision(client, vote_id)["status"] == "accepted"
    return vote_ids


# ------------------------------------------------------------------ Prometheus


def test_prometheus_scrapes_all_four_services(prometheus: httpx.Client) -> None:
    def all_up() -> bool:
        up = {s["metric"]["job"]: s["value"][1] for s in query(prometheus, "up")}
        return all(up.get(service) == "1" for service in SERVICES)

    eventually(all_up, within=SCRAPED_WITHIN, what="up == 1 for every service", interval=1.0)
    targets = prometheus.get("/api/v1/targets", params={"state": "active"}).json()
    health = {t["labels"]["job"]: t["health"] for t in targets["data"]["activeTargets"]}
    assert {service: health.get(service) for service in SERVICES} == dict.fromkeys(
        SERVICES, "up"
    ), health


def test_counted_votes_rise_in_prometheus(
    client: httpx.Client,
    prometheus: httpx.Client,
    service_urls: dict[str, str],
    captcha_secret: str,
) -> None:
    poll = open_poll(client)
    counted = f'sum(votes_counted_total{{poll="{poll["id"]}"}})'
    before = scalar(prometheus, counted)

    sent = len(_accepted_votes(client, poll, captcha_secret, count=4))

    eventually(
        lambda: scalar(prometheus, counted) >= before + sent,
        within=SCRAPED_WITHIN,
        what=f"{counted} to rise by {sent} from {before:.0f}",
        interval=1.0,
    )
    # Prometheus ends up agreeing with the service's own counter (nothing lost or doubled
    # between the two), and the series carry the poll's own options as `choice`.
    tally_metrics = httpx.get(f"{service_urls['tally']}/metrics", trust_env=False).text
    pattern = rf'^votes_counted_total\{{(?=[^}}]*poll="{re.escape(poll["id"])}")[^}}]*\}} (\S+)$'
    own = sum(float(m) for m in re.findall(pattern, tally_metrics, re.M))
    eventually(
        lambda: scalar(prometheus, counted) == own,
        within=SCRAPED_WITHIN,
        what=f"Prometheus' {counted} to equal tally's own {own:.0f}",
        interval=1.0,
    )
    by_choice = query(prometheus, f'votes_counted_total{{poll="{poll["id"]}"}}')
    assert {s["metric"]["choice"] for s in by_choice} <= set(poll["options"]), by_choice


def test_broker_level_figures_come_from_faststreams_middleware(
    client: httpx.Client, prometheus: httpx.Client, captcha_secret: str
) -> None:
    """Every consumer exports FastStream's own per-topic counters beside its metrics."""
    poll = open_poll(client)
    _accepted_votes(client, poll, captcha_secret, count=1)
    wanted = "faststream_received_messages_total"

    def every_consumer_reports() -> bool:
        series = query(prometheus, f"sum by (job) ({wanted})")
        return {s["metric"].get("job") for s in series} >= {"antifraud", "tally", "lottery"}

    eventually(
        every_consumer_reports, within=SCRAPED_WITHIN, what=f"{wanted} per consumer", interval=1.0
    )


# Contract section 9: what every SRE dashboard may rely on, with the labels it names.
CONTRACT_SERIES = {
    "votes_submitted_total": {"poll"},
    # An accepted vote has no reason: Prometheus stores a label with an empty value as
    # no label, so `reason` is asked of the rejected series only (below).
    "votes_decided_total": {"poll", "verdict"},
    "votes_counted_total": {"poll", "choice"},
    "vote_decision_delay_seconds_bucket": {"le"},
    "vote_count_delay_seconds_bucket": {"le"},
    "lottery_entries": {"poll"},
}


def test_every_contract_metric_is_in_prometheus_with_its_labels(
    client: httpx.Client, prometheus: httpx.Client, captcha_secret: str
) -> None:
    poll = open_poll(client)
    _accepted_votes(client, poll, captcha_secret, count=1)
    wrong = Captcha(new_captcha(client, captcha_secret).captcha_id, "wrong")
    refused = cast_vote(client, poll["id"], new_voter(client), poll["options"][0], wrong)
    assert wait_for_decision(client, refused.json()["vote_id"])["reason"] == "captcha_wrong"

    def labels_of(selector: str) -> list[set[str]]:
        return [set(s["metric"]) for s in query(prometheus, selector)]

    def scraped(selector: str) -> Callable[[], bool]:
        return lambda: bool(labels_of(selector))

    for name, wanted in CONTRACT_SERIES.items():
        eventually(scraped(name), within=SCRAPED_WITHIN, what=f"{name} in Prometheus", interval=1.0)
        missing = [labels for labels in labels_of(name) if not wanted <= labels]
        assert missing == [], f"{name} series without {wanted}: {missing}"
    polls = {s["metric"]["poll"] for s in query(prometheus, "lottery_entries")}
    assert poll["id"] in polls, polls
    eventually(
        scraped('votes_decided_total{reason="captcha_wrong"}'),
        within=SCRAPED_WITHIN,
        what="a rejection by its reason in Prometheus",
        interval=1.0,
    )
    rejected = labels_of('votes_decided_total{verdict="rejected"}')
    assert all("reason" in labels for labels in rejected), rejected


def test_consumer_lag_is_published_for_every_consumer_group(prometheus: httpx.Client) -> None:
    def groups() -> set[str]:
        series = query(prometheus, "kafka_consumer_lag_messages")
        return {s["metric"].get("group", "") for s in series}

    eventually(
        lambda: set(CONSUMER_GROUPS) <= groups(),
        within=SCRAPED_WITHIN,
        what=f"kafka_consumer_lag_messages for the groups {CONSUMER_GROUPS}",
        interval=1.0,
    )
    for series in query(prometheus, "kafka_consumer_lag_messages"):
        labels = series["metric"]
        assert {"group", "topic", "partition"} <= labels.keys(), labels
        assert labels["partition"].isdigit(), labels
        assert float(series["value"][1]) >= 0, series


def test_request_durations_are_labelled_by_route_template(
    client: httpx.Client, prometheus: httpx.Client, captcha_secret: str
) -> None:
    poll = open_poll(client)
    (vote_id,) = _accepted_votes(client, poll, captcha_secret, count=1)
    for path in (
        f"/api/v1/votes/{vote_id}",
        f"/api/v1/polls/{poll['id']}",
        f"/api/v1/polls/{poll['id']}/results",
        f"/api/v1/polls/{poll['id']}/lottery",
        "/api/v1/polls/no-such-poll-" + secrets.token_hex(4),
    ):
        client.get(path)
    wanted = {
        ("vote_ingest", "/api/v1/polls/{poll}/votes"),
        ("antifraud", "/api/v1/votes/{vote_id}"),
        ("tally", "/api/v1/polls/{poll}/results"),
        ("lottery", "/api/v1/polls/{poll}/lottery"),
    }
    promql = "count by (service, route) (http_request_duration_seconds_count)"

    def labelled() -> set[tuple[str, str]]:
        return {(s["metric"]["service"], s["metric"]["route"]) for s in query(prometheus, promql)}

    eventually(
        lambda: wanted <= labelled(),
        within=SCRAPED_WITHIN,
        what=f"route templates {sorted(wanted)}",
        interval=1.0,
    )
    for service, route in labelled():
        assert service in SERVICES, service
        raw = (
            UUID.search(route)
            or VOTER_ID.search(route)
            or poll["id"] in route
            or "no-such-poll" in route
        )
        assert not raw, f"{service} labels a request with a raw path: {route!r}"
        assert route == "unmatched" or route.startswith("/"), route


# ------------------------------------------------------------------ logs


# JSON lines end with "\n" only. str.splitlines() would also split on U+2028, U+0085 and
# the like, which JSON leaves unescaped and a logged URL path may carry.
def _log_text(log_dir: Path) -> dict[Path, str]:
    return {path: path.read_text(errors="replace") for path in sorted(log_dir.glob("*.log"))}


def _word(text: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![A-Za-z0-9_-]){re.escape(text)}(?![A-Za-z0-9_-])")


def _fresh_captcha(client: httpx.Client, captcha_secret: str, log_dir: Path) -> Captcha:
    """A captcha whose four-letter answer appears nowhere in the logs yet.

    Four letters can occur by chance ("HTTP" is a possible answer); with this choice any
    occurrence after the session is the answer leaking.
    """
    logs = "\n".join(_log_text(log_dir).values())
    for _ in range(50):
        captcha = new_captcha(client, captcha_secret)
        if not _word(captcha.answer).search(logs):
            return captcha
    raise AssertionError("no captcha with an answer absent from the logs in 50 tries")


def _random_name() -> str:
    # Common surname, then two characters from the CJK block: unique in any log.
    given = "".join(chr(0x4E00 + secrets.randbelow(0x9FA5 - 0x4E00)) for _ in range(2))
    return "李" + given


def _random_phone() -> str:
    return "1" + secrets.choice("3456789") + "".join(secrets.choice("0123456789") for _ in range(9))


def _phone_pattern(phone: str) -> re.Pattern[str]:
    """The number however it is written: 13912345678, 139 1234 5678, 139-1234-5678."""
    return re.compile(r"[ -]?".join(re.escape(d) for d in phone))


def _staff(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_logs_hold_no_personal_data_or_secrets_and_vote_lines_carry_the_vote_id(
    client: httpx.Client,
    stack_run_dir: Path,
    captcha_secret: str,
    staff_token: str,
) -> None:
    log_dir = stack_run_dir / "logs"
    poll = open_poll(client)
    name, phone = _random_name(), _random_phone()
    wrong_answer = "".join(secrets.choice(ALPHABET) for _ in range(16))
    wrong_staff = secrets.token_urlsafe(24)
    voter: Voter = new_voter(client)
    answers: list[str] = []

    # A vote, accepted; the same voter's second vote, refused (daily limit).
    vote_ids = []
    for _ in range(2):
        captcha = _fresh_captcha(client, captcha_secret, log_dir)
        answers.append(captcha.answer)
        response = cast_vote(client, poll["id"], voter, poll["options"][0], captcha)
        assert response.status_code == 202, response.text
        vote_ids.append(response.json()["vote_id"])
    # A wrong answer, as a bot would send: refused (captcha_wrong).
    captcha = new_captcha(client, captcha_secret)
    response = cast_vote(
        client, poll["id"], voter, poll["options"][0], Captcha(captcha.captcha_id, wrong_answer)
    )
    assert response.status_code == 202, response.text
    vote_ids.append(response.json()["vote_id"])
    verdicts = [wait_for_decision(client, vote_id)["reason"] for vote_id in vote_ids]
    assert verdicts == [None, "daily_limit", "captcha_wrong"], verdicts

    # The prize draw entry with a name and a phone number, and reading it back.
    entry_path = f"/api/v1/polls/{poll['id']}/lottery/entry"
    entry = client.post(entry_path, json={"name": name, "phone": phone}, headers=voter.auth)
    assert entry.status_code in (200, 201), entry.text
    assert phone not in entry.text and name not in entry.text
    assert client.get(entry_path, headers=voter.auth).status_code == 200
    # An entry with a number that is not a mainland mobile one.
    bad = client.post(
        entry_path, json={"name": name, "phone": "+1 415 555 0100"}, headers=voter.auth
    )
    assert_problem(bad, 422)

    # Staff: a draw while voting is open, one with a wrong token, one with none.
    draw_path = f"/api/v1/polls/{poll['id']}/lottery/draw"
    assert_problem(client.post(draw_path, headers=_staff(staff_token)), 409, "poll_open")
    assert_problem(client.post(draw_path, headers=_staff(wrong_staff)), 403)
    assert_problem(client.post(draw_path), 401)

    # A forged voter token: its signature part must not be logged either.
    forged = voter.token[:-8] + "AAAAAAAA"
    assert_problem(cast_vote(client, poll["id"], Voter(forged, ""), "x", captcha), 401)

    time.sleep(2.0)  # lines about the session reach the files (unbuffered, but async)
    logs = _log_text(log_dir)
    assert {f"{service}.log" for service in SERVICES} <= {p.name for p in logs}, sorted(logs)

    secrets_sent = {
        "the phone number": _phone_pattern(phone),
        "the name": re.compile(re.escape(name)),
        "the wrong captcha answer": re.compile(re.escape(wrong_answer), re.I),
        "the voter token": re.compile(re.escape(voter.token)),
        "the voter token's signature": re.compile(re.escape(voter.token.rsplit(".", 1)[1])),
        "the forged token": re.compile(re.escape(forged)),
        "the staff token": re.compile(re.escape(staff_token)),
        "the wrong staff token": re.compile(re.escape(wrong_staff)),
        **{f"captcha answer {answer}": _word(answer) for answer in answers},
    }
    leaks = [
        f"{path.name}:{number}: {what}: {line[:200]}"
        for path, text in logs.items()
        for number, line in enumerate(text.split("\n"), 1)
        for what, pattern in secrets_sent.items()
        if pattern.search(line)
    ]
    assert not leaks, "personal data or secrets in the logs:\n" + "\n".join(leaks)

    lines = _service_lines(logs)
    logged_ids = {entry.get("vote_id") for entry in lines}
    missing = [vote_id for vote_id in vote_ids if vote_id not in logged_ids]
    assert not missing, f"no log line carries the vote id of {missing}"
    unlabelled = [
        entry
        for entry in lines
        if re.search(r"\bvote\b", str(entry.get("msg", "")), re.I) and not entry.get("vote_id")
    ]
    assert not unlabelled, f"lines about a vote without its vote_id: {unlabelled[:5]}"


def _service_lines(logs: dict[Path, str]) -> list[dict[str, Any]]:
    """Every line the four services wrote, parsed; fails on any line that is not JSON."""
    parsed: list[dict[str, Any]] = []
    not_json: list[str] = []
    for path, text in logs.items():
        if path.stem not in SERVICES:
            continue
        for number, line in enumerate(text.split("\n"), 1):
            if not line.strip() or line.startswith(RUNNER_LINE):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                not_json.append(f"{path.name}:{number}: {line[:200]}")
                continue
            if not isinstance(entry, dict):
                not_json.append(f"{path.name}:{number}: {line[:200]}")
                continue
            assert {"ts", "level", "service", "msg"} <= entry.keys(), f"{path.name}: {entry}"
            assert entry["service"] == path.stem, f"{path.name}: {entry}"
            parsed.append(entry)
    assert not not_json, "service log lines that are not JSON:\n" + "\n".join(not_json[:20])
    return parsed
