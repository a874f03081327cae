"""Configuration precedence: flag > environment > file > default; errors are typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from db.settings import ConfigError, ConfigFile, DbSettings, GeneralSettings, load_section, mask_url
from node.settings import NodeSettings


def write(tmp_path: Path, text: str) -> ConfigFile:
    path = tmp_path / "triphase.toml"
    path.write_text(text)
    return ConfigFile.locate(path)


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path, '[node]\nport = 2000\nae_title = "FROMFILE"\nquiet_period_s = 5\n')
    assert load_section(NodeSettings, config).port == 2000
    monkeypatch.setenv("TRIPHASE_NODE__PORT", "3000")
    settings = load_section(NodeSettings, config)
    assert (settings.port, settings.ae_title, settings.quiet_period_s) == (3000, "FROMFILE", 5)
    assert load_section(NodeSettings, config, port=4000, ae_title=None).port == 4000
    assert load_section(NodeSettings, ConfigFile(path=None)).port == 3000


def test_peers_from_file(tmp_path: Path) -> None:
    config = write(tmp_path, '[node]\n[[node.peers]]\nname = "pacs"\nae_title = "ORTHANC"\nhost = "10.0.0.5"\n'
                             'quiet_period_s = 7\n')
    settings = load_section(NodeSettings, config)
    peer = settings.peer_for("ORTHANC", "10.0.0.5")
    assert peer is not None and settings.quiet_period_for(peer) == 7
    assert settings.peer_for("ORTHANC", "10.0.0.6") is None
    assert settings.peer_for("OTHER", "10.0.0.5") is None


def test_data_dir_from_env_drives_the_sqlite_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIPHASE_DATA_DIR", str(tmp_path / "data"))
    general = load_section(GeneralSettings)
    assert general.spool_dir == tmp_path / "data" / "spool"
    assert load_section(DbSettings).effective_url(general) == f"sqlite:///{tmp_path / 'data' / 'triphase.db'}"


@pytest.mark.parametrize("text, fragment", [
    ("[node]\nport = 'many'\n", "[node]"),
    ("[node]\nae_title = 'THIS TITLE IS FAR TOO LONG'\n", "AE title"),
    ("[node\n", "cannot read"),
    ("node = 3\n", "must be a table"),
])
def test_invalid_configuration_is_a_config_error(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[")):
        load_section(NodeSettings, write(tmp_path, text))


def test_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        ConfigFile.locate(tmp_path / "nope.toml")


def test_mask_url() -> None:
    assert mask_url("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"
