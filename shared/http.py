"""The HTTP surface every service shares: problem+json errors, request metrics, and the
health, readiness and metrics endpoints.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import ApiError, BadRequest
from shared.metric_names import HTTP_DURATION_BUCKETS

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request duration by route template",
    ["service", "route", "method", "status"],
    buckets=HTTP_DURATION_BUCKETS,
)
BUILD_INFO = Gauge("build_info", "Build of the running service", ["service", "version"])
DEPENDENCY_UP = Gauge(
    "dependency_up", "1 when the service reaches the dependency", ["service", "dependency"]
)

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class JsonResponse(JSONResponse):
    """Compact UTF-8 JSON, rendered by msgspec (a fraction of the stdlib's cost per answer)."""

    def render(self, content: Any) -> bytes:
        return _ENCODER.encode(content)


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> JsonResponse:
    body = {"type": f"/problems/{code}", "title": title, "status": status, "detail": detail}
    body["code"] = code
    body.update(extra)
    headers = {"Cache-Control": "no-store"}
    if status == 503:
        headers["Retry-After"] = "1"
    return JsonResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ApiError):
        return await _unexpected(request, exc)
    return problem(exc.status, exc.instance_code, exc.title, exc.detail, **exc.extra)


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):
        return await _unexpected(request, exc)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    response = problem(exc.status_code, code, code.replace("_", " "), str(exc.detail))
    response.headers.update(exc.headers or {})  # Allow, on a 405
    return response


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "internal_error", "Internal error", "an unexpected error occurred")


class Health:
    """The service's dependencies, watched and exported as `dependency_up`. /readyz
    answers 503 while a dependency its requests cannot do without (`needed`, by default
    all) is unreachable; one that only its consumer uses, or that its requests answer
    the lack of themselves, keeps the service in the load balancer.
    """

    def __init__(
        self, service: str, dependencies: Sequence[str], *, needed: Sequence[str] | None = None
    ) -> None:
        self.service = service
        self.state = dict.fromkeys(dependencies, False)
        self.needed = tuple(dependencies if needed is None else needed)
        for name in dependencies:
            DEPENDENCY_UP.labels(service, name).set(0)

    def set(self, dependency: str, up: bool) -> None:
        if self.state.get(dependency) != up:
            log.info("dependency %s is %s", dependency, "up" if up else "down")
        self.state[dependency] = up
        DEPENDENCY_UP.labels(self.service, dependency).set(1 if up else 0)

    @property
    def ready(self) -> bool:
        return all(self.state[name] for name in self.needed)


class RequestMetrics:
    """Times every request by its route template (bounded labels, never raw paths)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        # Looking a labelled child up costs more than observing it; the label sets are
        # bounded (templates x methods x statuses), so each one's child is kept.
        self._timers: dict[tuple[str, str, int], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self._timer(template, scope["method"], status).observe(time.perf_counter() - started)

    def _timer(self, template: str, method: str, status: int) -> Histogram:
        key = (template, method, status)
        timer = self._timers.get(key)
        if timer is None:
            timer = self._timers[key] = HTTP_DURATION.labels(
                self.service, template, method, str(status)
            )
        return timer


class BodyLimit:
    """Refuses bodies over `limit` bytes with 413 before the handler reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request bodies are limited to {self.limit} bytes"
        response = problem(413, "payload_too_large", "The request body is too large", detail)
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


def health_routes(health: Health) -> list[BaseRoute]:
    async def healthz(request: Request) -> Response:
        return JsonResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        body = {"ready": health.ready, "dependencies": health.state}
        return JsonResponse(body, status_code=200 if health.ready else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


def build_app(
    service: str,
    version: str,
    routes: Sequence[BaseRoute],
    health: Health,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]],
    *,
    body_limit: int = 4096,
) -> Starlette:
    BUILD_INFO.labels(service, version).set(1)
    handlers: Mapping[Any, Any] = {
        ApiError: _api_error,
        HTTPException: _http_error,
        Exception: _unexpected,
    }
    return Starlette(
        routes=[*health_routes(health), *routes],
        middleware=[
            Middleware(RequestMetrics, service=service),
            Middleware(BodyLimit, limit=body_limit),
        ],
        exception_handlers=dict(handlers),
        lifespan=lifespan,
    )


async def read_json(request: Request) -> Any:
    """The request body as JSON, or a 422 problem saying why not."""
    body = await request.body()
    try:
        return _DECODER.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from exc
    except RecursionError as exc:
        raise BadRequest("the body nests too deeply", code="invalid_json") from exc
