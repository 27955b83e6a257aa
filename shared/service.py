"""Running a service: logging, the uvicorn server, and the watcher behind /readyz."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import uvicorn
from starlette.applications import Starlette

from shared import logs
from shared.http import Health
from shared.settings import ServiceSettings, load_settings

if TYPE_CHECKING:
    import asyncpg
    from faststream.kafka import KafkaBroker

    from shared.drain import PipelineProbe
    from shared.producer import ReliableProducer

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[bool]]
S = TypeVar("S", bound=ServiceSettings)


async def watch_dependencies(
    health: Health, probes: Mapping[str, Probe], *, interval: float = 2.0
) -> None:
    """Probe each dependency forever; /readyz answers from the last results."""
    while True:
        for name, probe in probes.items():
            try:
                async with asyncio.timeout(interval):
                    up = await probe()
            except Exception:  # any failure of a probe means "not reachable"
                up = False
            health.set(name, up)
        await asyncio.sleep(interval)


# How long each part of a service gets to stop. Kubernetes kills a pod 30 s after asking
# it to stop; a client that never finishes stopping (aiokafka's consumer can wait on its
# heartbeat routine) must not use all of that and keep the others from closing cleanly.
STOP_TIMEOUT = 5.0


@contextlib.asynccontextmanager
async def background(
    coro: Awaitable[None], name: str, *, stop_within: float = STOP_TIMEOUT
) -> AsyncIterator[None]:
    """Run `coro` as a task while the body runs; cancel it on the way out and wait for
    it at most `stop_within` seconds: a task that ignores its cancellation is logged and
    left, not waited on forever. A failure of the task shows on the way out."""
    task = asyncio.ensure_future(coro)
    task.set_name(name)
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait({task}, timeout=stop_within)
        if not task.done():
            log.warning("background task %s did not stop within %g s; going on", name, stop_within)
        elif not task.cancelled():
            task.result()


@dataclass(frozen=True)
class Part:
    """Something a service stops on the way out; ``abort`` is the forceful fallback."""

    name: str
    stop: Callable[[], Awaitable[object]]
    abort: Callable[[], object] | None = None


@contextlib.asynccontextmanager
async def stopping(*parts: Part, per_part: float = STOP_TIMEOUT) -> AsyncIterator[None]:
    """On exit, however the body ends, stop each part in order, each within ``per_part``
    seconds: one that hangs or fails is logged (and aborted when it can be) and the
    others are still stopped. A stop still running at its bound is cancelled and left,
    not waited on: a client whose own cleanup swallows the cancel cannot hold the rest."""
    try:
        yield
    finally:
        for part in parts:
            stop = asyncio.ensure_future(part.stop())
            await asyncio.wait({stop}, timeout=per_part)
            if not stop.done():
                stop.cancel()
                log.warning("%s did not stop within %g s; going on without it", part.name, per_part)
                if part.abort is not None:
                    part.abort()
            elif stop.cancelled():
                log.error("stopping %s was cancelled; going on", part.name)
            elif (error := stop.exception()) is not None:
                log.error("stopping %s failed; going on", part.name, exc_info=error)


# The collector's first generation is scanned every 50,000 net allocations instead of
# 700: a vote allocates a few hundred short-lived objects, nearly all freed by reference
# counting, so the default scanned the same in-flight requests again and again (6-7% of
# ingest's CPU at 1,500 votes/s). Older generations keep their default ratios.
GC_THRESHOLDS = (50_000, 20, 10)


@contextlib.contextmanager
def tuned_gc() -> Iterator[None]:
    """Run with the services' collector settings: everything alive at start (modules,
    the app, the catalog) is frozen out of every later collection, which cut the
    full collections' pauses from up to 70 ms to about 30 ms in the edge under load;
    collections are rarer (GC_THRESHOLDS). The previous settings come back on exit."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def serve(app: Starlette, *, service: str, host: str, port: int, level: str) -> None:
    logs.configure(service, level)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        proxy_headers=False,  # client addresses are resolved by the app's trusted-proxy rule
    )
    with tuned_gc():
        uvicorn.Server(config).run()


def run_service(
    settings_type: type[S],
    create_app: Callable[[S], Starlette],
    *,
    service: str,
    port: Callable[[S], int],
) -> None:
    """A service's main: settings from the environment, the app, then serve until stopped."""
    settings = load_settings(settings_type)
    serve(
        build_or_exit(lambda: create_app(settings)),
        service=service,
        host=settings.http_host,
        port=port(settings),
        level=settings.log_level,
    )


def build_or_exit(factory: Callable[[], Starlette]) -> Starlette:
    """Build the app; a bad catalog or setting stops the process with a plain message."""
    from shared.errors import VotesError

    try:
        return factory()
    except (VotesError, ValueError) as exc:
        import sys

        sys.stderr.write(f"cannot start: {exc}\n")
        raise SystemExit(2) from None


@contextlib.asynccontextmanager
async def consuming(
    health: Health,
    broker: KafkaBroker,
    subscriber: object,
    group: str,
    pool: asyncpg.Pool,
    producer: ReliableProducer,
    *,
    probe: PipelineProbe | None = None,
    tasks: Mapping[str, Callable[[], Awaitable[None]]] | None = None,
) -> AsyncIterator[None]:
    """A consuming service's life around its body.

    Starts the producer its handlers publish with, its pipeline probe if it has one, then
    the consumer; watches Kafka and Postgres for /readyz, reports the group's lag and runs
    the service's background ``tasks`` while the body runs. On the way out, however
    start-up or the body ended, the consumer stops first (no batch is left half-handled
    with its producer gone), then the probe, the producer and the pool, each within
    STOP_TIMEOUT.
    """
    parts = [Part("the consumer", broker.stop)]
    if probe is not None:
        parts.append(Part("the pipeline probe", probe.stop))
    parts.append(Part("the producer", producer.stop))
    parts.append(Part("the database pool", pool.close, pool.terminate))
    from shared.kafka import report_lag_forever

    async with stopping(*parts):
        await producer.start()
        if probe is not None:
            await probe.start()
        await broker.start()
        probes = consumer_probes(broker, pool)
        async with contextlib.AsyncExitStack() as running:
            await running.enter_async_context(
                background(watch_dependencies(health, probes), "health")
            )
            await running.enter_async_context(
                background(report_lag_forever(subscriber, group), "consumer lag")
            )
            for name, task in (tasks or {}).items():
                await running.enter_async_context(background(task(), name))
            yield


def consumer_probes(broker: KafkaBroker, pool: asyncpg.Pool) -> dict[str, Probe]:
    """Readiness of a consuming service: its broker and its database."""

    async def kafka_up() -> bool:
        return bool(await broker.ping(timeout=2.0))

    async def postgres_up() -> bool:
        return bool(await pool.fetchval("SELECT 1") == 1)

    return {"kafka": kafka_up, "postgres": postgres_up}
