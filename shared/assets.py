"""Static files of the pages, served under URLs that name their content.

A page refers to an asset as `/static/NAME?v=HASH`. Such a URL is cached for a year (a
phone on a slow carrier fetches the script and style once per release); any other URL,
an old page asking for an old version included, gets today's file, revalidated.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs, urlencode

from starlette.responses import Response
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

IMMUTABLE: Final = "public, max-age=31536000, immutable"
REVALIDATE: Final = "no-cache"


def asset_versions(directory: Path) -> dict[str, str]:
    """Content hash of every static file, by its path under the directory."""
    versions: dict[str, str] = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            versions[path.relative_to(directory).as_posix()] = digest
    return versions


def asset_url(prefix: str, versions: dict[str, str], name: str) -> str:
    """The URL a page uses for asset `name` served under `prefix`."""
    return f"{prefix}/{name}?{urlencode({'v': versions.get(name, '0')})}"


class VersionedStaticFiles(StaticFiles):
    """Static files with a Cache-Control that depends on whether the URL names the content."""

    def __init__(self, *, directory: Path, versions: dict[str, str]) -> None:
        super().__init__(directory=directory)
        self._root = directory
        self._versions = versions

    def file_response(
        self,
        full_path: PathLike,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        name = Path(full_path).relative_to(self._root).as_posix()
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        current = self._versions.get(name)
        fresh = current is not None and query.get("v") == [current]
        response.headers["Cache-Control"] = IMMUTABLE if fresh else REVALIDATE
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response
