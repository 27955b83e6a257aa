"""A poll catalog that does not validate stops every service at start, with a message
naming the poll and the field (contract section 3), before it can reach a voter."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.catalog import parse_catalog
from shared.errors import CatalogInvalid
from tests.support.commands import isolated_service_env, run_module

GOOD = """
  - id: good-poll
    title: Fine
    options: [excellent, good]
    opens_at: 2021-12-20T09:00:00+08:00
    closes_at: 2022-01-08T09:00:00+08:00
"""
BROKEN = """
  - id: bad-poll
    title: Broken
    options: [excellent, great]
    opens_at: 2021-12-20T09:00:00
    closes_at: 2022-01-08T09:00:00+08:00
    timezone: Asia/Shangai
    lottery: {prizes: 0, prize: x}
"""


def refusal(text: str) -> str:
    with pytest.raises(CatalogInvalid) as refused:
        parse_catalog(text, "polls.yaml")
    return str(refused.value)


def test_each_mistake_is_named_by_poll_and_field() -> None:
    message = refusal("polls:" + GOOD + BROKEN)

    assert message.startswith("polls.yaml: ")
    for expected in (
        "poll bad-poll field options: Value error, unknown option(s) ['great']",
        "poll bad-poll field opens_at: Value error, must carry a UTC offset",
        "poll bad-poll field timezone: Value error, unknown time zone 'Asia/Shangai'",
        "poll bad-poll field lottery.prizes: Input should be greater than or equal to 1",
    ):
        assert expected in message
    assert "good-poll" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("polls: [", "polls.yaml: not valid YAML"),
        ("polls:" + GOOD + GOOD, "poll ids must be unique; repeated: ['good-poll']"),
        (
            "polls:" + GOOD.replace("2022-01-08", "2021-12-01"),
            "poll good-poll field (poll): Value error, closes_at must be after opens_at",
        ),
        ("polls:" + GOOD.replace("id: good-poll", "id: Good Poll"), "poll Good Poll field id:"),
        ("polls:" + GOOD + "    colour: red\n", "poll good-poll field colour: Extra inputs"),
        ("votes: []", "polls: Field required"),
        (
            "polls:" + GOOD + "    translations: {fr: {title: Bien}}\n",
            "poll good-poll field translations.fr: Extra inputs are not permitted",
        ),
        (
            "polls:" + GOOD + "    translations: {en: {title: ''}}\n",
            "poll good-poll field translations.en.title: String should have at least 1",
        ),
        (
            "polls:" + GOOD + "    translations: {en: {prize: A box}}\n",
            "translations.en.prize is given but the poll has no lottery",
        ),
    ],
)
def test_other_mistakes_are_named_too(text: str, expected: str) -> None:
    assert expected in refusal(text)


@pytest.mark.parametrize("service", ["vote_ingest", "antifraud", "tally", "lottery"])
def test_a_service_given_a_broken_catalog_stops_at_start_and_says_why(
    service: str, tmp_path: Path
) -> None:
    catalog = tmp_path / "polls.yaml"
    catalog.write_text("polls:" + GOOD + BROKEN, encoding="utf-8")
    env = isolated_service_env(POLLS_FILE=str(catalog))
    run = run_module(f"services.{service}.main", env=env)

    assert run.returncode == 2, run.stderr
    assert "cannot start:" in run.stderr
    assert "poll bad-poll field options" in run.stderr
