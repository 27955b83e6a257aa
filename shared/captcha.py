"""Stateless captchas, as an image and as speech (contract section 5).

A captcha id is ``base64url(payload || tag)`` with a 17-byte payload and 10-byte tag
(36 characters, URL-safe, no padding):

    payload = version (1) | issued_at, ms since the Unix epoch (6) | ttl, s (2) | nonce (8)
    tag     = HMAC-SHA256(id_key, payload)[:10]

The answer is ``HMAC-SHA256(answer_key, id)`` read as an integer and written as four
characters of a 20-symbol alphabet without look-alikes: a blind guess wins once in
160,000 tries, and antifraud burns the id on the first wrong one. ``id_key`` and
``answer_key`` are derived from ``CAPTCHA_SECRET`` under different labels, so a tag
never reveals anything about an answer. Any replica can therefore issue, render and
check a captcha without shared state; the one stateful rule, "each id counts for at
most one vote", lives in antifraud, keyed by :func:`captcha_fingerprint`.

Rendering and throughput
------------------------
Images come from the ``captcha`` library (warped glyphs, noise dots and a curve). Every
vote needs a fresh image, so rendering, not the vote, bounds the voter's path. Measured
on the two-core development machine (4-character answers, 500 renders per row; ranges
span quiet and busy moments):

    160x60 stock, PNG level 6      2.1-3.4 ms   295-475/s per core   ~7.7 KB
    120x44, fonts 31-41, level 1   1.3-1.8 ms   555-790/s per core   ~5.8 KB   <- chosen
    CaptchaPool.take() from stock  5-13 us      75,000-185,000/s

The chosen image is about 1.7x cheaper than the stock one and a third smaller on the
wire, and stays legible when the page scales it up with CSS. Bursts are absorbed by
:class:`CaptchaPool`, which pre-renders ``(id, png)`` pairs in worker processes (so the
event loop never renders) and hands a request a ready pair. Sustained issuance still
costs one render per vote: a pool fills at about 600/s with one worker process and
900-1,100/s with two on this machine, so scale it with ``workers`` or ingest replicas
(issuance needs no shared state).

Speech
------
A voter who cannot read the image asks for the same answer spoken
(:meth:`CaptchaPool.speak`): the captcha library's own voices for letters and digits
(spoken in English), distorted and laid over noise of reversed voices, as a WAV file. It
is rendered on demand in the pool's worker process, about 0.2 s of CPU each (pure
Python), only for an id that is genuine and not expired; a spoken id is the same id,
single-use like any other. The edge limits how often one address asks and how many are
made at once. Speech is easier for a machine to transcribe than the picture is to read:
the price of letting voters who cannot see vote at all; the daily limit and the rate
limits, not the captcha, are what bound ballot stuffing.

Trade-off: pre-rendering never weakens the captcha. Each id is issued when its image is
drawn, carries its own expiry, and is handed out once, then dropped; a pair is handed
out only while at least 80% of its validity remains, so a voter always has four of the
five minutes. Answers stay unguessable (HMAC of a secret) and single-use (antifraud
rejects reuse). What it costs is CPU for stock that ages out unused while the site is
idle: about ``capacity`` renders a minute. A smaller image is slightly harder to read;
the alphabet leaves out look-alike characters to compensate.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import io
import logging
import multiprocessing
import re
import secrets
import struct
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Final, TypeVar

from captcha.audio import AudioCaptcha
from captcha.image import ImageCaptcha

__all__ = [
    "ALPHABET",
    "ANSWER_LENGTH",
    "DEFAULT_TTL",
    "CaptchaPool",
    "CaptchaVerdict",
    "RenderedCaptcha",
    "captcha_fingerprint",
    "data_url",
    "expected_answer",
    "expires_at",
    "issue",
    "judge",
    "render_captcha",
    "render_captchas",
    "render_png",
    "render_wav",
    "shape_ok",
    "speak_captcha",
]

DEFAULT_TTL: Final = timedelta(minutes=5)
MAX_TTL: Final = timedelta(hours=1)
# A captcha issued this far after the vote was received cannot come from an honest clock.
MAX_CLOCK_SKEW: Final = timedelta(minutes=5)
# Nothing was issued before the service existed; an earlier time is a broken issuer.
EARLIEST_ISSUE: Final = datetime(2020, 1, 1, tzinfo=UTC)

# Upper-case letters and digits minus the ones people confuse in a warped image:
# 0/O/Q/D, 1/I/L, 2/Z, 5/S, 8/B, 6/G, U/V.
ALPHABET: Final = "ACEFHJKMNPRTWXY34679"
ANSWER_LENGTH: Final = 4

_VERSION: Final = 1
_PAYLOAD: Final = struct.Struct(">B6sH8s")
_TAG_BYTES: Final = 10
_TOKEN_BYTES: Final = _PAYLOAD.size + _TAG_BYTES
_ID_CHARS: Final = _TOKEN_BYTES * 4 // 3
_ID_PATTERN: Final = re.compile(rf"[A-Za-z0-9_-]{{{_ID_CHARS}}}")
_ANSWER_PATTERN: Final = re.compile(rf"[{ALPHABET}]{{{ANSWER_LENGTH}}}", re.IGNORECASE)

_IMAGE_SIZE: Final = (120, 44)
_FONT_SIZES: Final = (31, 36, 41)
_PNG_COMPRESS_LEVEL: Final = 1
_RETRY_SECONDS: Final = 1.0
_CHUNK: Final = 8
_T = TypeVar("_T")

_log = logging.getLogger(__name__)


class CaptchaVerdict(StrEnum):
    OK = "ok"
    WRONG = "wrong"
    EXPIRED = "expired"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class _Token:
    issued_at: datetime
    ttl: timedelta

    @property
    def expires_at(self) -> datetime:
        return self.issued_at + self.ttl


@lru_cache(maxsize=8)
def _subkey(secret: str, label: str) -> bytes:
    return hmac.digest(secret.encode(), f"votes/captcha/{label}/v1".encode(), "sha256")


def _tag(secret: str, payload: bytes) -> bytes:
    return hmac.digest(_subkey(secret, "id"), payload, "sha256")[:_TAG_BYTES]


def _to_ms(instant: datetime) -> int:
    if instant.tzinfo is None:
        raise ValueError("issued_at must carry a UTC offset")
    millis = (instant - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    if not 0 <= millis < 1 << 48:
        raise ValueError("issued_at is out of range")
    return millis


def issue(secret: str, issued_at: datetime, ttl: timedelta = DEFAULT_TTL) -> str:
    """A fresh signed captcha id valid from ``issued_at`` for ``ttl`` (whole seconds)."""
    if not timedelta(seconds=1) <= ttl <= MAX_TTL:
        raise ValueError(f"ttl must be between 1 s and {MAX_TTL}")
    millis = _to_ms(issued_at).to_bytes(6, "big")
    payload = _PAYLOAD.pack(_VERSION, millis, int(ttl.total_seconds()), secrets.token_bytes(8))
    return base64.urlsafe_b64encode(payload + _tag(secret, payload)).decode("ascii")


def _decode(secret: str, captcha_id: str) -> _Token | None:
    """The token's times if the id is well formed and signed with ``secret``."""
    if not _ID_PATTERN.fullmatch(captcha_id):
        return None
    try:
        raw = base64.urlsafe_b64decode(captcha_id)
    except (binascii.Error, ValueError):
        return None
    payload, tag = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
    if not hmac.compare_digest(tag, _tag(secret, payload)):
        return None
    version, millis, ttl_seconds, _nonce = _PAYLOAD.unpack(payload)
    if version != _VERSION:
        return None
    issued_at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
        milliseconds=int.from_bytes(millis, "big")
    )
    return _Token(issued_at=issued_at, ttl=timedelta(seconds=ttl_seconds))


def expires_at(secret: str, captcha_id: str) -> datetime | None:
    """When the captcha stops being valid, or None if the id is not genuine."""
    token = _decode(secret, captcha_id)
    return token.expires_at if token else None


def expected_answer(secret: str, captcha_id: str) -> str:
    """The characters the image shows; a pure function of the secret and the id."""
    digest = hmac.digest(_subkey(secret, "answer"), captcha_id.encode(), "sha256")
    # A 256-bit integer reduced modulo len(ALPHABET)**4 has no measurable bias.
    number = int.from_bytes(digest, "big")
    chars = []
    for _ in range(ANSWER_LENGTH):
        number, index = divmod(number, len(ALPHABET))
        chars.append(ALPHABET[index])
    return "".join(chars)


def _normalise(answer: str) -> str:
    return answer.strip().upper()


def _absurd(token: _Token, received_at: datetime) -> bool:
    return (
        token.issued_at < EARLIEST_ISSUE
        or token.issued_at > received_at + MAX_CLOCK_SKEW
        or not timedelta(seconds=1) <= token.ttl <= MAX_TTL
    )


def _id_verdict(secret: str, captcha_id: str, at: datetime) -> CaptchaVerdict:
    """MALFORMED unless the id is genuine and sane, EXPIRED if it was no longer valid
    ``at``, OK otherwise: what an id alone says, before any answer."""
    token = _decode(secret, captcha_id)
    if token is None or _absurd(token, at):
        return CaptchaVerdict.MALFORMED
    if at >= token.expires_at:
        return CaptchaVerdict.EXPIRED
    return CaptchaVerdict.OK


def judge(secret: str, captcha_id: str, answer: str, received_at: datetime) -> CaptchaVerdict:
    """Judge an answer as of ``received_at``; reuse is checked by the caller's store."""
    verdict = _id_verdict(secret, captcha_id, received_at)
    if verdict is not CaptchaVerdict.OK:
        return verdict
    given = _normalise(answer).encode()
    if not hmac.compare_digest(given, expected_answer(secret, captcha_id).encode()):
        return CaptchaVerdict.WRONG
    return CaptchaVerdict.OK


def shape_ok(captcha_id: str, answer: str) -> bool:
    """The edge's cheap check: right lengths and characters, nothing cryptographic."""
    return bool(_ID_PATTERN.fullmatch(captcha_id)) and bool(
        _ANSWER_PATTERN.fullmatch(_normalise(answer))
    )


def captcha_fingerprint(captcha_id: str) -> str:
    """A short stable key for the table of used ids (ids are canonical: no padding bits)."""
    return hashlib.blake2b(captcha_id.encode(), digest_size=12).hexdigest()


_local = threading.local()


def _per_thread(name: str, make: Callable[[], _T]) -> _T:
    """This thread's instance of a library renderer, made on first use: the library
    caches what it loads (FreeType fonts, voices) on the instance, and each thread that
    renders keeps its own."""
    made: _T | None = getattr(_local, name, None)
    if made is None:
        made = make()
        setattr(_local, name, made)
    return made


def _renderer() -> ImageCaptcha:
    return _per_thread("renderer", lambda: ImageCaptcha(*_IMAGE_SIZE, font_sizes=_FONT_SIZES))


def render_png(answer: str) -> bytes:
    """A PNG image of the answer, drawn by the captcha library."""
    image = _renderer().generate_image(answer)
    out = io.BytesIO()
    image.save(out, format="png", compress_level=_PNG_COMPRESS_LEVEL)
    return out.getvalue()


def _speaker() -> AudioCaptcha:
    return _per_thread("speaker", AudioCaptcha)


def render_wav(answer: str) -> bytes:
    """The answer spoken character by character, as WAV, by the captcha library."""
    return bytes(_speaker().generate(answer))


def speak_captcha(secret: str, captcha_id: str) -> bytes:
    """The spoken answer of ``captcha_id`` (the caller has checked the id is genuine)."""
    return render_wav(expected_answer(secret, captcha_id))


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclass(frozen=True)
class RenderedCaptcha:
    captcha_id: str
    png: bytes
    issued_at: datetime
    expires_at: datetime


def render_captcha(
    secret: str, issued_at: datetime, ttl: timedelta = DEFAULT_TTL
) -> RenderedCaptcha:
    """Issue an id and draw its image."""
    # The id keeps milliseconds; report the expiry the id really carries.
    issued_at = issued_at.replace(microsecond=issued_at.microsecond // 1000 * 1000)
    captcha_id = issue(secret, issued_at, ttl)
    png = render_png(expected_answer(secret, captcha_id))
    return RenderedCaptcha(captcha_id, png, issued_at, issued_at + ttl)


def render_captchas(
    secret: str, issued_at: datetime, ttl: timedelta, count: int
) -> list[RenderedCaptcha]:
    """Several captchas in one call, so a worker process pays one round trip per chunk."""
    return [render_captcha(secret, issued_at, ttl) for _ in range(count)]


def _chunk_sizes(missing: int, slots: int) -> list[int]:
    sizes: list[int] = []
    while missing > 0 and len(sizes) < slots:
        sizes.append(min(missing, _CHUNK))
        missing -= sizes[-1]
    return sizes


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _default_executor(workers: int) -> Executor:
    # forkserver: children never inherit the event loop's threads or sockets.
    context = multiprocessing.get_context("forkserver")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


class CaptchaPool:
    """Pre-rendered captchas, refilled in the background, each handed out at most once.

    ``take`` pops the oldest pair that still has ``min_validity`` of its lifetime left
    and drops older ones; when the stock is empty it renders one on demand. Stock ages
    out after ``ttl * (1 - min_validity)`` (one minute by default), so an idle pool
    re-renders about ``capacity`` images a minute; size it to the expected burst.
    """

    def __init__(
        self,
        secret: str,
        *,
        capacity: int = 512,
        ttl: timedelta = DEFAULT_TTL,
        min_validity: float = 0.8,
        workers: int = 1,
        executor: Executor | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if capacity < 1 or workers < 1 or not 0.0 < min_validity <= 1.0:
            raise ValueError("capacity and workers must be >= 1, min_validity in (0, 1]")
        self._secret = secret
        self._capacity = capacity
        self._ttl = ttl
        self._min_left = ttl * min_validity
        self._workers = workers
        self._executor = executor
        self._owns_executor = executor is None
        self._clock = clock
        self._stock: deque[RenderedCaptcha] = deque()
        self._wanted = asyncio.Event()
        self._grew = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.rendered_on_demand = 0

    def __len__(self) -> int:
        return len(self._stock)

    async def start(self) -> None:
        if self._task is not None:
            return
        if self._executor is None:
            self._executor = _default_executor(self._workers)
        self._task = asyncio.create_task(self._refill_forever(), name="captcha-pool")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._owns_executor and self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        self._stock.clear()

    async def wait_stocked(self, at_least: int | None = None) -> None:
        """Wait until the stock holds ``at_least`` pairs (default: full), e.g. at start-up."""
        target = min(at_least or self._capacity, self._capacity)
        while len(self._stock) < target:
            self._grew.clear()
            await self._grew.wait()

    async def take(self) -> tuple[str, str, datetime]:
        """``(captcha_id, image data URL, expires_at)`` of a captcha nobody else got."""
        item = self._pop_fresh(self._clock())
        self._wanted.set()
        if item is None:
            self.rendered_on_demand += 1
            (item,) = await self._render(self._clock())
        return item.captcha_id, data_url(item.png), item.expires_at

    async def speak(self, captcha_id: str) -> tuple[CaptchaVerdict, bytes]:
        """``(OK, WAV)`` of a genuine, unexpired id's answer, spoken in a worker process;
        ``(MALFORMED, b"")`` or ``(EXPIRED, b"")`` otherwise, at no rendering cost."""
        verdict = _id_verdict(self._secret, captcha_id, self._clock())
        if verdict is not CaptchaVerdict.OK:
            return verdict, b""
        wav = await self._in_worker(speak_captcha, self._secret, captcha_id)
        return CaptchaVerdict.OK, wav

    def _fresh(self, item: RenderedCaptcha, now: datetime) -> bool:
        return item.expires_at - now >= self._min_left

    def _pop_fresh(self, now: datetime) -> RenderedCaptcha | None:
        while self._stock:
            item = self._stock.popleft()
            if self._fresh(item, now):
                return item
        return None

    def _drop_stale(self, now: datetime) -> None:
        while self._stock and not self._fresh(self._stock[0], now):
            self._stock.popleft()

    async def _render(self, issued_at: datetime, count: int = 1) -> list[RenderedCaptcha]:
        return await self._in_worker(render_captchas, self._secret, issued_at, self._ttl, count)

    async def _in_worker(self, fn: Callable[..., _T], *args: object) -> _T:
        """``fn(*args)`` in a worker. A worker process that died (killed for memory, a
        crash in the imaging library) breaks its whole process pool for good: the pool
        replaces it with a fresh one and retries once, or no captcha could be issued
        again until the service restarted."""
        loop = asyncio.get_running_loop()
        executor = self._executor
        try:
            return await loop.run_in_executor(executor, fn, *args)
        except BrokenExecutor:
            if not self._owns_executor or executor is None:
                raise
            if self._executor is executor:
                _log.warning("a captcha worker process died; starting new worker processes")
                self._executor = _default_executor(self._workers)
                executor.shutdown(wait=False, cancel_futures=True)
            return await loop.run_in_executor(self._executor, fn, *args)

    async def _refill_forever(self) -> None:
        # Re-check at least a few times per freshness period so aged stock is replaced.
        recheck = (self._ttl - self._min_left).total_seconds() / 4 or 1.0
        while True:
            self._drop_stale(self._clock())
            missing = self._capacity - len(self._stock)
            if missing <= 0:
                self._wanted.clear()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                # cancellation that races with the event, and stop() would hang.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(recheck):
                        await self._wanted.wait()
                continue
            # Small chunks amortise the round trip to a worker yet keep issued_at within
            # some tens of milliseconds of the moment the image exists.
            now = self._clock()
            sizes = _chunk_sizes(missing, self._workers * 2)
            chunks = [self._render(now, size) for size in sizes]
            try:
                for chunk in await asyncio.gather(*chunks):
                    self._stock.extend(chunk)
                self._grew.set()
            except Exception:
                # take() still renders on demand; back off rather than spin on a fault.
                _log.exception("captcha pre-rendering failed; retrying in %s s", _RETRY_SECONDS)
                await asyncio.sleep(_RETRY_SECONDS)
