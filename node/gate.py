"""Who may hold a connection to the node, and for how long: the bookkeeping behind the door.

Every accepted connection is *pending* until its A-ASSOCIATE-RQ has been read, *requested* while
the node decides, and *negotiated* once it counts as an association. The limits are separate on
purpose: peers share ``max_associations`` of negotiated associations only, so half-open sockets,
port scanners and stalled senders cannot use them up; not-yet-negotiated connections have a pool of
their own, ``max_pending``, in which the *oldest* gives way to a new arrival (a real peer sends its
request within milliseconds, an attacker stalls, so the attacker is always the oldest); and one
source address holds at most ``max_per_address`` connections of any kind.

A connection whose association was *rejected* has had its answer and only waits for the peer to
close it (PS3.8's Sta13). It shares the pending pool and gives way first, before any pending one:
a peer that retries at once after an A-ASSOCIATE-RJ, faster than the node's threads notice the
close, gets its rejection again rather than a cut connection, and peers that never close after a
rejection still hold no more than the pool.

Refusals and evictions happen at the rate a hostile client chooses, so :class:`DoorLog` aggregates
them: counts per address, written as one audit row and one warning per address and window.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from db.vocabulary import Severity
from node.hosts import parse_address
from node.periodic import PeriodicFlush

log = logging.getLogger(__name__)


class ConnectionState(enum.Enum):
    PENDING = "pending"  # TLS handshake and A-ASSOCIATE-RQ not yet complete
    REQUESTED = "requested"  # request read; the node is deciding
    NEGOTIATED = "negotiated"  # counts against max_associations
    REJECTED = "rejected"  # A-ASSOCIATE-RJ sent; waiting for the peer to close


# The states that give way to a new arrival, in the order they give way.
_YIELDING = (ConnectionState.REJECTED, ConnectionState.PENDING)


class DoorEvent(enum.StrEnum):
    """Why the door closed or refused a connection (the keys of the aggregated audit)."""

    EVICTED = "evicted"  # pending pool full: the oldest pending connection gave way
    EXPIRED = "expired"  # no complete A-ASSOCIATE-RQ (or TLS handshake) within artim_timeout_s
    ADDRESS_LIMIT = "address_limit"  # max_per_address open connections from that address
    NOT_DICOM = "not_dicom"  # the first PDU was not an A-ASSOCIATE-RQ
    REQUEST_TOO_LARGE = "request_too_large"  # A-ASSOCIATE-RQ over the sanity cap
    PDU_TOO_LARGE = "pdu_too_large"  # P-DATA-TF longer than the advertised maximum PDU length
    INSTANCE_TOO_LARGE = "instance_too_large"  # a data set past twice node.max_instance_mb: aborted
    TLS_FAILED = "tls_failed"  # handshake refused: protocol, or no / an untrusted client certificate


class Auditor(Protocol):
    """The part of :class:`db.repository.Repository` the door writes to."""

    def audit(self, kind: str, message: str = "", *, severity: Severity = Severity.INFO,
              detail: Mapping[str, object] | None = None) -> None: ...


@dataclass(eq=False)
class Connection:
    """One accepted TCP connection, from accept to close."""

    address: str
    port: int
    tls: bool
    deadline: float  # time.monotonic() by which the A-ASSOCIATE-RQ must be complete
    control: socket.socket  # a dup of the accepted socket, only to shut the connection down
    state: ConnectionState = ConnectionState.PENDING
    accepted_at: float = field(default_factory=time.monotonic)

    def cut(self) -> None:
        """Shut the connection down from any thread: the owner's blocked read returns at once.

        ``shutdown`` acts on the TCP connection, not the descriptor, so the dup reaches it even
        after the owner wrapped its socket in TLS.
        """
        with contextlib.suppress(OSError):
            self.control.shutdown(socket.SHUT_RDWR)


@dataclass(frozen=True)
class GateLimits:
    max_associations: int
    max_pending: int
    max_per_address: int
    artim_timeout_s: float


class ConnectionGate:
    """The connections the node holds, by state, with the limits applied (thread-safe)."""

    def __init__(self, limits: GateLimits, events: DoorLog) -> None:
        self.limits = limits
        self.events = events
        self._live: list[Connection] = []  # in order of arrival
        self._lock = threading.Lock()
        self._closing = False

    def admit(self, sock: socket.socket, address: str, port: int, *, tls: bool) -> Connection | None:
        """Called by the accept loop: register a connection, making room if needed; None = refuse."""
        address = _canonical(address)
        victims: list[Connection] = []
        with self._lock:
            if self._closing:
                return None
            from_address = [c for c in self._live if c.address == address]
            if len(from_address) >= self.limits.max_per_address:
                oldest = _first_to_yield(from_address)
                if oldest is None:
                    self.events.note(address, DoorEvent.ADDRESS_LIMIT)
                    return None
                victims.append(self._drop(oldest))
            pool = [c for c in self._live if c.state in _YIELDING]
            if len(pool) >= self.limits.max_pending:
                victims.append(self._drop(_first_to_yield(pool) or pool[0]))
            connection = Connection(address, port, tls, time.monotonic() + self.limits.artim_timeout_s, sock.dup())
            self._live.append(connection)
        for victim in victims:
            self.events.note(victim.address, DoorEvent.EVICTED)
            victim.cut()
        return connection

    def requested(self, connection: Connection) -> None:
        """The A-ASSOCIATE-RQ has been read: the connection leaves the pending pool."""
        with self._lock:
            if connection.state is ConnectionState.PENDING:
                connection.state = ConnectionState.REQUESTED

    def negotiate(self, connection: Connection) -> bool:
        """Take one of the ``max_associations`` slots; False when all are taken."""
        with self._lock:
            if connection.state is ConnectionState.NEGOTIATED:
                return True
            if connection.state is ConnectionState.REJECTED:
                return False
            negotiated = sum(c.state is ConnectionState.NEGOTIATED for c in self._live)
            if negotiated >= self.limits.max_associations or connection not in self._live:
                return False
            connection.state = ConnectionState.NEGOTIATED
            return True

    def rejected(self, connection: Connection) -> None:
        """The association was rejected and the A-ASSOCIATE-RJ has left: the connection gives up its
        association slot, if it had one, and gives way to new arrivals."""
        with self._lock:
            if connection in self._live:
                connection.state = ConnectionState.REJECTED

    def release(self, connection: Connection) -> None:
        """The connection's thread is done with it."""
        with self._lock:
            if connection in self._live:
                self._live.remove(connection)
        with contextlib.suppress(OSError):
            connection.control.close()

    def expire(self) -> None:
        """Cut pending connections past their deadline (their own reads time out too; this is the
        backstop, run by the accept loops twice a second)."""
        now = time.monotonic() - 0.5  # the owner's own deadline normally fires first
        with self._lock:
            late = [c for c in self._live if c.state is ConnectionState.PENDING and c.deadline < now]
            for connection in late:
                self._drop(connection)
        for connection in late:
            self.events.note(connection.address, DoorEvent.EXPIRED)
            connection.cut()

    def close_pending(self) -> None:
        """Shutdown: refuse new connections and cut every one that is not an association yet."""
        with self._lock:
            self._closing = True
            doomed = [c for c in self._live if c.state is not ConnectionState.NEGOTIATED]
            for connection in doomed:
                self._drop(connection)
        for connection in doomed:
            connection.cut()

    def count(self, state: ConnectionState) -> int:
        with self._lock:
            return sum(c.state is state for c in self._live)

    def from_address(self, address: str) -> int:
        address = _canonical(address)
        with self._lock:
            return sum(c.address == address for c in self._live)

    def _drop(self, connection: Connection) -> Connection:
        """Forget a connection (lock held); its owner thread ends when the cut reaches it."""
        self._live.remove(connection)
        return connection


def _first_to_yield(connections: list[Connection]) -> Connection | None:
    """The oldest rejected connection, else the oldest pending one, else None (all negotiating or
    negotiated): ``connections`` are in order of arrival."""
    for state in _YIELDING:
        oldest = next((c for c in connections if c.state is state), None)
        if oldest is not None:
            return oldest
    return None


def _canonical(address: str) -> str:
    parsed = parse_address(address)
    return str(parsed) if parsed is not None else address


class DoorLog(PeriodicFlush):
    """Counts of door events per source address, flushed as one warning and one audit row per
    address and window (never one database write per hostile packet)."""

    thread_name = "door-log"
    AUDIT_KIND = "connection.refused"

    def __init__(self, auditor: Auditor, window_s: float = 10.0) -> None:
        self.auditor = auditor
        super().__init__(window_s)
        self._counts: dict[str, Counter[DoorEvent]] = {}
        self._lock = threading.Lock()

    def note(self, address: str, event: DoorEvent) -> None:
        log.debug("connection from %s closed: %s", address, event)
        with self._lock:
            self._counts.setdefault(address, Counter())[event] += 1

    def flush(self) -> None:
        """Write what was counted since the last flush: one row per address."""
        with self._lock:
            counts, self._counts = self._counts, {}
        for address, events in counts.items():
            summary = ", ".join(f"{n} {event}" for event, n in sorted(events.items()))
            log.warning("connections from %s closed by the node: %s", address, summary)
            try:
                self.auditor.audit(self.AUDIT_KIND, f"from {address}: {summary}", severity=Severity.WARNING,
                                   detail={"address": address, **{str(e): n for e, n in events.items()}})
            except Exception:  # the door keeps working while the audit database is down
                log.exception("could not audit refused connections")
