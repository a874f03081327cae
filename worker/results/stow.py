"""Write-back over DICOMweb: STOW-RS of a job's SR and SCs to a destination of ``kind = "dicomweb"``.

The same contract as C-STORE (:func:`worker.results.writeback.send_to`): one attempt, the whole set,
a :class:`~worker.results.outcome.SendOutcome` with a status per file. HTTP 5xx, 408 (timeout),
429 (too many requests) and connection failures are transient; any other 4xx, a TLS failure
(an untrusted certificate does not cure itself) and instances the server lists as failed are
permanent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

import requests
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from db.vocabulary import SendState
from worker.dicomweb import WebService
from worker.results.outcome import SendOutcome
from worker.retry import ONLY_ATTEMPT, Attempt

log = logging.getLogger(__name__)

TRANSIENT_HTTP = {HTTPStatus.REQUEST_TIMEOUT, HTTPStatus.TOO_MANY_REQUESTS}


@dataclass(frozen=True)
class WebDestination:
    """A DICOMweb server that receives the SR and SC (``[[worker.destinations]] kind = "dicomweb"``)."""

    name: str
    service: WebService
    shadow: bool = False


def _failed_instances(response: Dataset) -> dict[str, str]:
    """SOP Instance UID -> failure reason of the instances the STOW-RS response lists as failed."""
    return {str(item.get("ReferencedSOPInstanceUID", "?")): f"0x{int(item.get('FailureReason', 0x0110)):04X}"
            for item in response.get("FailedSOPSequence", [])}


def _http_failure(destination: WebDestination, files: Sequence[Path], exc: requests.RequestException,
                  attempt: Attempt) -> SendOutcome:
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        what = f"HTTP {code} {exc.response.reason or ''}".strip()
        transient = code >= 500 or code in TRANSIENT_HTTP
    else:
        what = f"{type(exc).__name__}: {exc}"
        transient = not isinstance(exc, requests.exceptions.SSLError)
    reason = f"{destination.name} ({destination.service.url}): {what}"
    statuses = {path.name: what for path in files}
    if not transient:
        return SendOutcome(destination.name, SendState.FAILED, attempt.number, statuses,
                           f"{reason} (permanent; not retried)")
    if attempt.last:
        reason = f"{reason} (gave up after {attempt.number} attempts)"
    return SendOutcome(destination.name, SendState.FAILED, attempt.number, statuses, reason, transient=True)


def stow_to(destination: WebDestination, files: Sequence[Path], *,
            attempt: Attempt = ONLY_ATTEMPT) -> SendOutcome:
    """STOW-RS every file to one DICOMweb destination, once."""
    try:
        datasets = [dcmread(path) for path in files]
    except (OSError, InvalidDicomError) as exc:
        return SendOutcome(destination.name, SendState.FAILED, attempt.number, {},
                           f"output files unreadable: {exc}")
    try:
        response = destination.service.client().store_instances(datasets)
    except requests.RequestException as exc:
        return _http_failure(destination, files, exc, attempt)
    failed = _failed_instances(response)
    statuses = {path.name: failed.get(str(ds.SOPInstanceUID), "stored") for path, ds in zip(files, datasets,
                                                                                          strict=True)}
    if failed:
        problems = [f"{name}: {status}" for name, status in statuses.items() if status != "stored"]
        return SendOutcome(destination.name, SendState.FAILED, attempt.number, statuses,
                           f"{destination.name} ({destination.service.url}): " + "; ".join(problems[:3])
                           + " (permanent; not retried)")
    return SendOutcome(destination.name, SendState.SENT, attempt.number, statuses)
