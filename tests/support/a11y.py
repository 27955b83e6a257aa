"""Accessibility checks with axe-core, the engine behind browsers' own audit tools.

axe-playwright-python carries a pinned copy of axe-core, injected into the page under
test: nothing is fetched at test time. Every rule axe runs by default counts (WCAG 2.x
A and AA, and its best practices); a page must have no violation at all.
"""

from __future__ import annotations

from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Page

_AXE = Axe()


async def violations(page: Page) -> list[str]:
    """Each rule the page breaks, with its impact and the elements that break it."""
    results = await _AXE.run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in results.response["violations"]
    ]


async def assert_accessible(page: Page, what: str) -> None:
    found = await violations(page)
    assert found == [], f"{what}: {found}"
