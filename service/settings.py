"""Service settings, from `ANYMODAL_*` environment variables (or a `.env` file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANYMODAL_", env_file=".env", extra="ignore")

    model_repository: Path = Field(Path("models"), description="Folder of <name>/<version>/ bundles")
    default_model: str | None = Field(None, description="Model of /v1/predict; default: the first by name")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    grpc_port: int = Field(8001, ge=0, le=65535, description="Port of the gRPC server; 0: no gRPC")
    workers: int = Field(1, ge=1, le=64)

    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Bearer tokens, comma-separated; empty: no authentication"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS, comma-separated; empty: CORS off"
    )

    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0, description="Larger request bodies get 413")
    body_timeout_seconds: float = Field(
        30.0, gt=0, description="A request body not all received this long after the request began gets 408"
    )
    max_header_bytes: int = Field(
        64 * 1024, gt=0, description="A request line and headers over this many bytes get 431"
    )
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="A connection's request line and headers must arrive this soon, else 408"
    )
    max_image_pixels: int = Field(16_000_000, gt=0, description="Decompression-bomb guard")
    max_instances: int = Field(64, gt=0, description="Instances in one batch request")

    batching: bool = Field(True, description="Requests queued while the pipeline is busy run as one batch")
    max_batch_size: int = Field(32, gt=0, description="Instances in one batch")
    concurrency: int = Field(
        1,
        ge=1,
        description="Pipeline runs at once per worker (threads); more requests queue and are batched."
        " One is fastest on CPU: a second thread mostly waits for the interpreter lock; use workers",
    )

    provider: Literal["auto", "cpu", "cuda"] = "auto"
    intra_op_threads: int = Field(1, ge=1, description="onnxruntime threads per session run")

    repository_poll_seconds: float = Field(10.0, ge=0, description="Reload changed bundles; 0: off")
    drain_seconds: float = Field(30.0, ge=0, description="Longest wait for in-flight requests on SIGTERM")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = Field(False, description="Log every request (the metrics count them anyway)")
    demo: bool = Field(True, description="Serve the browser demo page at /demo")

    @model_validator(mode="after")
    def _ports_differ(self) -> Settings:
        if self.grpc_port and self.grpc_port == self.port:
            raise ValueError(f"the gRPC port and the HTTP port are both {self.port}: give gRPC another")
        return self

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
