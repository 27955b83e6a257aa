"""The stack's command line when no stack is there to answer."""

from __future__ import annotations

import pytest

from scripts.stack import main


def test_status_without_a_running_stack_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--name", "no-such-stack-here"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("stack: no stack is running")
    assert "no-such-stack-here" in out
