"""Configuration: one TOML file plus environment overrides, one typed section per package.

Every package owns the pydantic-settings class of its own section and builds it with
:func:`load_section`, so no package has to know the others' settings and nothing is kept in
module-level mutable state. ``db`` imports none of our packages, which is why the small file
loader that every package uses lives here.

Precedence, highest first: explicit overrides (command-line flags) > environment
(``TRIPHASE_<SECTION>__<KEY>``) > the TOML file's ``[section]`` table > the field default.
The file is ``--config PATH``, else ``$TRIPHASE_CONFIG``, else ``./triphase.toml`` when present.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import unquote, urlsplit

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_CONFIG = "TRIPHASE_CONFIG"
DEFAULT_CONFIG_NAME = "triphase.toml"


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid (exit code 2)."""


@dataclass(frozen=True)
class ConfigFile:
    """The parsed TOML configuration file (or none), read once per command."""

    path: Path | None
    data: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def locate(cls, explicit: Path | str | None = None) -> ConfigFile:
        """Find and parse the file by the documented precedence; a named file must exist."""
        named = explicit or os.environ.get(ENV_CONFIG)
        if named:
            path = Path(named).expanduser()
            if not path.is_file():
                raise ConfigError(f"configuration file not found: {path}")
        else:
            path = Path.cwd() / DEFAULT_CONFIG_NAME
            if not path.is_file():
                return cls(path=None)
        try:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read configuration file {path}: {exc}") from exc
        return cls(path=path, data=data)

    def table(self, section: str | None) -> dict[str, object]:
        """The ``[section]`` table (the top level for ``None``), never shared with the caller."""
        if section is None:
            return {k: v for k, v in self.data.items() if not isinstance(v, dict)}
        value = self.data.get(section, {})
        if not isinstance(value, dict):
            raise ConfigError(f"[{section}] in {self.path} must be a table")
        return dict(value)


# The table being loaded is handed to the settings source for the duration of one
# ``load_section`` call only: pydantic-settings builds sources inside the constructor and offers
# no argument to pass a per-call source.
_LOADING_TABLE: ContextVar[Mapping[str, object]] = ContextVar("_LOADING_TABLE")


class _TableSource(PydanticBaseSettingsSource):
    """A pydantic-settings source that yields one table of the TOML file."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self._table = dict(_LOADING_TABLE.get({}))

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._table.get(field_name), field_name, False

    def __call__(self) -> dict[str, object]:
        return {k: v for k, v in self._table.items() if k in self.settings_cls.model_fields}


class SectionSettings(BaseSettings):
    """Base of every package's section; subclasses set ``section`` and the env prefix."""

    section: ClassVar[str | None] = None

    model_config = SettingsConfigDict(extra="ignore", env_nested_delimiter="__", frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TableSource(settings_cls))


S = TypeVar("S", bound=SectionSettings)


def load_section(cls: type[S], config: ConfigFile | None = None, **overrides: Any) -> S:
    """Build ``cls`` from the file's table, the environment and non-None ``overrides``."""
    config = config or ConfigFile(path=None)
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    token = _LOADING_TABLE.set(config.table(cls.section))
    try:
        return cls(**kwargs)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        where = f"[{cls.section}]" if cls.section else "top level"
        raise ConfigError(f"invalid configuration ({where}): {exc}") from exc
    finally:
        _LOADING_TABLE.reset(token)


def _default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "triphase"


class GeneralSettings(SectionSettings):
    """Top-level keys: where the installation keeps its state."""

    section: ClassVar[str | None] = None
    model_config = SettingsConfigDict(env_prefix="TRIPHASE_", extra="ignore", frozen=True)

    data_dir: Path = Field(default_factory=_default_data_dir, description="spool, database, models, reports")
    log_level: str = Field(default="INFO", description="DEBUG shows patient identifiers; INFO and above never do")

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"


class DbSettings(SectionSettings):
    """``[db]``: the audit database. Empty url means the embedded SQLite file in data_dir."""

    section: ClassVar[str | None] = "db"
    model_config = SettingsConfigDict(env_prefix="TRIPHASE_DB__", extra="ignore", frozen=True)

    url: str = Field(default="", description="SQLAlchemy URL; empty = sqlite file <data_dir>/triphase.db")
    echo: bool = False
    pool_size: int = Field(default=10, ge=1)
    busy_timeout_s: float = Field(default=30.0, gt=0, description="SQLite lock wait")
    auto_upgrade: bool = Field(default=True, description="run migrations when the node or worker starts")

    def effective_url(self, general: GeneralSettings) -> str:
        return self.url or f"sqlite:///{general.data_dir / 'triphase.db'}"


QUERY_SECRETS = ("password", "passwd", "pass", "pwd", "token", "secret", "key", "passphrase")
SETTING_SECRETS = ("password", "passphrase", "token", "secret")
MASK = "***"


def is_secret_name(name: str, *, query: bool = False) -> bool:
    """Whether a query parameter (``password``, ``api_key``...) or a setting (``password``,
    ``web_token``, ``key_passphrase``...) holds a secret. Settings named ``*key`` are file paths."""
    lowered = unquote(name).lower()
    return any(word in lowered for word in (QUERY_SECRETS if query else SETTING_SECRETS))


def mask_url(url: str) -> str:
    """Hide the secrets of a URL for display and logs: the userinfo password
    (``scheme://user:***@host/...``) and sensitive query parameters (``?password=***``)."""
    parts = urlsplit(url)
    masked = url
    if parts.password is not None:
        userinfo, _, host = parts.netloc.rpartition("@")
        masked = masked.replace(parts.netloc, f"{userinfo.split(':', 1)[0]}:{MASK}@{host}", 1)
    if parts.query:
        query = "&".join(_mask_parameter(item) for item in parts.query.split("&"))
        head, _, tail = masked.partition("?")
        masked = f"{head}?{query}{tail[len(parts.query):]}"
    return masked


def _mask_parameter(item: str) -> str:
    name, sep, _value = item.partition("=")
    return f"{name}{sep}{MASK}" if sep and is_secret_name(name, query=True) else item
