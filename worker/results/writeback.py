"""Write-back: the SR and SC of one study go to each configured destination, all or nothing.

:func:`send_to` makes one attempt and says whether its failure is transient (the destination is
down, busy with 0xA7xx, or timed out) or permanent (0xA9xx, 0xCxxx, a rejected association,
unusable TLS settings); whoever calls it owns the back-off: the Celery send task retries with a
countdown, :func:`send_with_retries` waits in between. Each attempt sends the whole set
(deterministic UIDs make a repeat replace, not duplicate). Every response status is kept, per
destination, for the audit. Shadow destinations receive nothing: their result says so.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from db.vocabulary import SendState
from node.scu import FileToSend, RemoteNode, SendResult, client_tls_context, scan, send
from worker.errors import TransientError
from worker.results.outcome import SendOutcome
from worker.results.stow import WebDestination, stow_to
from worker.retry import DESTINATION_DOWN, ONLY_ATTEMPT, Attempt, RetryPolicy, retry_transient

log = logging.getLogger(__name__)

SUCCESS_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}


@dataclass(frozen=True)
class Destination:
    name: str
    ae_title: str
    host: str
    port: int
    shadow: bool = False
    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return client_tls_context(ca_file=self.tls_ca_file, cert_file=self.tls_cert_file, key_file=self.tls_key_file)


def _transient(result: SendResult) -> bool:
    """Worth another try: nothing reached the peer, or it was out of resources."""
    if any("rejected" in why for _, why in result.failed):
        return False
    if result.failed:
        return True
    return any(0xA700 <= status <= 0xA7FF for _, status in result.refused)


def _statuses(result: SendResult) -> dict[str, str]:
    out = {path.name: f"0x{status:04X}" for path, status in result.sent}
    out.update({path.name: why for path, why in result.failed})
    return out


def send_to(destination: Destination | WebDestination, files: Sequence[Path], *, calling_ae: str,
            timeout_s: float = 30.0, attempt: Attempt = ONLY_ATTEMPT) -> SendOutcome:
    """Send every file to one destination, once; on the last ``attempt`` a transient failure is final."""
    if destination.shadow:
        return SendOutcome(destination.name, SendState.SHADOWED, 0, {}, "shadow destination: nothing sent")
    if isinstance(destination, WebDestination):
        return stow_to(destination, files, attempt=attempt)
    remote = RemoteNode(destination.ae_title, destination.host, destination.port)
    try:
        tls = destination.tls_context()
    except (OSError, ssl.SSLError) as exc:
        return SendOutcome(destination.name, SendState.FAILED,
                           reason=f"{destination.name}: TLS configuration unusable: {exc} (permanent; not retried)")
    result = SendResult()
    items: list[FileToSend] = scan(files, result)
    send(items, remote, calling_ae=calling_ae, timeout_s=timeout_s, result=result, tls=tls)
    statuses = _statuses(result)
    if result.skipped:
        return SendOutcome(destination.name, SendState.FAILED, attempt.number, statuses,
                           f"output files unreadable: {result.skipped[0][1]}")
    if result.ok and len(result.sent) == len(files):
        return SendOutcome(destination.name, SendState.SENT, attempt.number, statuses)
    problems = [f"{p.name}: 0x{s:04X}" for p, s in result.refused] + [f"{p.name}: {w}" for p, w in result.failed]
    reason = f"{destination.name} ({remote}): " + "; ".join(problems[:3])
    if not _transient(result):
        return SendOutcome(destination.name, SendState.FAILED, attempt.number, statuses,
                           f"{reason} (permanent; not retried)")
    if attempt.last:
        reason = f"{reason} (gave up after {attempt.number} attempts)"
    return SendOutcome(destination.name, SendState.FAILED, attempt.number, statuses, reason, transient=True)


def send_with_retries(destination: Destination | WebDestination, files: Sequence[Path], *, calling_ae: str,
                      timeout_s: float = 30.0, backoff_s: Sequence[float] = DESTINATION_DOWN.delays_s,
                      sleep: Callable[[float], object] = time.sleep) -> SendOutcome:
    """:func:`send_to` outside a task: wait ``backoff_s`` between attempts while failures are transient."""

    def once(attempt: Attempt) -> SendOutcome:
        outcome = send_to(destination, files, calling_ae=calling_ae, timeout_s=timeout_s, attempt=attempt)
        if outcome.transient and not attempt.last:
            raise TransientError(outcome.reason or destination.name)
        return outcome

    return retry_transient(once, RetryPolicy(tuple(backoff_s)), sleep=sleep)
