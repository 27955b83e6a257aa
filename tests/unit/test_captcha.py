from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
import re
import signal
import wave
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from captcha.audio import AudioCaptcha
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from shared import captcha
from shared.captcha import CaptchaPool, CaptchaVerdict

SECRET = "test-captcha-secret"
ISSUED = datetime(2021, 12, 25, 10, 0, 0, tzinfo=UTC)
TTL = timedelta(minutes=5)


def fresh_id(issued_at: datetime = ISSUED, secret: str = SECRET) -> str:
    return captcha.issue(secret, issued_at)


def test_round_trip_accepts_the_expected_answer() -> None:
    captcha_id = fresh_id()
    answer = captcha.expected_answer(SECRET, captcha_id)
    assert captcha.judge(SECRET, captcha_id, answer, ISSUED + timedelta(seconds=30)) == "ok"


def test_ids_are_short_url_safe_and_unique() -> None:
    ids = {fresh_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,59}", i) for i in ids)


def test_answers_compare_case_insensitively() -> None:
    captcha_id = fresh_id()
    answer = captcha.expected_answer(SECRET, captcha_id)
    at = ISSUED + timedelta(seconds=1)
    assert captcha.judge(SECRET, captcha_id, answer.lower(), at) is CaptchaVerdict.OK
    assert captcha.judge(SECRET, captcha_id, f" {answer.lower()} ", at) is CaptchaVerdict.OK


def test_wrong_answer_is_wrong() -> None:
    captcha_id = fresh_id()
    answer = captcha.expected_answer(SECRET, captcha_id)
    other = next(c for c in captcha.ALPHABET if c != answer[0]) + answer[1:]
    at = ISSUED + timedelta(seconds=1)
    assert captcha.judge(SECRET, captcha_id, other, at) is CaptchaVerdict.WRONG
    assert captcha.judge(SECRET, captcha_id, "", at) is CaptchaVerdict.WRONG
    assert captcha.judge(SECRET, captcha_id, "验证码", at) is CaptchaVerdict.WRONG


def test_expiry_boundary_is_exact() -> None:
    captcha_id = fresh_id()
    answer = captcha.expected_answer(SECRET, captcha_id)
    expiry = ISSUED + TTL
    assert captcha.expires_at(SECRET, captcha_id) == expiry
    before = expiry - timedelta(microseconds=1)
    assert captcha.judge(SECRET, captcha_id, answer, before) is CaptchaVerdict.OK
    assert captcha.judge(SECRET, captcha_id, answer, expiry) is CaptchaVerdict.EXPIRED
    later = expiry + timedelta(days=3)
    assert captcha.judge(SECRET, captcha_id, "nonsense", later) is CaptchaVerdict.EXPIRED


@given(
    issued_ms=st.integers(min_value=0, max_value=10**12),
    ttl_s=st.integers(min_value=1, max_value=3_600),
    received_us=st.integers(min_value=0, max_value=2 * 3_600 * 10**6),
)
@settings(max_examples=100, deadline=None)
def test_valid_exactly_until_expiry(issued_ms: int, ttl_s: int, received_us: int) -> None:
    issued = datetime(2021, 1, 1, tzinfo=UTC) + timedelta(milliseconds=issued_ms)
    ttl = timedelta(seconds=ttl_s)
    captcha_id = captcha.issue(SECRET, issued, ttl)
    received = issued + timedelta(microseconds=received_us)
    verdict = captcha.judge(
        SECRET, captcha_id, captcha.expected_answer(SECRET, captcha_id), received
    )
    assert verdict is (CaptchaVerdict.OK if received < issued + ttl else CaptchaVerdict.EXPIRED)


def test_expiry_is_kept_to_the_millisecond() -> None:
    issued = ISSUED + timedelta(milliseconds=123)
    captcha_id = fresh_id(issued)
    assert captcha.expires_at(SECRET, captcha_id) == issued + TTL


def _flip(text: str, index: int) -> str:
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


@given(index=st.integers(min_value=0, max_value=35))
@settings(max_examples=36)
def test_tampered_id_is_malformed(index: int) -> None:
    captcha_id = fresh_id()
    tampered = _flip(captcha_id, index)
    answer = captcha.expected_answer(SECRET, tampered)
    at = ISSUED + timedelta(seconds=1)
    assert captcha.judge(SECRET, tampered, answer, at) is CaptchaVerdict.MALFORMED


@pytest.mark.parametrize("bad", ["", "abc", "!" * 36, "A" * 35, "A" * 37, "A" * 36, "é" * 36])
def test_garbage_ids_are_malformed(bad: str) -> None:
    assert captcha.judge(SECRET, bad, "ACEF", ISSUED) is CaptchaVerdict.MALFORMED
    assert captcha.expires_at(SECRET, bad) is None


def test_id_from_another_secret_is_malformed() -> None:
    captcha_id = fresh_id(secret="someone-elses-secret")
    answer = captcha.expected_answer("someone-elses-secret", captcha_id)
    at = ISSUED + timedelta(seconds=1)
    assert captcha.judge(SECRET, captcha_id, answer, at) is CaptchaVerdict.MALFORMED


def test_issued_long_after_receipt_is_malformed() -> None:
    captcha_id = fresh_id(ISSUED + timedelta(hours=1))
    answer = captcha.expected_answer(SECRET, captcha_id)
    assert captcha.judge(SECRET, captcha_id, answer, ISSUED) is CaptchaVerdict.MALFORMED


def test_small_clock_skew_between_replicas_is_tolerated() -> None:
    captcha_id = fresh_id(ISSUED + timedelta(seconds=2))
    answer = captcha.expected_answer(SECRET, captcha_id)
    assert captcha.judge(SECRET, captcha_id, answer, ISSUED) is CaptchaVerdict.OK


def test_issue_refuses_naive_times_and_absurd_ttls() -> None:
    with pytest.raises(ValueError, match="UTC offset"):
        captcha.issue(SECRET, datetime(2022, 1, 1))
    with pytest.raises(ValueError, match="ttl"):
        captcha.issue(SECRET, ISSUED, timedelta(days=2))
    with pytest.raises(ValueError, match="range"):
        captcha.issue(SECRET, datetime(1960, 1, 1, tzinfo=UTC))


def test_answers_use_the_unambiguous_alphabet() -> None:
    assert not set("0O1IL") & set(captcha.ALPHABET)
    seen: set[str] = set()
    for _ in range(500):
        answer = captcha.expected_answer(SECRET, fresh_id())
        assert len(answer) == captcha.ANSWER_LENGTH
        assert set(answer) <= set(captcha.ALPHABET)
        seen |= set(answer)
    assert seen == set(captcha.ALPHABET)


def test_answer_depends_on_the_secret() -> None:
    captcha_ids = [fresh_id() for _ in range(20)]
    mine = [captcha.expected_answer(SECRET, i) for i in captcha_ids]
    theirs = [captcha.expected_answer("other", i) for i in captcha_ids]
    assert mine != theirs


def test_shape_check_is_lengths_and_characters_only() -> None:
    captcha_id = fresh_id()
    assert captcha.shape_ok(captcha_id, "acef")
    assert captcha.shape_ok(_flip(captcha_id, 30), "ACEF")
    assert not captcha.shape_ok(captcha_id, "AC0F")
    assert not captcha.shape_ok(captcha_id, "ACEFH")
    assert not captcha.shape_ok(captcha_id + "A", "ACEF")
    assert not captcha.shape_ok("../../etc/passwd", "ACEF")


def test_fingerprint_is_short_and_stable() -> None:
    captcha_id = fresh_id()
    assert captcha.captcha_fingerprint(captcha_id) == captcha.captcha_fingerprint(captcha_id)
    assert len(captcha.captcha_fingerprint(captcha_id)) <= 32
    assert captcha.captcha_fingerprint(captcha_id) != captcha.captcha_fingerprint(fresh_id())


def test_png_decodes_with_pillow() -> None:
    png = captcha.render_png("ACEF")
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        assert image.size == (120, 44)


def test_data_url_carries_the_png() -> None:
    png = captcha.render_png("HJKM")
    url = captcha.data_url(png)
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == png


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def threads() -> AsyncIterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as executor:
        yield executor


async def _filled(pool: CaptchaPool, size: int) -> None:
    async with asyncio.timeout(10):
        await pool.wait_stocked(size)


async def test_pool_hands_out_each_id_once(threads: ThreadPoolExecutor) -> None:
    clock = FakeClock(ISSUED)
    pool = CaptchaPool(SECRET, capacity=8, executor=threads, clock=clock)
    await pool.start()
    try:
        await _filled(pool, 8)
        taken = [await pool.take() for _ in range(30)]
    finally:
        await pool.stop()
    ids = [captcha_id for captcha_id, _, _ in taken]
    assert len(set(ids)) == len(ids)
    for captcha_id, image, expires in taken:
        assert image.startswith("data:image/png;base64,")
        assert expires == captcha.expires_at(SECRET, captcha_id)
        answer = captcha.expected_answer(SECRET, captcha_id)
        assert captcha.judge(SECRET, captcha_id, answer, ISSUED) is CaptchaVerdict.OK


async def test_pool_never_hands_out_an_almost_expired_id(threads: ThreadPoolExecutor) -> None:
    clock = FakeClock(ISSUED)
    pool = CaptchaPool(SECRET, capacity=4, executor=threads, clock=clock, min_validity=0.8)
    await pool.start()
    try:
        await _filled(pool, 4)
        clock.now = ISSUED + TTL * 0.2 + timedelta(microseconds=1)
        captcha_id, _, expires = await pool.take()
    finally:
        await pool.stop()
    assert expires - clock.now >= TTL * 0.8
    assert captcha.expires_at(SECRET, captcha_id) == expires
    assert pool.rendered_on_demand == 1


async def test_pool_renders_on_demand_when_empty(threads: ThreadPoolExecutor) -> None:
    pool = CaptchaPool(SECRET, capacity=2, executor=threads)
    captcha_id, image, expires = await pool.take()
    assert captcha.shape_ok(captcha_id, captcha.expected_answer(SECRET, captcha_id))
    assert image.startswith("data:image/png;base64,")
    assert expires > datetime.now(UTC) + TTL * 0.9


@contextlib.asynccontextmanager
async def running(pool: CaptchaPool, within: float = 30) -> AsyncIterator[CaptchaPool]:
    """A started pool with its own worker processes, stopped after the block, which must
    finish ``within`` seconds."""
    await pool.start()
    try:
        async with asyncio.timeout(within):
            yield pool
    finally:
        await pool.stop()


async def test_pool_renders_in_a_worker_process_by_default() -> None:
    async with running(CaptchaPool(SECRET, capacity=4)) as pool:
        await pool.wait_stocked()
        captcha_id, _, _ = await pool.take()
    assert pool.rendered_on_demand == 0
    assert captcha.expires_at(SECRET, captcha_id) is not None


def test_every_character_of_an_answer_has_a_voice() -> None:
    assert set(captcha.ALPHABET) <= set(AudioCaptcha().choices)


def test_speech_is_a_wave_file_of_some_seconds() -> None:
    wav = captcha.render_wav("ACE3")
    with wave.open(io.BytesIO(wav)) as sound:
        assert (sound.getnchannels(), sound.getframerate()) == (1, 8000)
        seconds = sound.getnframes() / sound.getframerate()
    assert 3 < seconds < 30, seconds


class Speaker:
    """Stands in for the audio renderer: records what it was asked to say."""

    def __init__(self) -> None:
        self.said: list[str] = []

    def __call__(self, answer: str) -> bytes:
        self.said.append(answer)
        return b"RIFF"


def test_speech_says_the_answer_of_the_id(monkeypatch: pytest.MonkeyPatch) -> None:
    speaker = Speaker()
    monkeypatch.setattr(captcha, "render_wav", speaker)
    captcha_id = fresh_id()
    assert captcha.speak_captcha(SECRET, captcha_id) == b"RIFF"
    assert speaker.said == [captcha.expected_answer(SECRET, captcha_id)]


async def test_pool_speaks_only_a_genuine_unexpired_id(
    threads: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    speaker = Speaker()
    monkeypatch.setattr(captcha, "render_wav", speaker)
    clock = FakeClock(ISSUED + timedelta(minutes=1))
    pool = CaptchaPool(SECRET, executor=threads, clock=clock)
    genuine = fresh_id()
    assert await pool.speak(genuine) == (CaptchaVerdict.OK, b"RIFF")
    assert await pool.speak(fresh_id(secret="another-secret")) == (CaptchaVerdict.MALFORMED, b"")
    assert await pool.speak("not-a-captcha-id") == (CaptchaVerdict.MALFORMED, b"")
    clock.now = ISSUED + TTL
    assert await pool.speak(genuine) == (CaptchaVerdict.EXPIRED, b"")
    assert speaker.said == [captcha.expected_answer(SECRET, genuine)], "only a genuine id is said"


async def test_pool_speaks_in_a_worker_process_once_started() -> None:
    async with running(CaptchaPool(SECRET, capacity=1)) as pool:
        verdict, wav = await pool.speak(captcha.issue(SECRET, datetime.now(UTC)))
    assert verdict is CaptchaVerdict.OK
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"


async def test_a_worker_process_that_dies_is_replaced_and_issuance_goes_on() -> None:
    async with running(CaptchaPool(SECRET, capacity=4)) as pool:
        await pool.wait_stocked()
        executor = pool._executor
        assert isinstance(executor, ProcessPoolExecutor)
        pids = [process.pid for process in executor._processes.values()]
        assert pids, "the stock was rendered by worker processes"
        for pid in pids:
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
        # Past the stock, every captcha is rendered by a worker.
        taken = [await pool.take() for _ in range(12)]
        verdict, wav = await pool.speak(captcha.issue(SECRET, datetime.now(UTC)))
        await pool.wait_stocked()
    assert len({captcha_id for captcha_id, _, _ in taken}) == 12
    assert verdict is CaptchaVerdict.OK and wav[:4] == b"RIFF"
