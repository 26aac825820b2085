"""The documentation pages, Swagger UI (/docs) and ReDoc (/redoc), served from fastapi-offline's files inside the
installed package, so they work where no outside host can be reached.

A Content-Security-Policy on the two pages keeps them from fetching from any other origin: ReDoc's footer would
load its makers' logo from a CDN, and Swagger UI's validator badge an image from validator.swagger.io (also
turned off in its parameters).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGES = frozenset({"/docs", "/redoc"})
PATHS = PAGES | {"/docs/oauth2-redirect", "/openapi.json"}
FILES = "/static-offline-docs/"  # fastapi-offline's mount of Swagger UI's and ReDoc's files
SWAGGER_UI = {"validatorUrl": None}
# the pages' own inline script and styles (Swagger UI's start-up, ReDoc's styled components), ReDoc's search worker
POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
          "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'self'")


def documented_app(**kwargs: Any) -> FastAPI:
    """A FastAPI application whose /docs and /redoc pages load their files from this server only."""
    return FastAPIOffline(swagger_ui_parameters=SWAGGER_UI, **kwargs)


class PagePolicy:
    """ASGI middleware: the Content-Security-Policy header on the documentation pages."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in PAGES:
            return await self.app(scope, receive, send)

        async def with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"content-security-policy", POLICY.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_policy)
