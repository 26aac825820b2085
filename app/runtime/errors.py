"""The one error hierarchy of zhserve, mapped to HTTP once (app/api/errors.py).

ZhserveError
├── BadRequest         400  a raw tensor request (Open Inference Protocol) with wrong names, shapes or types
├── InvalidInput       422  the request is well-formed JSON but its content is not acceptable
├── Overloaded         429  the model's queue is full; retry after `retry_after` seconds
├── Unavailable        503  the model is not loaded (still loading, or failed to load)
├── DeadlineExceeded   504  the request's deadline passed; its queued rows were dropped
└── BackendError       500  the inference backend failed on this request's rows
"""

from __future__ import annotations


class ZhserveError(Exception):
    status = 500
    type = "internal_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(ZhserveError):
    status, type = 400, "bad_request"


class InvalidInput(ZhserveError):
    status, type = 422, "invalid_input"


class Overloaded(ZhserveError):
    status, type = 429, "overloaded"

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(ZhserveError):
    status, type = 503, "unavailable"


class DeadlineExceeded(ZhserveError):
    status, type = 504, "deadline_exceeded"


class BackendError(ZhserveError):
    status, type = 500, "backend_error"
