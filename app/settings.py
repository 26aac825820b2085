"""Server settings: environment variables (ZHSERVE_*), then an optional TOML file, then defaults.

The file is named by ZHSERVE_CONFIG (default: zhserve.toml in the working directory, if present).
Example zhserve.toml:

    models = "/srv/models"
    port = 8080
    max_batch_size = 32
    request_timeout_s = 5

List settings (api_keys, cors_origins) read from the environment as comma-separated values.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_MODELS = Path(__file__).resolve().parents[1] / "models"
# what a key may hold to travel as `Authorization: Bearer <key>` (RFC 6750's b64token)
KEY_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def comma_separated(value: object) -> object:
    """The text "a, b" (an environment variable) as ["a", "b"]; lists (TOML, arguments) pass as they are."""
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZHSERVE_", extra="ignore")

    models: Path = Field(DEFAULT_MODELS, description="model repository folder")
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = Field("auto", pattern="^(auto|cpu|cuda)$", description="auto: CUDA when a session really gets it")
    variant: str = Field("auto", pattern="^(auto|fp32|int8|fp16)$",
                         description="model file per stage: auto (int8 on CPU, fp16 on CUDA, where model.json ships "
                                     "them), or force one (fp32 where a model lacks it)")
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime threads per session (0: one per core)")
    cpu_arena: str = Field("shrink", pattern="^(on|shrink|off)$",
                           description="onnxruntime CPU memory arena: shrink (give back after each run), on, off")
    # Batching: None keeps each model's own model.json "batching" values (or the runtime defaults).
    max_batch_size: int | None = Field(None, ge=1)
    max_batch_tokens: int | None = Field(None, ge=1)
    max_queue_delay_ms: float | None = Field(None, ge=0)
    max_queue_rows: int | None = Field(None, ge=1, description="queued rows per model before 429")
    request_timeout_s: float = Field(10.0, gt=0, description="per-request deadline (504 past it)")
    max_body_bytes: int = Field(1_000_000, ge=1, description="request bodies above this get 413")
    max_v2_body_bytes: int | None = Field(None, ge=1, description="the same for /v2 (default: max_body_bytes)")
    max_v2_output_values: int = Field(4_000_000, ge=1, description="/v2 responses holding more values get 400")
    keep_alive_s: float = Field(5.0, gt=0, description="an idle keep-alive connection is closed after this")
    max_connections: int = Field(1000, ge=1, description="open connections past this get 503 (uvicorn)")
    shutdown_grace_s: float = Field(25.0, ge=0, description="on SIGTERM, time in-flight requests get to finish")
    watch: bool = Field(False, description="poll the repository: load new models and versions, unload removed "
                        "folders (serve --watch)")
    watch_interval_s: float = Field(5.0, gt=0, description="seconds between two looks at the repository")
    log_level: str = "info"
    access_log: bool = Field(False, description="one log line per request (costs CPU under load)")
    # Access: off by default. Keys are never logged (SecretStr prints as **********).
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        [], description="bearer keys, comma-separated; any of them opens every route but the public ones")
    api_key_file: Path | None = Field(None, description="a file of bearer keys, one a line (# starts a comment)")
    public_metrics: bool = Field(False, description="with keys on, /metrics still answers without one")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        [], description="origins whose browser pages may call the API (CORS), comma-separated; none: CORS off")

    _split_lists = field_validator("api_keys", "cors_origins", mode="before")(comma_separated)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, **_: PydanticBaseSettingsSource):
        toml = TomlConfigSettingsSource(settings_cls, toml_file=os.environ.get("ZHSERVE_CONFIG", "zhserve.toml"))
        return init_settings, env_settings, toml

    def body_limits(self) -> tuple[int, int]:
        """(every route but /v2, /v2) request body limits in bytes."""
        return self.max_body_bytes, self.max_v2_body_bytes or self.max_body_bytes

    def api_key_values(self) -> list[bytes]:
        """Every key, from the setting and the file; a configured file that cannot be read stops the start
        (failing closed), and an error names the line, never the key."""
        keys = [(k.get_secret_value(), "ZHSERVE_API_KEYS") for k in self.api_keys]
        if self.api_key_file is not None:
            try:
                lines = self.api_key_file.read_text(encoding="utf-8").splitlines()
            except OSError as e:
                raise ValueError(f"api_key_file {self.api_key_file}: {e.strerror}") from None
            keys += [(line.strip(), f"{self.api_key_file}, line {n}") for n, line in enumerate(lines, 1)
                     if line.strip() and not line.lstrip().startswith("#")]
        for key, where in keys:
            if not KEY_CHARACTERS.fullmatch(key):
                raise ValueError(f"API key in {where}: only letters, digits and -._~+/ (then =) can travel as a "
                                 "bearer token")
        return [key.encode() for key, _ in keys]

    def batching_overrides(self) -> dict:
        names = ("max_batch_size", "max_batch_tokens", "max_queue_delay_ms", "max_queue_rows")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}
