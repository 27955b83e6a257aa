"""The voting page's QR code, for the article or poster that brings voters to a poll.

Voters reach a poll by scanning a code on their phones (the campaign this replaces was
shared as a QR code in a WeChat article), so staff need the code of the page's public
address. It is a PNG, the format article editors and print shops take; segno encodes it.
"""

from __future__ import annotations

import functools
import io
from typing import Final

import segno

# 12 px per module: a version-3 code (a typical poll address) is 444 px square with its
# quiet zone, sharp enough to print a few centimetres wide. Level M survives the usual
# smudges and a logo-free poster.
SCALE: Final = 12
QUIET_ZONE: Final = 4


@functools.lru_cache(maxsize=64)
def qr_png(url: str) -> bytes:
    """The PNG of a QR code carrying the URL (a few milliseconds; kept per address)."""
    buffer = io.BytesIO()
    segno.make_qr(url, error="m").save(buffer, kind="png", scale=SCALE, border=QUIET_ZONE)
    return buffer.getvalue()
