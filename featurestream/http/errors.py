"""Errors as the AWS SDKs read them, and the mapping from featurestream's typed errors.

Both protocols get the same answer: the status code, an ``x-amzn-ErrorType`` header and a
JSON body ``{"__type": code, "message": text}``. botocore reads the header for rest-json
(the runtime API) and ``__type`` for JSON 1.1 (the control plane), so either way the SDK
raises the error class named by ``code`` (``client.exceptions.ResourceNotFound``...).

What a client reads never names the servers behind the API: a Kafka or Redis failure is
answered as "kafka is unavailable" and its details (addresses, URLs, driver errors) go to the
server log only.
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
INTERNAL_FAILURE = "InternalFailure"  # a failure of ours: logged with its traceback (app.py, protocol.py)


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

    @classmethod
    def forbidden(cls, message: str) -> ApiError:
        """The key is known and the signature good, but the key may not do this (both protocols)."""
        return cls("AccessForbidden", message, 403)

    def code_for(self, protocol: str) -> str:
        if self.code == "AccessForbidden" and protocol == CONTROL:
            return "AccessDeniedException"  # the name SageMaker's (and Athena's) JSON 1.1 APIs answer with
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
        return ApiError("ServiceUnavailable", f"Service Unavailable: {backend_of(exc)} is unavailable; retry "
                        "later (the server log has the details)", 503)
    return ApiError(INTERNAL_FAILURE, f"internal error ({type(exc).__name__}); the server log has the details",
                    500)


def backend_of(exc: BaseException) -> str:
    """Which service failed ("kafka", "redis" or "a backend service"), without its address.

    The driver error the failure was raised from says it best; featurestream's own messages,
    which start by naming the service, are the fallback.
    """
    seen: BaseException | None = exc
    for _ in range(5):  # a short walk: causes chain one or two deep here
        if seen is None:
            break
        module = type(seen).__module__.split(".", 1)[0]
        if module in ("redis", "kafka", "confluent_kafka", "aiokafka"):
            return "redis" if module == "redis" else "kafka"
        seen = seen.__cause__
    text = str(exc).lower()
    if "redis" in text:
        return "redis"
    if any(word in text for word in ("kafka", "topic", "registry", "published")):
        return "kafka"
    return "a backend service"
