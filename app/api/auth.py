"""API keys: with keys configured, every request but the public ones carries `Authorization: Bearer <key>`.

A missing or wrong key gets 401 with `WWW-Authenticate: Bearer realm="zhserve"` and the error body of its path,
counted as zhserve_errors_total{type="unauthorized"}. Public: the probes, the documentation pages and their
files, and /metrics where configured. The key a client sends is compared with every configured key in constant
time (digests of equal length, no early exit), and is never echoed or logged.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api import docs
from app.api.errors import error_body, is_v2
from app.runtime.metrics import Metrics

PROBES = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})
CHALLENGE = 'Bearer realm="zhserve"'
SCHEME = "apiKey"  # the OpenAPI security scheme's name: Swagger UI's Authorize button


def public_paths(public_metrics: bool) -> frozenset[str]:
    return PROBES | docs.PATHS | ({"/metrics"} if public_metrics else set())


def bearer_token(scope: Scope) -> bytes | None:
    """The token of `Authorization: Bearer <token>` (the scheme in any case), or None."""
    value = dict(scope["headers"]).get(b"authorization", b"")
    scheme, _, token = value.strip().partition(b" ")
    token = token.strip()
    return token if scheme.lower() == b"bearer" and token else None


class KeyRing:
    """The configured keys as SHA-256 digests: equal lengths, so comparing leaks neither content nor length."""

    def __init__(self, keys: list[bytes]):
        self._digests = [hashlib.sha256(k).digest() for k in keys]

    def accepts(self, token: bytes) -> bool:
        given = hashlib.sha256(token).digest()
        accepted = False
        for digest in self._digests:  # every key, whichever matches: the time does not tell which one did
            accepted |= hmac.compare_digest(given, digest)
        return accepted


class RequireKey:
    """ASGI middleware in front of BodyLimit, so a client without a key cannot make the server read its body."""

    def __init__(self, app: ASGIApp, keys: list[bytes], public: frozenset[str], metrics: Metrics):
        self.app, self.keys, self.public, self.metrics = app, KeyRing(keys), public, metrics
        metrics.errors.labels("unauthorized")  # exported at 0 from the start, as the other error types

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in self.public or path.startswith(docs.FILES):
            return await self.app(scope, receive, send)
        token = bearer_token(scope)
        if token is not None and self.keys.accepts(token):
            return await self.app(scope, receive, send)
        self.metrics.errors.labels("unauthorized").inc()
        message = ("an API key is required: send the header Authorization: Bearer <key>" if token is None
                   else "the API key is not valid")
        response = JSONResponse(error_body("unauthorized", message, path), status_code=401,
                                headers={"WWW-Authenticate": CHALLENGE})
        await response(scope, receive, send)


def document(schema: dict, public: frozenset[str], error_models: tuple[str, str]) -> None:
    """The OpenAPI document with the bearer scheme (Swagger UI's Authorize button), required by every operation
    but the public ones, each of which documents its 401. `error_models`: the schema names of the error bodies
    (task routes, /v2)."""
    schema.setdefault("components", {}).setdefault("securitySchemes", {})[SCHEME] = {
        "type": "http", "scheme": "bearer", "description": "one of the server's API keys (ZHSERVE_API_KEYS)"}
    schema["security"] = [{SCHEME: []}]
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            if path in public:
                operation["security"] = []
                continue
            model = error_models[1] if is_v2(path) else error_models[0]
            operation["responses"]["401"] = {
                "description": "missing or wrong API key",
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": CHALLENGE}},
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}}}
