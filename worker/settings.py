"""``[worker]`` and ``[grouping]``: where results go, which model serves which task."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict

from db.settings import SectionSettings
from models.settings import ModelsSettings


class DestinationSettings(BaseModel):
    """A DICOM node that receives the SR and SC (``[[worker.destinations]]``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    tls: bool = False
    tls_ca_file: Path | None = Field(None, description="CA bundle that signs the destination's certificate")
    tls_cert_file: Path | None = Field(None, description="our client certificate, when the PACS asks for one")
    tls_key_file: Path | None = None
    shadow: bool = Field(False, description="analyse and audit, but send nothing")


class WorkerSettings(SectionSettings):
    section: ClassVar[str | None] = "worker"
    model_config = SettingsConfigDict(env_prefix="TRIPHASE_WORKER__", env_nested_delimiter="__",
                                      extra="ignore", frozen=True)

    destinations: tuple[DestinationSettings, ...] = ()
    models: dict[str, str] = Field(default_factory=dict, description="task -> MODEL (hash prefix or folder)")
    concurrency: int = Field(1, ge=1)
    metrics_port: int = Field(0, ge=0, le=65535, description="serve Prometheus /metrics (every pool process "
                              "added up) on this port; 0 = off")
    metrics_bind: str = Field("127.0.0.1", description="address of the worker's /metrics")


class GroupingSettings(SectionSettings):
    section: ClassVar[str | None] = "grouping"
    model_config = SettingsConfigDict(env_prefix="TRIPHASE_GROUPING__", extra="ignore", frozen=True)

    rules: Path | None = Field(None, description="site rules file (TOML); default: the shipped rules")


class ModelsSection(SectionSettings, ModelsSettings):
    """``[models]`` loaded from the file and environment (models/ itself loads nothing)."""

    section: ClassVar[str | None] = "models"
    model_config = SettingsConfigDict(env_prefix="TRIPHASE_MODELS__", extra="ignore", frozen=True)
