"""Lottery's public routes: a voter's entry, the poll's draw state and its audit record.

Everything answered here is masked; the seed appears only in the audit record, which
exists only once the draw has been made. The codes the lottery answers with:

    404 unknown_poll, no_lottery, no_entry, not_drawn
    403 poll_not_open, poll_closed (entries); forbidden (a wrong staff token)
    401 unauthorized, invalid_token, token_expired
    422 invalid_phone, invalid_name, invalid_body, invalid_json; confirm_mismatch (erasure)
    409 poll_open, poll_settling, pipeline_not_drained (with `left`) - the draw;
        not_drawn - the erasure of entrants' details
    410 details_erased - the winners' export once details are erased
    503 broker_unavailable (the draw cannot read the pipeline's progress)
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from services.lottery.bodies import parse_entry
from services.lottery.handlers import Lottery
from shared.auth import VoterTokens, voter_from_header
from shared.http import JsonResponse, read_json

NO_STORE = {"Cache-Control": "no-store"}
BASE = "/api/v1/polls/{poll}/lottery"


def routes(lottery: Lottery, tokens: VoterTokens) -> list[BaseRoute]:
    async def register(request: Request) -> Response:
        poll = lottery.poll(request.path_params["poll"])
        voter_id = voter_from_header(tokens, request.headers.get("authorization"))
        form = parse_entry(await read_json(request))
        done = await lottery.register(poll, voter_id, form)
        body = {"entry_id": done.entry_id, "phone_masked": done.phone_masked}
        return JsonResponse(body, status_code=201 if done.created else 200, headers=NO_STORE)

    async def my_entry(request: Request) -> Response:
        poll = lottery.poll(request.path_params["poll"])
        voter_id = voter_from_header(tokens, request.headers.get("authorization"))
        return JsonResponse(await lottery.entry_of(poll, voter_id), headers=NO_STORE)

    async def status(request: Request) -> Response:
        poll = lottery.poll(request.path_params["poll"])
        view = await lottery.public_view(poll)
        return JsonResponse(view, headers={"Cache-Control": "no-cache"})

    async def audit(request: Request) -> Response:
        poll = lottery.poll(request.path_params["poll"])
        record = await lottery.audit_record(poll)
        # The stored text as first published, byte for byte, so every copy hashes alike.
        return Response(
            record,
            media_type="application/json",
            headers={
                "Cache-Control": "public, max-age=60",
                "Content-Disposition": f'inline; filename="{poll.id}-draw-audit.json"',
            },
        )

    return [
        Route(BASE, status, methods=["GET"]),
        Route(BASE + "/entry", register, methods=["POST"]),
        Route(BASE + "/entry", my_entry, methods=["GET"]),
        Route(BASE + "/audit", audit, methods=["GET"]),
    ]
