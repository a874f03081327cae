"""The console's pages over a real SQLite audit database: content, escaping, privacy, headers."""

from __future__ import annotations

from tests.web.conftest import (
    ACCESSION,
    PATIENT_ID,
    STUDY_RECEIVING,
    STUDY_SENT,
    STUDY_SKIPPED,
    XSS_AE,
    XSS_DESCRIPTION,
    ClientFactory,
    Scenario,
)

PAGES = ("/studies", f"/studies/{STUDY_SENT}", f"/studies/{STUDY_SKIPPED}", "/failures", "/models", "/reports")


def test_studies_page_lists_every_study_with_state_and_completion(client_for: ClientFactory) -> None:
    response = client_for().get("/studies")
    assert response.status_code == 200
    for uid in (STUDY_SENT, STUDY_RECEIVING, STUDY_SKIPPED):
        assert f'href="/studies/{uid}"' in response.text
    assert "receiving" in response.text and "manual" in response.text and "failed" in response.text


def test_study_page_shows_roles_timings_lesions_and_the_destinations_answer(client_for: ClientFactory) -> None:
    text = client_for().get(f"/studies/{STUDY_SENT}").text
    for expected in ("arterial", "portal", "delayed", "missing", "found", "Portal venous 1.5mm",
                     "last instance received", "completed", "analysed", "failed", "After previous step",
                     "pacs-main", "association rejected: called AE unknown", "L3", "indeterminate", "job.analysed"):
        assert expected in text, expected


def test_skipped_study_says_which_phase_is_missing_and_why(client_for: ClientFactory) -> None:
    text = client_for().get(f"/studies/{STUDY_SKIPPED}").text
    assert "portal venous phase missing" in text and "missing" in text and "skipped" in text


def test_failures_are_listed_newest_first_with_their_reasons(client_for: ClientFactory) -> None:
    text = client_for().get("/failures").text
    kinds = ["connection.refused", "association.rejected", "instance.refused", "job.skipped", "job.failed",
             "send.failed"]
    positions = [text.index(kind) for kind in kinds]
    assert positions == sorted(positions)
    for reason in ("calling AE title not recognised", "SOP class not accepted", "portal venous phase missing"):
        assert reason in text
    assert 'action="/actions/resend"' in text


def test_values_from_senders_are_escaped_never_markup(client_for: ClientFactory) -> None:
    client = client_for()
    for path in ("/studies", f"/studies/{STUDY_SENT}"):
        text = client.get(path).text
        assert XSS_DESCRIPTION not in text and XSS_AE not in text
        assert "&lt;svg onload=x&gt;" in text or path != "/studies"
    assert "&lt;script&gt;alert(&#39;series&#39;)&lt;/script&gt;" in client.get(f"/studies/{STUDY_SENT}").text


def test_no_patient_identifier_on_any_page_unless_enabled(client_for: ClientFactory) -> None:
    hidden = client_for()
    for path in PAGES:
        text = hidden.get(path).text
        assert PATIENT_ID not in text and ACCESSION not in text, path
    shown = client_for(show_patient=True)
    assert PATIENT_ID in shown.get("/studies").text
    assert PATIENT_ID in shown.get(f"/studies/{STUDY_SENT}").text and ACCESSION in shown.get("/studies").text


def test_every_response_carries_the_security_headers(client_for: ClientFactory) -> None:
    client = client_for()
    for path in (*PAGES, "/studies/9.9.9", "/static/console.css"):
        headers = client.get(path).headers
        assert headers["content-security-policy"].startswith("default-src 'self'")
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
    assert client.get("/studies").headers["cache-control"] == "no-store"


def test_unknown_or_malformed_study_is_not_found(client_for: ClientFactory) -> None:
    client = client_for()
    assert client.get("/studies/1.2.3.999").status_code == 404
    assert client.get("/studies/<b>").status_code == 404


def test_models_page_shows_the_card_and_accuracy_from_the_truth(client_for: ClientFactory, scenario: Scenario) -> None:
    text = client_for().get("/models").text
    for expected in ("resnet18", "benign, malignant", "120 lesions of 80 patients", "imagenet resnet18.pth",
                     "temperature", "80.0%", "Wilson, n=120", "70.0% – 90.0%", "serves ct-liver",
                     "3 cases", "33.3%"):
        assert expected in text, expected
    assert "cases 1-3" in client_for().get("/models?per=5").text
