"""The project's exception tree. Each class has one stable `code`; the HTTP layer maps
codes to status codes and renders them as RFC 9457 problem+json.

    VotesError
    ├── CatalogInvalid            catalog_invalid        (start-up: bad poll catalog)
    ├── SettingsInvalid           settings_invalid       (start-up: bad environment)
    └── ApiError                                          (answered to a client)
        ├── BadRequest            invalid_body      422
        ├── PayloadTooLarge       payload_too_large 413
        ├── Unauthorized          unauthorized      401
        ├── Forbidden             forbidden         403
        ├── NotFound              not_found         404
        ├── Conflict              conflict          409
        ├── Gone                  gone              410
        ├── TooManyRequests       rate_limited      429
        └── ServiceUnavailable    unavailable       503
"""

from __future__ import annotations

from typing import Any, ClassVar


class VotesError(Exception):
    code: ClassVar[str] = "error"


class CatalogInvalid(VotesError):
    code = "catalog_invalid"


class SettingsInvalid(VotesError):
    code = "settings_invalid"


class ApiError(VotesError):
    """An error answered to a client; `code` may be narrowed per instance."""

    status: ClassVar[int] = 500
    code = "internal_error"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self, detail: str, *, code: str | None = None, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.instance_code = code or type(self).code
        self.extra = extra or {}


class BadRequest(ApiError):
    status = 422
    code = "invalid_body"
    title = "The request is not valid"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"
    title = "The request body is too large"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"
    title = "Credentials are missing or not valid"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"
    title = "Not allowed"


class NotFound(ApiError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(ApiError):
    status = 409
    code = "conflict"
    title = "Conflict with the current state"


class Gone(ApiError):
    status = 410
    code = "gone"
    title = "No longer available"


class TooManyRequests(ApiError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"


class ServiceUnavailable(ApiError):
    status = 503
    code = "unavailable"
    title = "Temporarily unavailable, retry"
