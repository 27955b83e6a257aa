"""The baseline for the ingest benchmark: the same HTTP stack doing no work.

Starlette routed by the same router, served by :func:`shared.service.serve` (uvicorn with
uvloop and httptools, one process, the same logging), and started as its own process the
same way the ingest service is. Its one vote route reads the body and answers 202 with a
body of the ingest's shape, so the ratio of the two measures what ingest's own work costs
(token check, body validation, the broker's acknowledgement, metrics and middleware).

    python -m bench.bare_app --port 8091
"""

from __future__ import annotations

import argparse
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared.service import serve

SERVICE = "bare"


async def vote(request: Request) -> Response:
    await request.body()
    vote_id = str(uuid.uuid4())
    body = {"vote_id": vote_id, "status": "pending", "status_url": f"/api/v1/votes/{vote_id}"}
    return JSONResponse(body, status_code=202)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", healthz, methods=["GET"]),
            Route("/api/v1/polls/{poll}/votes", vote, methods=["POST"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    serve(create_app(), service=SERVICE, host=args.host, port=args.port, level="WARNING")


if __name__ == "__main__":
    main()
