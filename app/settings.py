"""Server settings: environment variables (ZHSERVE_*), then an optional TOML file, then defaults.

The file is named by ZHSERVE_CONFIG (default: zhserve.toml in the working directory, if present).
Example zhserve.toml:

    models = "/srv/models"
    port = 8080
    max_batch_size = 32
    request_timeout_s = 5
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_MODELS = Path(__file__).resolve().parents[1] / "models"


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
    max_v2_output_values: int = Field(4_000_000, ge=1, description="/v2 responses holding more values get 400")
    keep_alive_s: float = Field(5.0, gt=0, description="an idle keep-alive connection is closed after this")
    max_connections: int = Field(1000, ge=1, description="open connections past this get 503 (uvicorn)")
    shutdown_grace_s: float = Field(25.0, ge=0, description="on SIGTERM, time in-flight requests get to finish")
    log_level: str = "info"
    access_log: bool = Field(False, description="one log line per request (costs CPU under load)")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, **_: PydanticBaseSettingsSource):
        toml = TomlConfigSettingsSource(settings_cls, toml_file=os.environ.get("ZHSERVE_CONFIG", "zhserve.toml"))
        return init_settings, env_settings, toml

    def batching_overrides(self) -> dict:
        names = ("max_batch_size", "max_batch_tokens", "max_queue_delay_ms", "max_queue_rows")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}
