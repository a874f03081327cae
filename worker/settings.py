"""``[worker]`` and ``[grouping]``: where results go, which model serves which task."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import SettingsConfigDict

from db.settings import SectionSettings
from models.settings import ModelsSettings


class DestinationKind(StrEnum):
    """How results reach a destination."""

    DIMSE = "dimse"  # C-STORE to ae_title@host:port
    DICOMWEB = "dicomweb"  # STOW-RS to url


class DestinationSettings(BaseModel):
    """A DICOM node that receives the SR and SC (``[[worker.destinations]]``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: DestinationKind = DestinationKind.DIMSE
    ae_title: str | None = Field(None, description="dimse: the destination's AE title")
    host: str | None = Field(None, description="dimse: its address")
    port: int | None = Field(None, ge=1, le=65535, description="dimse: its port")
    tls: bool = False
    url: str | None = Field(None, description="dicomweb: the service's base URL (STOW-RS posts to <url>/studies)")
    token: str | None = Field(None, description="dicomweb: bearer token sent as Authorization (a secret)")
    tls_ca_file: Path | None = Field(None, description="CA bundle that signs the destination's certificate "
                                     "(DICOM TLS or HTTPS); default: the system's CAs for HTTPS")
    tls_cert_file: Path | None = Field(None, description="our client certificate, when the PACS asks for one")
    tls_key_file: Path | None = None
    shadow: bool = Field(False, description="analyse and audit, but send nothing")

    @model_validator(mode="after")
    def _complete_for_its_kind(self) -> DestinationSettings:
        if self.kind is DestinationKind.DICOMWEB:
            if not self.url or not self.url.startswith(("http://", "https://")):
                raise ValueError(f"destination {self.name}: kind = \"dicomweb\" needs url = \"http(s)://...\"")
        elif self.ae_title is None or self.host is None or self.port is None:
            raise ValueError(f"destination {self.name}: a DIMSE destination needs ae_title, host and port")
        return self


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
    job_lease_s: float = Field(900.0, gt=0, description="a job queued, running or analysed for longer than this "
                               "with no task for it in the broker is re-driven by the watchdog")


class GroupingSettings(SectionSettings):
    section: ClassVar[str | None] = "grouping"
    model_config = SettingsConfigDict(env_prefix="TRIPHASE_GROUPING__", extra="ignore", frozen=True)

    rules: Path | None = Field(None, description="site rules file (TOML); default: the shipped rules")


class ModelsSection(SectionSettings, ModelsSettings):
    """``[models]`` loaded from the file and environment (models/ itself loads nothing)."""

    section: ClassVar[str | None] = "models"
    model_config = SettingsConfigDict(env_prefix="TRIPHASE_MODELS__", extra="ignore", frozen=True)
