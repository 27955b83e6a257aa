"""The stack's command line: its answer when no stack is there, and its banner."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scripts.stack import Ports, Stack, main
from scripts.stack.cli import _banner
from scripts.stack.console import Console


def test_status_without_a_running_stack_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--name", "no-such-stack-here"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("stack: no stack is running")
    assert "no-such-stack-here" in out


def _banner_for(run_dir: Path, catalog: str, env: dict[str, str]) -> str:
    (run_dir / "polls.yaml").write_text(catalog)
    stack = Stack(run_dir, Ports(), env, console=Console(run_dir / "logs", follow=False))
    return _banner(stack)


def _poll(poll_id: str, opens: datetime, closes: datetime) -> str:
    return (
        f"  - id: {poll_id}\n    title: T\n    options: [good, poor]\n"
        f"    opens_at: {opens.isoformat()}\n    closes_at: {closes.isoformat()}\n"
    )


def test_banner_links_each_open_poll(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    catalog = "polls:\n" + _poll("live", now - timedelta(days=1), now + timedelta(days=1))
    banner = _banner_for(tmp_path, catalog, {})
    assert "Poll page       http://127.0.0.1:8080/polls/live" in banner
    assert "No poll is open" not in banner


def test_banner_says_when_the_next_poll_opens(tmp_path: Path) -> None:
    opens = datetime(2099, 3, 1, 1, 0, tzinfo=UTC)
    catalog = "polls:\n" + _poll("later", opens, opens + timedelta(days=1))
    banner = _banner_for(tmp_path, catalog, {})
    assert "No poll is open yet: later opens at 2099-03-01 09:00 CST." in banner


def test_banner_tells_how_to_renew_a_closed_demo_poll(tmp_path: Path) -> None:
    past = datetime(2022, 1, 8, 1, 0, tzinfo=UTC)
    catalog = "polls:\n" + _poll("over", past - timedelta(days=14), past)
    banner = _banner_for(tmp_path, catalog, {})
    assert "the demo poll's two weeks are over" in banner
    assert "`make clean`" in banner
    own = _banner_for(tmp_path, catalog, {"POLLS_FILE": str(tmp_path / "polls.yaml")})
    assert f"every poll of {tmp_path / 'polls.yaml'} has closed" in own
