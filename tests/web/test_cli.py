"""``triphase web`` builds its console from the configuration and stays free of heavy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner

from db.runtime import Runtime
from db.settings import ConfigFile
from worker.web import cli


def test_web_serves_the_configured_address_and_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "triphase.toml"
    config.write_text(f'data_dir = "{tmp_path}"\n[web]\nport = 8181\ntoken = "s3cret"\n', encoding="utf-8")
    served: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app, **options))
    runtime = Runtime(ConfigFile.locate(config))
    result = CliRunner().invoke(cli.app, ["--bind", "127.0.0.2"], obj=runtime)
    runtime.close()
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.2:8181/" in result.output and "actions need the token" in result.output
    assert served["host"] == "127.0.0.2" and served["port"] == 8181
    assert "s3cret" not in result.output


def test_the_console_imports_no_machine_learning_stack() -> None:
    code = ("import sys, worker.web.cli, worker.web.app; "
            "print([m for m in ('torch', 'sklearn', 'highdicom', 'matplotlib') if m in sys.modules])")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2]).stdout
    assert output.strip() == "[]"
