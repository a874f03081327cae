"""``[web]``: where the console listens, the token for its actions, whether patients are shown."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from db.settings import SectionSettings


class WebSettings(SectionSettings):
    """The console is read-only without a token and never shows patient identifiers unless asked."""

    section: ClassVar[str | None] = "web"
    model_config = SettingsConfigDict(env_prefix="TRIPHASE_WEB__", extra="ignore", frozen=True)

    bind: str = Field(default="127.0.0.1", description="address to listen on (a reverse proxy adds TLS)")
    port: int = Field(default=8080, ge=1, le=65535)
    token: SecretStr = Field(default=SecretStr(""), description="bearer token for actions; empty = no actions")
    show_patient: bool = Field(default=False, description="show patient IDs and accession numbers")

    @property
    def actions_enabled(self) -> bool:
        return bool(self.token.get_secret_value())
