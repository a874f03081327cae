"""Write-back: the SR and SC of one study go to each configured destination, all or nothing.

Retries are per study, not per file: a destination that is down, busy (0xA7xx) or times out is
tried again after a back-off, the whole set each time (deterministic UIDs make a repeat replace,
not duplicate); a destination that refuses an object for good (0xA9xx, 0xCxxx, a rejected
association) is not retried. Every response status is kept, per destination, for the audit.
Shadow destinations receive nothing: their result says so.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from node.scu import FileToSend, RemoteNode, SendResult, client_tls_context, scan, send

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


@dataclass
class DestinationOutcome:
    destination: str
    state: str  # "sent" | "shadowed" | "failed"
    attempts: int = 0
    statuses: dict[str, str] = field(default_factory=dict)  # file name -> status or error
    reason: str | None = None

    def as_json(self) -> dict[str, object]:
        return {"destination": self.destination, "state": self.state, "attempts": self.attempts,
                "statuses": self.statuses, "reason": self.reason}


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


def send_to(destination: Destination, files: Sequence[Path], *, calling_ae: str, timeout_s: float = 30.0,
            backoff_s: Sequence[float] = (2.0, 8.0, 30.0), sleep: Callable[[float], None] = time.sleep) -> DestinationOutcome:
    """Send every file to one destination, retrying transient failures with back-off."""
    if destination.shadow:
        return DestinationOutcome(destination.name, "shadowed", 0, {}, "shadow destination: nothing sent")
    outcome = DestinationOutcome(destination.name, "failed")
    remote = RemoteNode(destination.ae_title, destination.host, destination.port)
    try:
        tls = destination.tls_context()
    except (OSError, ssl.SSLError) as exc:
        outcome.reason = f"{destination.name}: TLS configuration unusable: {exc} (permanent; not retried)"
        return outcome
    delays = [0.0, *backoff_s]
    for attempt, delay in enumerate(delays, start=1):
        if delay:
            sleep(delay)
        result = SendResult()
        items: list[FileToSend] = scan(files, result)
        send(items, remote, calling_ae=calling_ae, timeout_s=timeout_s, result=result, tls=tls)
        outcome.attempts = attempt
        outcome.statuses = _statuses(result)
        if result.skipped:
            outcome.reason = f"output files unreadable: {result.skipped[0][1]}"
            return outcome
        if result.ok and len(result.sent) == len(files):
            outcome.state, outcome.reason = "sent", None
            return outcome
        problems = [f"{p.name}: 0x{s:04X}" for p, s in result.refused] + [f"{p.name}: {w}" for p, w in result.failed]
        outcome.reason = f"{destination.name} ({remote}): " + "; ".join(problems[:3])
        if not _transient(result):
            outcome.reason += " (permanent; not retried)"
            return outcome
        log.warning("write-back to %s failed (attempt %d of %d), will retry", destination.name, attempt, len(delays))
    outcome.reason = f"{outcome.reason} (gave up after {outcome.attempts} attempts)"
    return outcome
