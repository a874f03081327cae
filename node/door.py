"""The node's listeners: pynetdicom's association server with the door guarded.

pynetdicom hands every accepted socket straight to an association thread that reads without a
deadline, counts connections that never negotiated as associations, and reads whatever PDU length
the peer announces. Here each connection gets its own thread that first finishes the TLS
handshake (when the listener is TLS) and reads the whole A-ASSOCIATE-RQ itself, against the ARTIM
deadline and a size cap; only then is the association created, on a :class:`GuardedSocket` that
replays the request, holds the idle timeout, and checks every PDU header before its body is read.
The limits on how many connections may be held are :class:`node.gate.ConnectionGate`'s.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from node.balance import AcceptTurn, SharedListeners
from node.gate import Auditor, Connection, ConnectionGate, ConnectionState, DoorEvent, DoorLog, GateLimits
from node.intake import flush_early
from node.pdu_layout import (
    A_ASSOCIATE_RQ,
    COMMAND_FRAGMENT,
    P_DATA_TF,
    PDU_HEADER,
    PDU_TYPES,
    PDV_ITEM_HEADER,
    PDV_ITEM_LENGTH_SIZE,
)
from node.settings import NodeSettings
from node.tls import handshake, server_context
from node.wakeups import make_wakeful

log = logging.getLogger(__name__)

MAX_CONTROL_PDU = 64 * 1024  # any PDU but P-DATA-TF; a real A-ASSOCIATE-RQ is a few KiB
# A-ABORT from the DICOM UL service-provider (PS3.8 9.3.8): unexpected PDU, invalid PDU parameter value
ABORT_UNEXPECTED_PDU = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x02])
ABORT_INVALID_PARAMETER = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x06])


class RefusedConnectionError(Exception):
    """A connection closed before it became an association; ``event`` None = the peer just left."""

    def __init__(self, event: DoorEvent | None, abort: bytes = b"") -> None:
        super().__init__(event)
        self.event = event
        self.abort = abort


@dataclass(frozen=True)
class Listener:
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{self.port} ({'TLS' if self.tls else 'plain'})"


def pdu_problem(kind: int, length: int, max_pdu: int) -> str | None:
    """Why a PDU header is refused before its body is read, or None."""
    if kind == P_DATA_TF:
        if max_pdu > 0 and length > max_pdu:
            return f"P-DATA-TF of {length} bytes exceeds the maximum PDU length {max_pdu}"
        return None
    if kind in PDU_TYPES and length > MAX_CONTROL_PDU:
        return f"PDU type 0x{kind:02X} of {length} bytes exceeds {MAX_CONTROL_PDU}"
    return None


def read_exact(sock: socket.socket, count: int, deadline: float) -> bytes:
    """``count`` bytes before ``deadline``; a trickle cannot stretch it (unlike a per-recv timeout)."""
    data = bytearray()
    while len(data) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RefusedConnectionError(DoorEvent.EXPIRED)
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(min(count - len(data), 65536))
        except TimeoutError:
            raise RefusedConnectionError(DoorEvent.EXPIRED) from None
        except OSError:
            raise RefusedConnectionError(None) from None
        if not chunk:
            raise RefusedConnectionError(None)  # a probe that connected and left, or a connection we cut
        data += chunk
    return bytes(data)


def read_associate_rq(sock: socket.socket, deadline: float) -> bytes:
    """The whole A-ASSOCIATE-RQ PDU, header included, or :class:`RefusedConnectionError`."""
    header = read_exact(sock, PDU_HEADER.size, deadline)
    kind, length = PDU_HEADER.unpack(header)
    if kind != A_ASSOCIATE_RQ:
        raise RefusedConnectionError(DoorEvent.NOT_DICOM, ABORT_UNEXPECTED_PDU)
    if pdu_problem(kind, length, 0):
        raise RefusedConnectionError(DoorEvent.REQUEST_TOO_LARGE, ABORT_INVALID_PARAMETER)
    return header + read_exact(sock, length, deadline)


@functools.cache
def _warn_polling() -> None:
    log.warning("this pynetdicom differs from the one the node's event-driven association threads were "
                "written for: using its polling threads (about 2 ms slower per instance)")


LOG_DUMP_EVENTS = (evt.EVT_DIMSE_RECV, evt.EVT_DIMSE_SENT, evt.EVT_PDU_RECV, evt.EVT_PDU_SENT)


def _without_log_dumps(assoc: Association) -> None:
    """Unbind pynetdicom's handlers that format every PDU and message for its debug log, unless that
    log is on: a few hundred microseconds per instance spent on text nobody reads."""
    if logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
        return
    for event in LOG_DUMP_EVENTS:
        bound: Any = assoc.get_handlers(event)
        for handler, _args in list(bound):
            if getattr(handler, "__module__", "") == "pynetdicom._handlers":
                assoc.unbind(event, handler)


def _awaiting_response(assoc: Association) -> bool:
    """Whether the DUL still waits to send the local answer to the A-ASSOCIATE-RQ (Sta3)."""
    return bool(assoc.dul.state_machine.current_state == "Sta3")


class GuardedSocket(AssociationSocket):
    """pynetdicom's socket wrapper that first replays the request read by the door, and refuses a
    PDU whose announced length is over the limit before reading its body.

    The DUL reads a PDU as ``recv(6)`` (type and length) then ``recv(length)``. Returning less than
    asked makes it close the connection (an A-P-ABORT to the association), without a traceback.
    """

    def __init__(self, assoc: Association, sock: socket.socket, *, connection: Connection, prefix: bytes,
                 door: Door) -> None:
        super().__init__(assoc, client_socket=sock)
        self.connection = connection
        self._prefix = bytearray(prefix)
        self._door = door
        self._header_next = True
        self._body_kind = 0
        self._message_bytes = 0  # data set bytes of the DIMSE message being received
        # Sends come from the DUL thread and, for C-STORE responses, the handler thread
        # (node.wakeups.WakefulDUL.send_now); closing takes the same lock, so no send can reach
        # a descriptor number the closed socket gave back to the system.
        self.send_lock = threading.RLock()
        cap = door.settings.max_instance_mb * 1024 * 1024
        self._message_limit = 2 * cap  # past the cap the data set is drained unwritten, up to here

    @property
    def ready(self) -> bool:
        return bool(self._prefix) or super().ready

    def close(self) -> None:
        with self.send_lock:
            super().close()

    @property
    def has_buffered_data(self) -> bool:
        """Bytes to hand out before the socket is read again (the replayed request)."""
        return bool(self._prefix)

    def recv(self, nr_bytes: int) -> bytearray:
        data = bytearray()
        if self._prefix:
            data = self._prefix[:nr_bytes]
            del self._prefix[:nr_bytes]
        if len(data) < nr_bytes:
            try:
                rest = self._read(nr_bytes - len(data))
            except OSError as exc:  # idle timeout mid-PDU, or reset
                log.info("association from %s: connection lost mid-PDU (%s)", self.connection.address,
                         type(exc).__name__)
                return data
            if data:
                data += rest
            else:
                data = rest  # the common case: no copy of a 256 KiB PDU body
        if not self._header_next:
            self._header_next = True
            if self._body_kind == P_DATA_TF and self._message_limit and self._count_data(data):
                self._refuse(f"a data set over {self._message_limit} bytes", DoorEvent.INSTANCE_TOO_LARGE)
                return bytearray()
            return data
        if len(data) == PDU_HEADER.size:
            kind, length = PDU_HEADER.unpack(data)
            problem = pdu_problem(kind, length, self._door.settings.max_pdu)
            if problem is not None:
                self._refuse(problem, DoorEvent.PDU_TOO_LARGE)
                return bytearray()
            self._header_next = kind not in PDU_TYPES
            self._body_kind = kind
        return data

    def _count_data(self, body: bytearray) -> bool:
        """Count the data set bytes of a P-DATA-TF body; True once the message is over the limit.

        A data set can be endless; pynetdicom drops what exceeds ``max_instance_mb`` (see
        :mod:`node.intake`) but would go on reading, so the association is aborted past twice the cap.
        """
        offset = 0
        while offset + PDV_ITEM_HEADER.size < len(body):  # the item header and its control byte
            length, _context_id = PDV_ITEM_HEADER.unpack_from(body, offset)
            control = body[offset + PDV_ITEM_HEADER.size]
            if control & COMMAND_FRAGMENT:  # a new message begins
                self._message_bytes = 0
            else:
                self._message_bytes += max(length - 2, 0)
            offset += PDV_ITEM_LENGTH_SIZE + length
        return self._message_bytes > self._message_limit

    def _read(self, count: int) -> bytearray:
        """``count`` bytes, or fewer if the peer closed: pynetdicom's loop, but into one buffer and in
        large reads (a timeout on the socket costs a poll per read)."""
        sock = self.socket
        if sock is None:
            return bytearray()
        buffer = bytearray(count)
        view = memoryview(buffer)
        got = 0
        while got < count:
            read = sock.recv_into(view[got:], count - got)
            if not read:
                del view
                return buffer[:got]
            got += read
        return buffer

    def _refuse(self, problem: str, event: DoorEvent) -> None:
        log.warning("association from %s aborted: %s", self.connection.address, problem)
        self._door.gate.events.note(self.connection.address, event)
        if self.socket is not None:
            with contextlib.suppress(OSError):
                self.socket.sendall(ABORT_INVALID_PARAMETER)
        self.connection.cut()


class DoorServer(ThreadedAssociationServer):
    """One listening socket; admission in the accept loop, everything slow in the connection's thread."""

    def __init__(self, ae: AE, address: tuple[str, int], ae_title: str, contexts: list[PresentationContext],
                 ssl_context: ssl.SSLContext | None = None, evt_handlers: list[EventHandlerType] | None = None,
                 request_handler: Callable[..., socketserver.BaseRequestHandler] | None = None, *,
                 door: Door, tls_context: ssl.SSLContext | None = None, turn: AcceptTurn | None = None,
                 listening: socket.socket | None = None) -> None:
        self.door = door
        self.tls_context = tls_context
        self.turn = turn  # several receiving processes share this listener (node.balance)
        self._listening = listening  # a receiver's: the socket the first process bound
        self._declined = False
        self._claims: dict[socket.socket, Connection] = {}
        self._claims_lock = threading.Lock()
        # ssl_context stays None: pynetdicom would do the handshake in the accept loop.
        super().__init__(ae, address, ae_title, contexts, None, evt_handlers=evt_handlers,
                         request_handler=request_handler)

    def server_bind(self) -> None:
        """Bind, or in a further receiving process take the socket the first process bound."""
        if self._listening is None:
            super().server_bind()
            return
        if self.socket is not None:
            self.socket.close()
        self.socket = self._listening
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        if self._listening is None:
            super().server_activate()
        if self.turn is not None and self.socket is not None:
            # Shared: another process may take a connection between select() and accept(); the
            # accept loop must then go on at once, not block until the next connection.
            self.socket.setblocking(False)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept, if this process is due (:mod:`node.balance`); BlockingIOError (which the accept
        loop ignores) if it is not, or if another process took the connection first."""
        if self.turn is not None and not self.turn.may_accept():
            self._declined = True
            raise BlockingIOError("another receiving process is due")
        assert self.socket is not None
        request, address = self.socket.accept()
        if self.turn is not None:
            self.turn.opened(request)
        return request, address

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        if self.turn is not None:
            self.turn.closed(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        """Close the listening socket; a shared one only here: ``shutdown()`` on it would stop it
        listening in every process."""
        if self.turn is None:
            super().server_close()
        elif self.socket is not None:
            self.socket.close()

    def process_request(self, request: socket.socket | tuple[bytes, socket.socket],
                        client_address: tuple[str, int] | str) -> None:
        if not isinstance(request, socket.socket) or isinstance(client_address, str):
            return
        host, port = str(client_address[0]), int(client_address[1])
        connection = self.door.gate.admit(request, host, port, tls=self.tls_context is not None)
        if connection is None:
            self.shutdown_request(request)
            return
        with self._claims_lock:
            self._claims[request] = connection
        thread = threading.Thread(target=self._serve, args=(request, client_address, connection),
                                  name=f"door-{host}:{port}", daemon=True)
        thread.start()

    def claim(self, request: socket.socket) -> Connection:
        with self._claims_lock:
            return self._claims.pop(request)

    def _serve(self, request: socket.socket, client_address: tuple[str, int], connection: Connection) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # one connection's bug must not take the listener down
            log.exception("connection from %s failed", connection.address)
        finally:
            with self._claims_lock:
                self._claims.pop(request, None)
            self.door.gate.release(connection)
            self.shutdown_request(request)

    def service_actions(self) -> None:
        # pynetdicom's collects garbage every 60th pass; a pass that declined a connection
        # (node.balance) is a 2 ms poll, not a served request, and does not count.
        if self._declined:
            self._declined = False
        else:
            super().service_actions()
        self.door.gate.expire()

    def shutdown(self) -> None:
        """Stop the accept loop and close the listening socket (open connections are the door's)."""
        socketserver.BaseServer.shutdown(self)
        self.server_close()


class DoorHandler(RequestHandler):
    """One connection: TLS handshake, the A-ASSOCIATE-RQ, then the association until it ends."""

    server: DoorServer

    def handle(self) -> None:
        door = self.server.door
        connection = self.server.claim(self.request)
        sock: socket.socket = self.request
        try:
            try:
                sock = self._secure(sock, connection)
                prefix = read_associate_rq(sock, connection.deadline)
            except RefusedConnectionError as refused:
                door.refused(connection, refused, sock)
                return
            door.gate.requested(connection)
            sock.settimeout(door.settings.idle_timeout_s)
            assoc = self._association(sock, connection, prefix)
            evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
            assoc.start()
            assoc.join()
            door.finished(assoc)
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def _secure(self, sock: socket.socket, connection: Connection) -> socket.socket:
        """The TLS socket on a TLS listener (handshake done), else ``sock`` itself."""
        context = self.server.tls_context
        if context is None:
            return sock
        try:
            return handshake(sock, context, connection.deadline)
        except TimeoutError:
            raise RefusedConnectionError(DoorEvent.EXPIRED) from None
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            raise RefusedConnectionError(None) from None  # a TCP probe, or a client that gave up
        except ssl.SSLError as exc:
            log.info("TLS handshake with %s failed: %s", connection.address, exc.reason or exc)
            raise RefusedConnectionError(DoorEvent.TLS_FAILED) from None
        except OSError:
            raise RefusedConnectionError(None) from None

    def _association(self, sock: socket.socket, connection: Connection, prefix: bytes) -> Association:
        """As pynetdicom's ``_create_association``, on a :class:`GuardedSocket`."""
        ae, server = self.ae, self.server
        assoc = Association(ae, MODE_ACCEPTOR)
        if not make_wakeful(assoc, on_data_set=flush_early):
            _warn_polling()
        assoc.name = f"AcceptorThread@{connection.address}:{connection.port}"
        assoc.set_socket(GuardedSocket(assoc, sock, connection=connection, prefix=prefix, door=server.door))
        assoc.acceptor.maximum_length = ae.maximum_pdu_size
        assoc.acceptor.ae_title = server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = ae.implementation_version_name
        # pynetdicom deep-copies the listener's contexts for each association: 170 storage classes
        # with 45 transfer syntaxes each, 64 ms of CPU per association here. Negotiation only
        # reads them (it builds the accepted contexts anew), so each association gets its own list
        # of the same context objects.
        assoc.acceptor.supported_contexts = list(server.contexts)
        assoc.requestor.address_info = self.remote
        for event in server.get_events():
            bound: Any = server.get_handlers(event)
            pairs = [bound] if event.is_intervention else bound
            for handler, args in pairs:
                if handler is not None:
                    assoc.bind(event, handler, args)
        _without_log_dumps(assoc)
        return assoc


class Door:
    """The listeners (plain and/or TLS) with their shared handlers, gate and limits."""

    def __init__(self, ae: AE, settings: NodeSettings, auditor: Auditor, handlers: list[EventHandlerType], *,
                 on_finished: Callable[[Association], None] | None = None,
                 shared: SharedListeners | None = None) -> None:
        """``shared``: this is one of several receiving processes on the same listeners."""
        self.ae = ae
        self.shared = shared
        self.turn = AcceptTurn(shared.board, shared.index) if shared is not None else None
        self.on_finished = on_finished
        self.settings = settings
        self.handlers = handlers
        limits = GateLimits(max_associations=settings.max_associations, max_pending=settings.max_pending,
                            max_per_address=settings.max_per_address, artim_timeout_s=settings.artim_timeout_s)
        self.gate = ConnectionGate(limits, DoorLog(auditor))
        self._servers: list[DoorServer] = []

    @property
    def listeners(self) -> list[Listener]:
        return [Listener(int(s.server_address[1]), s.tls_context is not None) for s in self._servers]

    def start(self) -> None:
        wanted: list[tuple[int, ssl.SSLContext | None]] = []
        if self.settings.plain:
            wanted.append((self.settings.port, None))
        if self.settings.tls is not None:
            wanted.append((self.settings.tls.port, server_context(self.settings.tls)))
        inherited = self.shared.sockets if self.shared is not None else ()
        if inherited and len(inherited) != len(wanted):
            raise RuntimeError(f"{len(inherited)} listening sockets inherited for {len(wanted)} listeners")
        for i, (port, context) in enumerate(wanted):
            server = self.ae.make_server((self.settings.bind, port), evt_handlers=self.handlers,
                                         server_class=DoorServer, request_handler=DoorHandler, door=self,
                                         tls_context=context, turn=self.turn,
                                         listening=inherited[i] if inherited else None)
            assert isinstance(server, DoorServer)
            self._servers.append(server)
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                             name=f"door-accept-{server.server_address[1]}", daemon=True).start()
        if self.turn is not None:
            self.turn.join()
        self.gate.events.start()

    @property
    def listening_sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets, plain first, for further receiving processes to inherit."""
        return tuple(server.socket for server in self._servers if server.socket is not None)

    def stop_accepting(self) -> None:
        """Close the listening sockets and every connection that is not an association yet."""
        if self.turn is not None:
            self.turn.leave()
        for server in self._servers:
            server.shutdown()
        self.gate.close_pending()

    def close(self) -> None:
        self.gate.events.stop()

    def open_associations(self) -> int:
        return self.gate.count(ConnectionState.REQUESTED) + self.gate.count(ConnectionState.NEGOTIATED)

    def finished(self, assoc: Association) -> None:
        """An association's thread has ended, however it ended."""
        if self.on_finished is not None:
            try:
                self.on_finished(assoc)
            except Exception:  # the connection's thread must still release its slot
                log.exception("could not record the end of an association")

    def negotiate(self, assoc: Association) -> bool:
        """Take an association slot for this association's connection (EVT_REQUESTED)."""
        sock = assoc.dul.socket
        if not isinstance(sock, GuardedSocket):
            return True
        return self.gate.negotiate(sock.connection)

    def rejected(self, assoc: Association, wait_s: float = 1.0) -> None:
        """The node rejected this association: once the A-ASSOCIATE-RJ has left (the DUL is past
        Sta3), the connection gives way to new arrivals (:meth:`ConnectionGate.rejected`).

        Marked only after the send, so that making room for a newcomer can never cut a connection
        whose peer has not been sent its answer.
        """
        sock = assoc.dul.socket
        if not isinstance(sock, GuardedSocket):
            return
        deadline = time.monotonic() + wait_s
        while _awaiting_response(assoc) and assoc.dul.is_alive() and time.monotonic() < deadline:
            time.sleep(0.001)
        if not _awaiting_response(assoc):
            self.gate.rejected(sock.connection)

    def refused(self, connection: Connection, refused: RefusedConnectionError, sock: socket.socket) -> None:
        if refused.event is not None:
            self.gate.events.note(connection.address, refused.event)
        if refused.abort:
            with contextlib.suppress(OSError):
                sock.settimeout(1.0)
                sock.sendall(refused.abort)
