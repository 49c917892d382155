"""Every error modelhub raises on purpose, in one tree.

Each class carries the HTTP status and the OpenAI error ``type`` / ``code`` it becomes;
the app's exception handlers (``modelhub.api.app``) are the one place that turns them into
``{"error": {"message", "type", "param", "code"}}`` responses.

    ModelhubError                      500 server_error
    ├── InvalidRequestError            400 invalid_request_error
    │   ├── ContextLengthExceededError 400 code=context_length_exceeded
    │   ├── UnsupportedParameterError  400 code=unsupported_parameter
    │   ├── InvalidImageError          400 code=invalid_image
    │   └── EndpointNotSupportedError  400 code=endpoint_not_supported
    ├── AuthenticationError            401 authentication_error
    ├── PermissionDeniedError          403 permission_error
    ├── NotFoundError                  404 not_found_error
    │   ├── ModelNotFoundError         404 code=model_not_found
    │   └── ModelNotLaunchedError      404 code=model_not_yet_available
    ├── MethodNotAllowedError          405
    ├── ModelRetiredError              410 code=model_retired
    ├── PayloadTooLargeError           413
    ├── RateLimitError                 429 code=rate_limit_exceeded   (Retry-After)
    ├── ClientClosedRequestError       499 code=client_closed_request (nobody reads it)
    ├── UpstreamError                  502
    ├── ServiceUnavailableError        503                            (Retry-After)
    │   ├── ModelUnavailableError      503 code=model_not_configured
    │   ├── EngineOverloadedError      503 code=engine_overloaded
    │   ├── DatabaseUnavailableError   503 code=database_unavailable
    │   └── RateLimiterUnavailableError 503 code=rate_limiter_unavailable
    ├── UpstreamTimeoutError           504
    └── ConfigurationError             (never a response: the hub refuses to start)

Programmer errors (bugs) are ordinary Python exceptions and become a generic 500 whose
message does not leak internals.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ClientClosedRequestError",
    "ConfigurationError",
    "ContextLengthExceededError",
    "DatabaseUnavailableError",
    "EndpointNotSupportedError",
    "EngineOverloadedError",
    "InvalidImageError",
    "InvalidRequestError",
    "MethodNotAllowedError",
    "ModelNotFoundError",
    "ModelNotLaunchedError",
    "ModelRetiredError",
    "ModelUnavailableError",
    "ModelhubError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "RateLimiterUnavailableError",
    "ServiceUnavailableError",
    "UnsupportedParameterError",
    "UpstreamError",
    "UpstreamTimeoutError",
]


class ModelhubError(Exception):
    status_code = 500
    error_type = "server_error"
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
        self.headers: dict[str, str] = dict(headers or {})

    def to_body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(ModelhubError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    default_code = "context_length_exceeded"


class UnsupportedParameterError(InvalidRequestError):
    default_code = "unsupported_parameter"


class InvalidImageError(InvalidRequestError):
    default_code = "invalid_image"


class AuthenticationError(ModelhubError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(ModelhubError):
    status_code = 403
    error_type = "permission_error"


class NotFoundError(ModelhubError):
    status_code = 404
    error_type = "not_found_error"


class ModelNotFoundError(NotFoundError):
    error_type = "invalid_request_error"
    default_code = "model_not_found"


class ModelNotLaunchedError(NotFoundError):
    error_type = "invalid_request_error"
    default_code = "model_not_yet_available"


class EndpointNotSupportedError(InvalidRequestError):
    default_code = "endpoint_not_supported"


class MethodNotAllowedError(ModelhubError):
    status_code = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


class ModelRetiredError(ModelhubError):
    status_code = 410
    error_type = "invalid_request_error"
    default_code = "model_retired"


class PayloadTooLargeError(ModelhubError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimitError(ModelhubError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class ClientClosedRequestError(ModelhubError):
    """The client went away; the work was cancelled. Only logs and metrics see it."""

    status_code = 499
    error_type = "client_closed_request"
    default_code = "client_closed_request"


class UpstreamError(ModelhubError):
    status_code = 502
    error_type = "upstream_error"
    default_code = "bad_gateway"


class ServiceUnavailableError(ModelhubError):
    status_code = 503
    error_type = "service_unavailable_error"


class ModelUnavailableError(ServiceUnavailableError):
    default_code = "model_not_configured"


class EngineOverloadedError(ServiceUnavailableError):
    default_code = "engine_overloaded"


class UpstreamTimeoutError(ModelhubError):
    status_code = 504
    error_type = "timeout_error"
    default_code = "upstream_timeout"


class DatabaseUnavailableError(ServiceUnavailableError):
    """The contracts database is unreachable and the answer is not in the key cache."""

    default_code = "database_unavailable"


class RateLimiterUnavailableError(ServiceUnavailableError):
    """The rate-limit store (Redis) is unreachable and the policy is to refuse."""

    default_code = "rate_limiter_unavailable"


class ConfigurationError(ModelhubError):
    """The operator's configuration is wrong; ``problems`` has one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
