"""The node's Application Entity: who may associate, what it accepts, and how it stops.

:class:`DicomNode` wires the pynetdicom AE to the spool, the repository and the completion
monitor. ``start()`` returns once the port is listening (tests run it in process);
``shutdown()`` stops accepting, lets open associations finish within the grace period, refuses
further stores, and then closes.
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import CollectorRegistry
from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.events import Event, EventHandlerType

from db.repository import Repository
from db.vocabulary import AssociationResult
from node.balance import SharedListeners
from node.completion import CompletionMonitor, RoleCheck, SenderPolicy
from node.dispatch import JobDispatcher
from node.door import Door
from node.intake import IntakeLimits, install
from node.metrics import AuditWatch, Metrics, MetricsServer, QueueDepth, TimedDispatcher
from node.receiver import AssociationStats, AssociationTracker, StoreHandler, best_effort
from node.rejections import Rejection, RejectionLog
from node.settings import NodeSettings
from node.sop_classes import VERIFICATION
from node.spool import Spool
from node.store_command import install as read_store_commands

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ: rejected-permanent, service-user, calling AE title not recognised (PS3.8 9.3.4)
REJECT_CALLING_AE = (0x01, 0x01, 0x03)
# rejected-transient, service-provider (presentation), temporary congestion
REJECT_BUSY = (0x02, 0x03, 0x01)
# rejected-transient, service-provider (presentation), local limit exceeded
REJECT_LIMIT = (0x02, 0x03, 0x02)
# pynetdicom counts every connection as an association; the door counts negotiated ones itself
UNLIMITED = 65535


def build_ae(settings: NodeSettings) -> AE:
    """An AE that verifies and stores every standard storage SOP class in every transfer syntax."""
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_pdu_size = settings.max_pdu
    ae.acse_timeout = settings.acse_timeout_s
    ae.dimse_timeout = settings.dimse_timeout_s
    ae.network_timeout = settings.idle_timeout_s
    ae.maximum_associations = UNLIMITED
    ae.require_called_aet = True
    ae.add_supported_context(VERIFICATION, AllTransferSyntaxes)
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:
            ae.add_supported_context(context.abstract_syntax, AllTransferSyntaxes)
    return ae


class DicomNode:
    def __init__(self, settings: NodeSettings, spool: Spool, repository: Repository,
                 dispatcher: JobDispatcher, *, role_check: RoleCheck | None = None,
                 metrics: Metrics | None = None, completes: bool = True,
                 shared: SharedListeners | None = None) -> None:
        """``role_check`` (injected by whoever knows the grouping rules) lets a study complete as
        soon as it is whole; without it, studies complete by the quiet period or the hard cap.
        ``completes=False`` makes a further receiving process (:mod:`node.receivers`): it stores
        and audits, while the first process completes studies and serves ``/metrics``.
        ``shared``: one of several receiving processes taking turns on the same listeners."""
        self.settings = settings
        self.repository = repository
        self.completes = completes
        self.tracker = AssociationTracker()
        self.metrics = metrics or Metrics()
        if completes:
            self.metrics.registry.register(QueueDepth.reading(repository.db))
        self.audit_watch = AuditWatch(repository.db, self.metrics)
        self.metrics_server: MetricsServer | None = None
        self.store_handler = StoreHandler(settings, spool, repository, self.tracker, self.metrics)
        self.monitor = CompletionMonitor(repository, TimedDispatcher(dispatcher, repository.db, self.metrics),
                                         poll_s=settings.completion_poll_s, settle_s=settings.settle_s,
                                         spool_root=spool.root, role_check=role_check, policy=self._sender_policy)
        self.ae = build_ae(settings)
        install(self.ae, IntakeLimits(max_instance_bytes=settings.max_instance_mb * 1024 * 1024, spool=spool))
        read_store_commands()
        self.door: Door | None = None
        self.shared = shared
        # What /metrics serves: this process's registry, or all receivers' values added up (cli.py)
        self.metrics_registry: CollectorRegistry | None = None
        self.rejections = RejectionLog(repository, self._write_rejection)
        self._stopping = threading.Event()

    def _sender_policy(self, calling_ae: str | None) -> SenderPolicy:
        return SenderPolicy(shadow=self.settings.shadow_for(calling_ae),
                            annotation_required=self.settings.require_annotation_for(calling_ae))

    @property
    def port(self) -> int:
        """The plain listener's port (the TLS one's when there is no plain listener)."""
        if self.door is None:
            raise RuntimeError("the node has not been started")
        return self.door.listeners[0].port

    @property
    def tls_port(self) -> int | None:
        if self.door is None:
            raise RuntimeError("the node has not been started")
        return next((listener.port for listener in self.door.listeners if listener.tls), None)

    def start(self) -> None:
        handlers: list[EventHandlerType] = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self.store_handler),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_RELEASED, self._on_ended, [AssociationResult.RELEASED]),
            (evt.EVT_ABORTED, self._on_ended, [AssociationResult.ABORTED]),
            (evt.EVT_CONN_CLOSE, self._on_closed),
        ]
        if self.completes:
            self.audit_watch.start()
        if self.settings.metrics_port and self.completes:
            self.metrics_server = MetricsServer(self.metrics_registry or self.metrics.registry, self.settings.bind,
                                                self.settings.metrics_port).start()
        self.door = Door(self.ae, self.settings, self.repository, handlers, on_finished=self._on_finished,
                         shared=self.shared)
        self.door.start()
        self.rejections.start()
        if self.completes:
            self.monitor.start()
        log.info("DICOM node %s listening on %s port %s (%d peers configured%s)", self.settings.ae_title,
                 self.settings.bind, ", ".join(map(str, self.door.listeners)), len(self.settings.peers),
                 ", promiscuous" if self.settings.promiscuous else "")

    def shutdown(self, grace_s: float | None = None) -> None:
        """Stop accepting; let associations finish for ``grace_s``; refuse the rest; close."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        door = self.door
        if door is not None:
            # Stop accepting and drop connections that never negotiated; associations may go on.
            door.stop_accepting()
        deadline = time.monotonic() + grace
        while door is not None and door.open_associations() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.store_handler.draining.set()
        self.store_handler.wait_idle(timeout=max(self.settings.dimse_timeout_s, 5.0))
        self.store_handler.flush_backlog()
        for assoc in self.ae.active_associations:
            assoc.abort()
        if door is not None:
            door.close()
        self.rejections.stop()
        if self.completes:
            self.monitor.stop()
            self.audit_watch.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        log.info("DICOM node stopped")

    # --- association events ---------------------------------------------------------------------

    def _on_echo(self, event: Event) -> int:
        return 0x0000

    def _on_requested(self, event: Event) -> None:
        """Check the calling AE title (and address) against the configured peers."""
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        if primitive is None:  # pynetdicom sets it before this event; never accept unchecked
            self._reject(assoc, REJECT_CALLING_AE)
            return
        calling = str(primitive.calling_ae_title).strip()
        called = str(primitive.called_ae_title).strip()
        address, port = assoc.requestor.address, assoc.requestor.port
        if self._stopping.is_set():
            self.metrics.association(AssociationResult.REJECTED)
            self._reject(assoc, REJECT_BUSY)
            return
        if not self.settings.promiscuous and self.settings.peer_for(calling, address) is None:
            reason = f"calling AE title {calling!r} from {address} is not a configured peer"
            # Audited (the first of a window at once, the others counted) before the peer hears it.
            self.rejections.note(Rejection(calling, called, address, port, reason))
            self.metrics.association(AssociationResult.REJECTED)
            self._reject(assoc, REJECT_CALLING_AE)
        elif self.door is not None and not self.door.negotiate(assoc):
            reason = f"{self.settings.max_associations} associations already open (max_associations)"
            self.rejections.note(Rejection(calling, called, address, port, reason))
            self.metrics.association(AssociationResult.REJECTED)
            self._reject(assoc, REJECT_LIMIT)

    def _reject(self, assoc: Association, reason: tuple[int, int, int]) -> None:
        """A-ASSOCIATE-RJ, then wait until the peer has closed, as pynetdicom's own rejections do
        (the called AE title): closing the socket before the DUL thread sent it would look like an
        abort to the peer."""
        assoc.acse.send_reject(*reason)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()

    def _on_rejected(self, event: Event) -> None:
        """Rejected, by the node or by pynetdicom: while the peer has yet to close, the connection
        gives way to new arrivals (:meth:`node.door.Door.rejected`)."""
        if self.door is not None:
            self.door.rejected(event.assoc)

    def _write_rejection(self, rejection: Rejection) -> None:
        best_effort(lambda: self.repository.reject_association(
            calling_ae=rejection.calling_ae, called_ae=rejection.called_ae, address=rejection.address,
            port=rejection.port, reason=rejection.reason,
        ), "audit a rejected association")

    def _on_accepted(self, event: Event) -> None:
        assoc = event.assoc
        calling = str(assoc.requestor.ae_title).strip()
        peer = self.settings.peer_for(calling, assoc.requestor.address)
        # Without a row the association goes on untracked; its stores are refused if the
        # database is really down.
        association_id = best_effort(lambda: self.repository.open_association(
            calling_ae=calling, called_ae=str(assoc.acceptor.ae_title).strip(),
            address=assoc.requestor.address, port=assoc.requestor.port, peer_name=peer.name if peer else None,
        ), "record an association")
        if association_id is not None:
            self.tracker.add(assoc, AssociationStats(association_id, calling, self.settings.quiet_period_for(peer)))

    def _on_finished(self, assoc: Association) -> None:
        """The association's thread has ended: record its end if no event did (a message pynetdicom
        could not decode, a reactor that died), so no association stays ``open`` until a restart."""
        self._record_end(assoc, AssociationResult.ABORTED)

    def _on_ended(self, event: Event, result: AssociationResult) -> None:
        self._record_end(event.assoc, result)

    def _on_closed(self, event: Event) -> None:
        """The connection closed: an association that had not ended is recorded aborted.

        Not in Sta13, where the node has answered a release (or sent an abort) and waits for the
        peer to close: there the association thread records the end it is completing
        (``EVT_RELEASED``, ``EVT_ABORTED``, or :meth:`_on_finished` when its thread ends). A peer
        that closes the moment it has the release response can otherwise be recorded aborted
        before that thread has said released.
        """
        machine = getattr(event.assoc.dul, "state_machine", None)
        if getattr(machine, "current_state", None) == "Sta13":
            return
        self._record_end(event.assoc, AssociationResult.ABORTED)

    def _record_end(self, assoc: Association, result: AssociationResult) -> None:
        stats = self.tracker.pop(assoc)
        if stats is None:
            return
        self.metrics.association(result)
        best_effort(lambda: self.repository.close_association(
            stats.association_id, result=result, stored=stats.stored, failed=stats.failed,
            bytes_stored=stats.bytes_stored,
        ), "record the end of an association")
        log.info("association #%d %s: %d stored, %d refused", stats.association_id, result,
                 stats.stored, stats.failed)
