"""What one command invocation carries: the configuration file, flags, and its one engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from db.engine import Database
from db.settings import ConfigFile, DbSettings, GeneralSettings, SectionSettings, load_section

S = TypeVar("S", bound=SectionSettings)


@dataclass
class Runtime:
    config: ConfigFile
    debug: bool = False
    _database: Database | None = field(default=None, repr=False)

    def section(self, cls: type[S], **overrides: Any) -> S:
        return load_section(cls, self.config, **overrides)

    @property
    def general(self) -> GeneralSettings:
        return self.section(GeneralSettings)

    def database(self, *, upgrade: bool | None = None) -> Database:
        """The process's engine, created on first use; migrated first when configured to."""
        if self._database is None:
            settings = self.section(DbSettings)
            self._database = Database.from_settings(settings, self.general)
            if settings.auto_upgrade if upgrade is None else upgrade:
                # Alembic takes a noticeable time to import; commands that never open the database
                # (``--help``, ``echo``, ``send``) do without it.
                from db.migrate import upgrade_if_behind  # noqa: PLC0415

                upgrade_if_behind(self._database)
        return self._database

    def close(self) -> None:
        if self._database is not None:
            self._database.close()
            self._database = None
