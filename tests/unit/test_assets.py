"""Static files: text assets go out gzipped to a browser that takes it, compressed once."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from shared.assets import VersionedStaticFiles, accepts_gzip, asset_versions

SCRIPT = ("function vote() { return 'pending'; }\n" * 200).encode()
PICTURE = bytes(range(256)) * 8  # a binary file gzip cannot shrink and is not asked to


@pytest.fixture
async def raw(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client that neither asks for nor decodes an encoding unless a test says so."""
    (tmp_path / "app.js").write_bytes(SCRIPT)
    (tmp_path / "tiny.css").write_bytes(b"a{}")
    (tmp_path / "photo.png").write_bytes(PICTURE)
    files = VersionedStaticFiles(directory=tmp_path, versions=asset_versions(tmp_path))
    app = Starlette(routes=[Mount("/static", app=files)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://assets.test") as c:
        yield c


async def get(client: httpx.AsyncClient, path: str, **headers: str) -> httpx.Response:
    # httpx decodes gzip by itself; stream to read the bytes as they came.
    request = client.build_request("GET", path, headers={"accept-encoding": "identity", **headers})
    response = await client.send(request, stream=True)
    response._content = b"".join([part async for part in response.aiter_raw()])
    return response


async def test_a_script_goes_out_gzipped_to_a_browser_that_takes_gzip(
    raw: httpx.AsyncClient,
) -> None:
    response = await get(raw, "/static/app.js", **{"accept-encoding": "gzip, deflate, br"})

    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in response.headers["vary"].lower()
    assert int(response.headers["content-length"]) == len(response.content) < len(SCRIPT) / 10
    assert gzip.decompress(response.content) == SCRIPT
    assert "javascript" in response.headers["content-type"]
    assert response.headers["cache-control"] == "no-cache"


async def test_a_browser_that_does_not_take_gzip_gets_the_file_as_it_is(
    raw: httpx.AsyncClient,
) -> None:
    for accept in ("identity", "br", "gzip;q=0", ""):
        response = await get(raw, "/static/app.js", **{"accept-encoding": accept})

        assert "content-encoding" not in response.headers, accept
        assert response.content == SCRIPT
        assert "accept-encoding" in response.headers["vary"].lower(), "caches keep both apart"


async def test_a_range_request_gets_the_plain_file(raw: httpx.AsyncClient) -> None:
    response = await get(raw, "/static/app.js", **{"accept-encoding": "gzip", "range": "bytes=0-9"})

    assert "content-encoding" not in response.headers
    assert response.content == SCRIPT[:10]


async def test_each_variant_revalidates_with_its_own_etag(raw: httpx.AsyncClient) -> None:
    packed = await get(raw, "/static/app.js", **{"accept-encoding": "gzip"})
    plain = await get(raw, "/static/app.js")
    assert packed.headers["etag"] != plain.headers["etag"]

    again = await get(
        raw,
        "/static/app.js",
        **{"accept-encoding": "gzip", "if-none-match": packed.headers["etag"]},
    )
    assert again.status_code == 304
    assert again.headers["etag"] == packed.headers["etag"]
    assert again.content == b""
    mixed = await get(raw, "/static/app.js", **{"if-none-match": packed.headers["etag"]})
    assert (mixed.status_code, mixed.content) == (200, SCRIPT), "the plain file is another"
    plain_again = await get(raw, "/static/app.js", **{"if-none-match": plain.headers["etag"]})
    assert plain_again.status_code == 304


async def test_files_gzip_cannot_help_go_out_as_they_are(raw: httpx.AsyncClient) -> None:
    for name, body in (("tiny.css", b"a{}"), ("photo.png", PICTURE)):
        response = await get(raw, f"/static/{name}", **{"accept-encoding": "gzip"})

        assert "content-encoding" not in response.headers, name
        assert response.content == body


@pytest.mark.parametrize(
    ("header", "takes"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("gzip; q=0.5", True),
        ("*", True),
        ("*;q=0, gzip", True),
        ("deflate, *;q=0.1", True),
        ("gzip;q=0", False),
        ("gzip;q=0.0, *", False),
        ("br", False),
        ("identity", False),
        ("", False),
        ("gzip;q=junk", False),
    ],
)
def test_accept_encoding_is_read_as_browsers_send_it(header: str, takes: bool) -> None:
    assert accepts_gzip(header) is takes
