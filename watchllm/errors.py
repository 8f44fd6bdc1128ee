"""The one error hierarchy, and its one mapping to HTTP status + OpenAI error JSON.

    WatchLLMError                    500 api_error (never carries a traceback to the client)
    ├── InvalidRequestError          400 invalid_request_error
    │   ├── PayloadTooLargeError     413 invalid_request_error
    │   └── UnknownModelError        404 invalid_request_error, code model_not_found
    ├── AuthenticationError          401 authentication_error, code invalid_api_key
    ├── PermissionDeniedError        403 permission_error
    ├── NotFoundError                404 not_found_error
    ├── RateLimitError               429 rate_limit_error (+ Retry-After)
    ├── UpstreamError                502 upstream_error (upstream status and message kept)
    │   └── UpstreamTimeoutError     504 timeout_error
    └── ServiceUnavailableError      503 service_unavailable

Every handler raises these; `error_body` renders them. The shape is OpenAI's:
``{"error": {"message", "type", "param", "code"}}``, so SDKs raise their usual classes.
"""

from __future__ import annotations

from typing import Any

import orjson


class WatchLLMError(Exception):
    status = 500
    type = "api_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers: dict[str, str] = headers or {}

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.param, self.code)


class InvalidRequestError(WatchLLMError):
    status = 400
    type = "invalid_request_error"


class PayloadTooLargeError(InvalidRequestError):
    status = 413
    default_code = "request_too_large"


class UnknownModelError(InvalidRequestError):
    status = 404
    default_code = "model_not_found"


class AuthenticationError(WatchLLMError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(WatchLLMError):
    status = 403
    type = "permission_error"
    default_code = "permission_denied"


class NotFoundError(WatchLLMError):
    status = 404
    type = "not_found_error"
    default_code = "not_found"


class RateLimitError(WatchLLMError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class UpstreamError(WatchLLMError):
    """The provider failed. `upstream_status` is what the provider answered (0: no answer)."""

    status = 502
    type = "upstream_error"
    default_code = "upstream_error"

    def __init__(self, message: str, *, upstream_status: int = 0, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.upstream_status = upstream_status
        if upstream_status:
            self.headers.setdefault("x-watchllm-upstream-status", str(upstream_status))


class UpstreamTimeoutError(UpstreamError):
    status = 504
    type = "timeout_error"
    default_code = "upstream_timeout"


class ServiceUnavailableError(WatchLLMError):
    status = 503
    type = "service_unavailable"
    default_code = "service_unavailable"


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


INTERNAL_ERROR_BODY = error_body(
    "The gateway hit an internal error; the request id identifies it in the logs.",
    "api_error",
    None,
    "internal_error",
)
