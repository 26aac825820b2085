"""`zhserve serve`: uvicorn on the FastAPI app."""

from __future__ import annotations

from pathlib import Path


def run(models: str | Path | None = None, host: str | None = None, port: int | None = None,
        watch: bool | None = None) -> None:
    import uvicorn

    from app.api.app import create_app
    from app.settings import Settings

    given = {"models": models, "host": host, "port": port, "watch": watch}
    overrides = {k: v for k, v in given.items() if v is not None}
    settings = Settings(**overrides)
    # uvicorn closes idle keep-alive sockets and caps open connections; slow headers and stalled bodies need a
    # proxy in front (deploy/nginx/zhserve.conf).
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=settings.shutdown_grace_s, access_log=settings.access_log,
                timeout_keep_alive=settings.keep_alive_s, limit_concurrency=settings.max_connections)
