"""The typed exception tree of intramuros.

Every failure the platform reports is one of these classes, split by who is at
fault: :class:`ClientError` (the caller sent something we cannot serve, HTTP
4xx, naming the offending parameter where there is one) and
:class:`ServerError` (we or an engine failed, HTTP 5xx, never leaking stack
traces or file paths to the caller). The HTTP layer maps them to OpenAI's
``{"error": {...}}`` body in exactly one place (``intramuros.api.errors``);
nothing anywhere matches on message text.
"""

from __future__ import annotations

from typing import Any


class IntramurosError(Exception):
    """Base class of every error intramuros raises on purpose.

    Attributes:
        status: the HTTP status this error maps to.
        type: OpenAI's ``error.type`` string.
        code: a stable, machine-readable code (``error.code``), or ``None``.
        param: the request parameter at fault (``error.param``), or ``None``.
        headers: extra HTTP headers to send with the error (e.g. Retry-After).
    """

    status: int = 500
    type: str = "server_error"
    code: str | None = None

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
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = dict(headers or {})


# --------------------------------------------------------------------------
# The caller is at fault (4xx)
# --------------------------------------------------------------------------


class ClientError(IntramurosError):
    """The request cannot be served as sent; retrying it unchanged will fail again."""

    status = 400
    type = "invalid_request_error"


class InvalidRequest(ClientError):
    """A parameter is missing, of the wrong type, or has a value we cannot use."""

    code = "invalid_request"


class InvalidJSON(ClientError):
    """The body is not valid JSON."""

    code = "invalid_json"


class ContextLengthExceeded(ClientError):
    """Prompt plus requested completion do not fit in the model's context window."""

    code = "context_length_exceeded"

    def __init__(
        self,
        *,
        model: str,
        context_length: int,
        prompt_tokens: int,
        max_tokens: int,
        param: str = "messages",
        at_least: bool = False,
    ) -> None:
        # ``at_least``: the prompt was too long to be worth counting; its length in
        # bytes alone shows it cannot fit, and ``prompt_tokens`` is a lower bound.
        least = "at least " if at_least else ""
        super().__init__(
            f"This model's maximum context length is {context_length} tokens. However, you "
            f"requested {least}{prompt_tokens + max_tokens} tokens ({least}{prompt_tokens} in "
            f"the {param}, {max_tokens} in the completion). Please reduce the length of the "
            f"{param} or the completion.",
            param=param,
        )
        self.model = model
        self.context_length = context_length
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens


class ModelNotFound(ClientError):
    """The requested model is not in the catalogue."""

    status = 404
    code = "model_not_found"

    def __init__(self, model: str, *, param: str = "model") -> None:
        super().__init__(f"The model '{model}' does not exist.", param=param)
        self.model = model


class AuthenticationError(ClientError):
    """No API key, or one that is malformed, unknown, revoked or expired (401).

    The message never says which of these it was: that would help a guesser.
    """

    status = 401
    type = "authentication_error"
    code = "invalid_api_key"

    def __init__(self, message: str = "Invalid or missing API key.") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class PermissionDenied(ClientError):
    """A valid key that may not do this (admin route, model not allowed) (403)."""

    status = 403
    type = "permission_error"
    code = "insufficient_permissions"


class RateLimited(ClientError):
    """A quota or rate limit is reached (429); the message names the limit."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})


class ModelCapabilityError(ClientError):
    """The model exists but cannot do what was asked (e.g. embeddings from a chat model)."""

    code = "model_not_supported"


class NotFound(ClientError):
    """A route or object that does not exist."""

    status = 404
    type = "not_found_error"
    code = "not_found"


class MethodNotAllowed(ClientError):
    """The route exists but not with this HTTP method."""

    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(ClientError):
    """The request body is over the configured limit."""

    status = 413
    code = "payload_too_large"


class QueueFull(ClientError):
    """The model's waiting line is full; the caller should retry later."""

    status = 429
    type = "rate_limit_error"
    code = "queue_full"

    def __init__(self, model: str, *, limit: int, retry_after: int = 1) -> None:
        super().__init__(
            f"Too many requests are waiting for model '{model}' (limit {limit}). "
            f"Retry after {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )
        self.model = model


# --------------------------------------------------------------------------
# We are at fault (5xx)
# --------------------------------------------------------------------------


class ServerError(IntramurosError):
    """Something failed on our side; the request itself may be fine."""

    status = 500
    type = "server_error"
    code = "internal_error"


class EngineError(ServerError):
    """An engine failed while running a request."""

    code = "engine_error"


class EngineUnavailable(ServerError):
    """An engine cannot take requests now (not loaded, upstream down, shutting down)."""

    status = 503
    code = "engine_unavailable"


class ModelIntegrityError(ServerError):
    """A model's weights do not hash to the sha256 recorded in the catalogue.

    The model is refused: it is never loaded. The message names the file and
    both hashes so an operator can investigate.
    """

    status = 503
    code = "model_integrity_error"

    def __init__(self, *, model: str, path: str, expected: str, actual: str) -> None:
        super().__init__(
            f"Refusing to load model '{model}': weights file {path} has sha256 {actual}, "
            f"but the catalogue records {expected}."
        )
        self.model = model
        self.path = path
        self.expected = expected
        self.actual = actual

    def public_message(self) -> str:
        """The message for HTTP callers: no file paths."""
        return (
            f"Model '{self.model}' failed its integrity check and was not loaded; "
            "an operator must run `intramuros models verify`."
        )


class ModelFileMissing(ServerError):
    """A model's weights are not on disk.

    The message names the package to install (never a file path: it is shown
    to HTTP callers); the path goes to the server log.
    """

    status = 503
    code = "model_unavailable"

    def __init__(self, message: str, *, model: str) -> None:
        super().__init__(message)
        self.model = model


class ConfigError(IntramurosError):
    """The configuration (file, environment, flags) is invalid. Raised at start-up."""

    status = 500
    type = "server_error"
    code = "config_error"


def error_body(exc: IntramurosError) -> dict[str, Any]:
    """``{"error": {message, type, param, code}}`` for ``exc``: OpenAI's error body.

    The one mapping of our errors to the wire, for JSON answers and stream events alike.
    """
    message = exc.public_message() if isinstance(exc, ModelIntegrityError) else exc.message
    return {"error": {"message": message, "type": exc.type, "param": exc.param, "code": exc.code}}
