"""Evaluation reports are served read-only, and nothing outside the reports folder is."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.web.conftest import ClientFactory
from worker.web.reports import safe_report_path


def test_reports_are_listed_and_served_with_their_own_policy(client_for: ClientFactory) -> None:
    client = client_for()
    listing = client.get("/reports").text
    assert 'href="/reports/2025-01-run/report.html"' in listing
    assert "link.html" not in listing
    report = client.get("/reports/2025-01-run/report.html")
    assert report.status_code == 200 and "triphase evaluation" in report.text
    assert report.headers["content-type"].startswith("text/html")
    assert "script-src" not in report.headers["content-security-policy"]
    assert report.headers["content-security-policy"].startswith("default-src 'none'")


@pytest.mark.parametrize("path", [
    "/reports/../secret.html", "/reports/%2e%2e/secret.html", "/reports/2025-01-run/%2e%2e/%2e%2e/secret.html",
    "/reports/link.html", "/reports/..%2fsecret.html", "/reports/%2fetc%2fpasswd", "/reports/2025-01-run",
])
def test_no_path_leaves_the_reports_folder(client_for: ClientFactory, path: str) -> None:
    response = client_for().get(path)
    assert "outside the reports folder" not in response.text
    assert response.status_code == 404


def test_safe_report_path_refuses_what_lies_outside(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    (reports / ".hidden").mkdir(parents=True)
    (reports / "ok.html").write_text("ok")
    (reports / ".hidden" / "x.html").write_text("x")
    (reports / "data.json").write_text("{}")
    (tmp_path / "secret.html").write_text("secret")
    assert safe_report_path(reports, "ok.html") == (reports / "ok.html").resolve()
    for relative in ("../secret.html", "/etc/passwd", str(tmp_path / "secret.html"), ".hidden/x.html",
                     "data.json", "missing.html", "", "ok.html\x00"):
        assert safe_report_path(reports, relative) is None, relative
