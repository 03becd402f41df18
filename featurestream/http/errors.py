"""Errors as the AWS SDKs read them, and the mapping from featurestream's typed errors.

Both protocols get the same answer: the status code, an ``x-amzn-ErrorType`` header and a
JSON body ``{"__type": code, "message": text}``. botocore reads the header for rest-json
(the runtime API) and ``__type`` for JSON 1.1 (the control plane), so either way the SDK
raises the error class named by ``code`` (``client.exceptions.ResourceNotFound``...).
"""

from __future__ import annotations

import orjson

from schemas.errors import (
    GroupExistsError,
    GroupNotFoundError,
    ServiceUnavailableError,
    ValidationError,
)

# The runtime API (sagemaker-featurestore-runtime) and the control plane (sagemaker) name the
# same failure differently; these are the names in each service model.
RUNTIME = "runtime"
CONTROL = "control"
_VALIDATION = {RUNTIME: "ValidationError", CONTROL: "ValidationException"}
MAX_MESSAGE_CHARS = 2048  # the Message shape's max in both models


class ApiError(Exception):
    """An error response: HTTP ``status`` and AWS error ``code``.

    ``code`` None means "validation error in the caller's protocol" (decided when answering).
    """

    def __init__(self, code: str | None, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status

    @classmethod
    def validation(cls, message: str) -> ApiError:
        return cls(None, message, 400)

    @classmethod
    def not_found(cls, message: str) -> ApiError:
        return cls("ResourceNotFound", message, 404)

    def code_for(self, protocol: str) -> str:
        return self.code or _VALIDATION[protocol]

    def body(self, protocol: str) -> bytes:
        return orjson.dumps({"__type": self.code_for(protocol), "message": str(self)[:MAX_MESSAGE_CHARS]})


def from_exception(exc: BaseException) -> ApiError:
    """The ApiError an AWS SDK should see for one of featurestream's typed errors."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, GroupNotFoundError):
        return ApiError.not_found(f"Resource Not Found: {exc}")
    if isinstance(exc, GroupExistsError):
        return ApiError("ResourceInUse", str(exc), 400)
    if isinstance(exc, ValidationError):
        return ApiError.validation(str(exc))
    if isinstance(exc, ServiceUnavailableError):
        return ApiError("ServiceUnavailable", str(exc), 503)
    return ApiError("InternalFailure", f"internal error ({type(exc).__name__}); the server log has the details",
                    500)
