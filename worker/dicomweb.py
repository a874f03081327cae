"""DICOMweb (PS3.18) through dicomweb-client: one configured service, searched, read and written.

A :class:`WebService` is a base URL with an optional bearer token and an optional CA bundle; TLS
certificates are always verified (the system's CAs, or the bundle). The client's own retries are
off: the send task and ``triphase batch`` own the back-off, and a failure is reported, not hidden.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dicomweb_client import DICOMwebClient
from dicomweb_client.session_utils import add_certs_to_session, create_session
from pydicom import Dataset
from pydicom.multival import MultiValue

from worker.settings import DestinationKind, DestinationSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebService:
    url: str
    token: str | None = field(default=None, repr=False)  # a secret: never printed or logged
    ca_bundle: str | None = None
    timeout_s: float = 30.0

    def client(self) -> DICOMwebClient:
        session = create_session()
        if self.ca_bundle:
            add_certs_to_session(session, ca_bundle=self.ca_bundle)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        client = DICOMwebClient(self.url, session=session, headers=headers, timeout=self.timeout_s)
        client.set_http_retry_params(retry=False)
        return client


def service_for(text: str, destinations: Iterable[DestinationSettings]) -> WebService:
    """A base URL, or the name of a configured ``kind = "dicomweb"`` destination (its token and CA bundle)."""
    for destination in destinations:
        if destination.name == text and destination.kind is DestinationKind.DICOMWEB and destination.url:
            ca_bundle = str(destination.tls_ca_file) if destination.tls_ca_file else None
            return WebService(destination.url, destination.token, ca_bundle)
    if not text.startswith(("http://", "https://")):
        raise LookupError(f"{text!r} is neither an http(s) URL nor a configured dicomweb destination")
    return WebService(text)


@dataclass(frozen=True)
class StudyMatch:
    """A study found by QIDO-RS (no patient identifiers: they stay out of logs and listings)."""

    study_uid: str
    study_date: str | None
    modalities: str | None


def search_studies(service: WebService, filters: dict[str, str], *, page: int = 200) -> list[StudyMatch]:
    """QIDO-RS study search with ``filters`` (attribute keyword or tag -> value), page by page.

    Paging stops at a short page, or at a page that brings no new study: some servers (Orthanc's
    plugin among them) ignore ``offset`` and answer every page with the same studies.
    """
    client = service.client()
    found: dict[str, StudyMatch] = {}
    while True:
        results = client.search_for_studies(search_filters=dict(filters), limit=page, offset=len(found))
        new = [match for match in map(_study_match, results) if match.study_uid not in found]
        found.update((match.study_uid, match) for match in new)
        if len(results) < page or not new:
            return list(found.values())


def _study_match(result: dict[str, dict[str, object]]) -> StudyMatch:
    study = Dataset.from_json(result)
    modalities = study.get("ModalitiesInStudy")
    if isinstance(modalities, MultiValue):
        modalities = "\\".join(modalities)
    return StudyMatch(str(study.StudyInstanceUID), study.get("StudyDate") or None, modalities or None)


def retrieve_study(service: WebService, study_uid: str, folder: Path,
                   progress: Callable[[int], None] | None = None) -> list[Path]:
    """WADO-RS: every instance of a study, one by one, written as a DICOM file into ``folder``."""
    written = []
    for number, dataset in enumerate(service.client().iter_study(study_uid), start=1):
        path = folder / f"{number:06d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        written.append(path)
        if progress:
            progress(number)
    return written


def private_download_dir(parent: Path) -> tempfile.TemporaryDirectory[str]:
    """A private folder (0700) beside the spool for retrieved files, removed when done."""
    parent.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix="dicomweb-", dir=parent)
