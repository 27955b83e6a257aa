"""Static files of the pages, served under URLs that name their content.

A page refers to an asset as `/static/NAME?v=HASH`. Such a URL is cached for a year (a
phone on a slow carrier fetches the script and style once per release); any other URL,
an old page asking for an old version included, gets today's file, revalidated.

Text assets (script, style, SVG) are compressed once, when the service starts, and sent
gzipped to every browser that accepts it: a first visit on a phone downloads about a
third of the bytes, and no request spends CPU compressing. A rendered page kept for
reuse (:class:`HtmlPage`) is compressed once too, on its first request that takes gzip.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs, urlencode

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.staticfiles import NotModifiedResponse, PathLike, StaticFiles
from starlette.types import Scope

IMMUTABLE: Final = "public, max-age=31536000, immutable"
REVALIDATE: Final = "no-cache"
COMPRESSIBLE: Final = frozenset({".js", ".css", ".svg", ".json", ".txt", ".html"})


def asset_versions(directory: Path) -> dict[str, str]:
    """Content hash of every static file, by its path under the directory."""
    versions: dict[str, str] = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            versions[path.relative_to(directory).as_posix()] = digest
    return versions


def _gzip(data: bytes) -> bytes:
    # Made once per file or page and kept, so the smallest output is worth its time.
    return gzip.compress(data, compresslevel=9, mtime=0)


def compressed_assets(directory: Path, names: Iterable[str]) -> dict[str, bytes]:
    """The gzip of each named text file under the directory that gzip makes smaller."""
    packed: dict[str, bytes] = {}
    for name in names:
        if Path(name).suffix in COMPRESSIBLE:
            raw = (directory / name).read_bytes()
            small = _gzip(raw)
            if len(small) < len(raw):
                packed[name] = small
    return packed


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header takes gzip: named (or `*`) and not with q=0."""
    quality: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        value = params.strip().lower()
        try:
            q = float(value.removeprefix("q=")) if value.startswith("q=") else 1.0
        except ValueError:
            q = 0.0
        quality[coding.strip().lower()] = q
    for coding in ("gzip", "x-gzip", "*"):
        if coding in quality:
            return quality[coding] > 0
    return False


@dataclass
class HtmlPage:
    """A rendered page served more than once, and its gzip once a request takes it."""

    body: bytes
    packed: bytes | None = None

    def response(self, request: Headers, headers: Mapping[str, str], status: int = 200) -> Response:
        """The page as this request takes it; `headers` are the page's own."""
        vary = ", ".join(v for v in (headers.get("Vary"), "Accept-Encoding") if v)
        if not accepts_gzip(request.get("accept-encoding", "")):
            return Response(self.body, status, {**headers, "Vary": vary}, "text/html")
        if self.packed is None:
            self.packed = _gzip(self.body)
        gzipped = {**headers, "Vary": vary, "Content-Encoding": "gzip"}
        return Response(self.packed, status, gzipped, "text/html")


def asset_url(prefix: str, versions: dict[str, str], name: str) -> str:
    """The URL a page uses for asset `name` served under `prefix`."""
    return f"{prefix}/{name}?{urlencode({'v': versions.get(name, '0')})}"


class VersionedStaticFiles(StaticFiles):
    """Static files with a Cache-Control that depends on whether the URL names the content."""

    def __init__(self, *, directory: Path, versions: dict[str, str]) -> None:
        super().__init__(directory=directory)
        self._root = directory
        self._versions = versions
        self._packed = compressed_assets(directory, versions)
        # Every file, found once: a request for one skips the thread the library would
        # look it up in (about 40% of what serving one gzipped cost, measured on the edge).
        self._files = {
            name: (str(directory / name), (directory / name).stat()) for name in versions
        }

    async def get_response(self, path: str, scope: Scope) -> Response:
        found = self._files.get(Path(path).as_posix())
        if found is None or scope["method"] not in ("GET", "HEAD"):
            return await super().get_response(path, scope)
        return self.file_response(*found, scope)

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
        packed = self._packed.get(name)
        if packed is None:
            return response
        response.headers["Vary"] = "Accept-Encoding"
        request = Headers(scope=scope)
        if (
            response.status_code != 200
            or "range" in request
            or not accepts_gzip(request.get("accept-encoding", ""))
        ):
            return response
        return _gzipped(response, packed, request)


def _gzipped(plain: Response, packed: bytes, request: Headers) -> Response:
    """The gzip variant of a file's response: its own ETag, so caches keep both apart."""
    headers = {k: v for k, v in plain.headers.items() if k not in ("content-length", "etag")}
    etag = plain.headers.get("etag")
    if etag is not None:
        headers["etag"] = etag[:-1] + '-gzip"' if etag.endswith('"') else etag + "-gzip"
        asked = request.get("if-none-match", "").split(",")
        if headers["etag"] in [tag.strip().removeprefix("W/") for tag in asked]:
            return NotModifiedResponse(Headers(headers))
    headers["content-encoding"] = "gzip"
    return Response(packed, status_code=200, headers=headers)
