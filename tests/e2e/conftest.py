"""Browser tests drive Debian's Chromium through Playwright; it never downloads one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from shared.catalog import load_catalog

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


@pytest.fixture(scope="session")
def closed_poll(polls_file: Path) -> str:
    """The stack's closed poll with a prize draw: the 2021 campaign of the demo catalog."""
    poll = load_catalog(polls_file).get("futian-culture-2021")
    assert poll is not None and poll.lottery is not None, f"{polls_file}: no closed draw"
    return poll.id
