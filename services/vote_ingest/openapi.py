"""The public API as an OpenAPI 3.1 document, served by the edge at /openapi.json.

It describes every call the gateway routes (contract section 4), whichever service
answers it, so clients and the schema-driven fuzz tests see one API.
"""

from __future__ import annotations

from typing import Any

from services.vote_ingest.rules import VoteBody

POLL = {"name": "poll", "in": "path", "required": True, "schema": {"type": "string"}}
BEARER: list[dict[str, list[str]]] = [{"voterToken": []}]
STAFF: list[dict[str, list[str]]] = [{"staffToken": []}]
TIME = {"type": "string", "format": "date-time"}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _schemas() -> dict[str, Any]:
    vote_body = VoteBody.model_json_schema()
    vote_body["additionalProperties"] = False
    return {
        "Problem": {
            "type": "object",
            "required": ["type", "title", "status", "detail", "code"],
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "code": {"type": "string"},
            },
        },
        "Session": {
            "type": "object",
            "required": ["voter_token", "voter_id", "expires_at"],
            "properties": {
                "voter_token": {"type": "string"},
                "voter_id": {"type": "string"},
                "expires_at": TIME,
            },
        },
        "Captcha": {
            "type": "object",
            "required": ["captcha_id", "image", "expires_at"],
            "properties": {
                "captcha_id": {"type": "string"},
                "image": {"type": "string", "description": "PNG data URL"},
                "expires_at": TIME,
            },
        },
        "Poll": {
            "type": "object",
            "required": ["id", "title", "options", "opens_at", "closes_at", "state"],
            "properties": {
                "id": {"type": "string"},
                "title": {"type": "string"},
                "summary": {"type": "string", "description": "Markdown"},
                "options": {"type": "array", "items": {"type": "string"}},
                "opens_at": TIME,
                "closes_at": TIME,
                "timezone": {"type": "string"},
                "daily_limit": {"type": "integer"},
                "results": {"enum": ["live", "after_close"]},
                "state": {"enum": ["upcoming", "open", "closed"]},
                "translations": {
                    "type": "object",
                    "description": "The texts the catalog gives in a page language other "
                    "than its own (Chinese); a text not given is shown in Chinese",
                    "properties": {
                        "en": {
                            "type": "object",
                            "properties": {
                                "title": {"type": "string"},
                                "summary": {"type": "string", "description": "Markdown"},
                                "prize": {"type": "string"},
                            },
                        }
                    },
                },
            },
        },
        "VoteBody": vote_body,
        "VotePending": {
            "type": "object",
            "required": ["vote_id", "status", "status_url"],
            "properties": {
                "vote_id": {"type": "string"},
                "status": {"const": "pending"},
                "status_url": {"type": "string"},
            },
        },
        "VoteStatus": {
            "type": "object",
            "required": ["vote_id", "status"],
            "properties": {
                "vote_id": {"type": "string"},
                "poll_id": {"type": ["string", "null"]},
                "status": {"enum": ["pending", "accepted", "rejected"]},
                "reason": {"type": ["string", "null"]},
                "day": {"type": ["string", "null"], "format": "date"},
                "next_vote_at": {
                    **TIME,
                    "description": "daily_limit only: when the voter may vote again; "
                    "absent on the poll's last day",
                },
            },
        },
        "Results": {
            "type": "object",
            "required": ["poll_id", "counts", "total", "as_of", "final"],
            "properties": {
                "poll_id": {"type": "string"},
                "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                "total": {"type": "integer"},
                "as_of": TIME,
                "final": {"type": "boolean"},
            },
        },
        "EntryBody": {
            "type": "object",
            "required": ["name", "phone"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "maxLength": 50},
                "phone": {"type": "string", "maxLength": 32},
            },
        },
        "Entry": {
            "type": "object",
            "required": ["entry_id", "phone_masked"],
            "properties": {
                "entry_id": {"type": "string"},
                "phone_masked": {"type": "string"},
                "days": {"type": "integer"},
                "last_day": {"type": ["string", "null"], "format": "date"},
            },
        },
    }


def _paths() -> dict[str, Any]:
    unauthorized = _problem("missing, forged or expired voter token")
    return {
        "/api/v1/session": {
            "post": {
                "summary": "An anonymous device identity",
                "responses": {
                    "201": _json("issued", _ref("Session")),
                    "429": _problem("slow down"),
                },
            }
        },
        "/api/v1/captcha": {
            "post": {
                "summary": "A single-use captcha image",
                "responses": {
                    "201": _json("issued", _ref("Captcha")),
                    "429": _problem("slow down"),
                },
            }
        },
        "/api/v1/captcha/{captcha_id}/audio": {
            "get": {
                "summary": "A captcha's answer spoken, for voters who cannot read the image",
                "parameters": [
                    {
                        "name": "captcha_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "the answer, spoken letter by letter (WAV)",
                        "content": {
                            "audio/wav": {"schema": {"type": "string", "format": "binary"}}
                        },
                    },
                    "404": _problem("unknown_captcha: not an id this site issued"),
                    "410": _problem("captcha_expired: ask for a new captcha"),
                    "429": _problem("slow down"),
                    "503": _problem("captcha_audio_busy: retry in a few seconds"),
                },
            }
        },
        "/api/v1/polls": {
            "get": {
                "summary": "The catalog",
                "responses": {
                    "200": _json(
                        "polls",
                        {
                            "type": "object",
                            "properties": {"polls": {"type": "array", "items": _ref("Poll")}},
                        },
                    )
                },
            }
        },
        "/api/v1/polls/{poll}": {
            "get": {
                "summary": "One poll",
                "parameters": [POLL],
                "responses": {
                    "200": _json("the poll", _ref("Poll")),
                    "404": _problem("unknown poll"),
                },
            }
        },
        "/api/v1/polls/{poll}/votes": {
            "post": {
                "summary": "Cast a vote; 202 once Kafka has it",
                "parameters": [POLL],
                "security": BEARER,
                "requestBody": _body(_ref("VoteBody")),
                "responses": {
                    "202": _json("recorded for decision", _ref("VotePending")),
                    "401": unauthorized,
                    "403": _problem("poll_closed or poll_not_open"),
                    "404": _problem("unknown poll"),
                    "413": _problem("body over 4 KiB"),
                    "422": _problem("body not valid"),
                    "503": _problem("broker_unavailable: nothing stored, retry"),
                },
            }
        },
        "/api/v1/votes/{vote_id}": {
            "get": {
                "summary": "The decision on a vote",
                "parameters": [
                    {
                        "name": "vote_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": _json("status", _ref("VoteStatus")),
                    "404": _problem("unknown_vote: no vote was ever issued this id"),
                },
            }
        },
        "/api/v1/polls/{poll}/results": {
            "get": {
                "summary": "Live counts",
                "parameters": [POLL],
                "responses": {
                    "200": _json("results", _ref("Results")),
                    "403": _problem("results_hidden until the close"),
                    "404": _problem("unknown poll"),
                },
            }
        },
        "/api/v1/polls/{poll}/lottery/entry": {
            "post": {
                "summary": "Enter the prize draw",
                "parameters": [POLL],
                "security": BEARER,
                "requestBody": _body(_ref("EntryBody")),
                "responses": {
                    "200": _json("updated", _ref("Entry")),
                    "201": _json("entered", _ref("Entry")),
                    "401": unauthorized,
                    "403": _problem("poll closed"),
                    "404": _problem("unknown poll or no lottery"),
                    "422": _problem("not a mainland mobile number"),
                },
            },
            "get": {
                "summary": "Own entry with days counted so far",
                "parameters": [POLL],
                "security": BEARER,
                "responses": {
                    "200": _json("entry", _ref("Entry")),
                    "401": unauthorized,
                    "404": _problem("no entry"),
                },
            },
        },
        "/api/v1/polls/{poll}/lottery": {
            "get": {
                "summary": "Commitment, state and masked winners",
                "parameters": [POLL],
                "responses": {
                    "200": _json("lottery", {"type": "object"}),
                    "404": _problem("unknown poll"),
                },
            }
        },
        "/api/v1/polls/{poll}/lottery/draw": {
            "post": {
                "summary": "Draw the winners (staff)",
                "parameters": [POLL],
                "security": STAFF,
                "responses": {
                    "200": _json("the same draw again", {"type": "object"}),
                    "201": _json("drawn", {"type": "object"}),
                    "401": _problem("no staff token"),
                    "403": _problem("wrong staff token"),
                    "409": _problem("poll_open or pipeline_not_drained"),
                },
            }
        },
    }


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Votes public API", "version": "1"},
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "voterToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "staffToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }
