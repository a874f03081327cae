"""pynetdicom's two threads per association, woken by events instead of polling every millisecond,
and a C-STORE served on the thread that received it.

pynetdicom runs each association on two threads that poll each other. The DUL thread (socket and
state machine) sleeps 1 ms whenever a pass found nothing to do; the association thread (the
handlers) looks for a decoded message once per millisecond. One C-STORE crosses three such
hand-offs: the first PDU of the next instance arriving, the decoded request reaching the handler,
and the response reaching the socket. Measured on loopback with 512 x 512 CT instances, that was
about 2 ms of the 7 ms one instance took.

Here each thread blocks until it has work instead:

- the DUL thread in ``select()`` on its socket and on a :class:`Doorbell` that rings whenever a
  primitive is queued for it to send, or when it is told to stop;
- the association thread on an :class:`threading.Event` set whenever a DIMSE message or an ACSE
  primitive (release, abort) is queued for it, and when the DUL thread ends.

A complete C-STORE request skips the hand-off altogether: the DUL thread that decoded it runs the
handler and sends the answer (:meth:`WakefulDIMSE._serve_here`), whenever the association thread
would have served it at once. The peer waits for the answer, so the DUL thread had nothing else to
do; sparing the queue, the wake-up and the two threads' turns at the GIL took 12-30 % off the CPU
per instance. Every other request, and a C-STORE in any other case, goes to the association thread
as before. pynetdicom's blocking abort waits for the DUL thread to end, so on that thread it waits
aside (:func:`_kill_from_any_thread`).

Every wait is bounded (:data:`WAIT_S`, and the ARTIM timer's remaining time), so timers and kill
flags are serviced as before even if a wake-up were missed. The classes replace pynetdicom's
providers on an :class:`~pynetdicom.association.Association` before it starts
(:func:`make_wakeful`); they rely on pynetdicom 3.0's internals, which :func:`supported` checks, and
the node falls back to the polling providers (with a warning) where they differ.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from pynetdicom import association as association_module
from pynetdicom import dul as dul_module
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from node.pdata import EVENT_INVALID_PDU, Readable, read_pdu
from node.store_response import store_response_pdata

log = logging.getLogger(__name__)

WAIT_S = 0.05  # the longest a thread sleeps without being woken: the resolution of kill flags
MIN_WAIT_S = 0.001  # never a busy loop, whatever a timer says
REACTOR_PAUSE_S = 0.001  # the pause at the top of each pass of pynetdicom's association reactor
_INTERNALS = {
    DULServiceProvider: ("_is_transport_event", "_process_recv_primitive", "run_reactor", "_run_loop_delay",
                         "to_provider_queue", "to_user_queue", "event_queue", "artim_timer", "state_machine",
                         "_idle_timer", "_send", "socket", "_read_pdu_data", "_decode_pdu", "_recv_pdu"),
    DIMSEServiceProvider: ("get_msg", "send_msg", "msg_queue", "maximum_pdu_size"),
    Association: ("dul", "dimse", "acse_timeout", "network_timeout", "_kill", "_run_reactor", "_serve_request",
                  "_sent_release", "_reactor_checkpoint", "is_established", "_accepted_cx", "kill"),
}
_after_a_message = threading.local()  # on an association thread: skip the reactor's next pause


def _reactor_pause(seconds: float) -> None:
    """``time.sleep`` as pynetdicom's association module sees it.

    The association reactor pauses 1 ms at the top of every pass, then looks for a message. On a
    wakeful association the look itself waits for the next message (:meth:`WakefulDIMSE.get_msg`),
    so the pass right after a message was served skips the pause: once the rest of the path got
    faster, the next small instance was often in before it ended. Every other pass, and every other
    sleep of the module, is as pynetdicom wrote it, so a pass that finds no message never loops
    without a pause.
    """
    if seconds == REACTOR_PAUSE_S and getattr(_after_a_message, "pending", False):
        _after_a_message.pending = False
        return
    time.sleep(seconds)


class _ReactorClock:
    """The ``time`` module, but for its ``sleep`` (:func:`_reactor_pause`)."""

    sleep = staticmethod(_reactor_pause)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


_REACTOR_CLOCK = _ReactorClock()


def _dul_pause(seconds: float) -> None:
    """``time.sleep`` as pynetdicom's DUL module sees it: none for a wakeful DUL's zero pause.

    pynetdicom's DUL loop sleeps its run-loop delay after every pass that found no event. A
    :class:`WakefulDUL` has a delay of zero (it waits in ``select()`` instead), and ``sleep(0)``
    still cost a system call and a turn of the GIL, several times per instance. Where its next
    pass would not wait (no open connection, Sta1, or Sta13, where pynetdicom's own check runs
    until the peer closes), the pause stays, or the loop would spin holding the GIL; so does any other
    sleep (a polling DUL's delay, a test's).
    """
    thread = threading.current_thread()
    if seconds == 0 and isinstance(thread, WakefulDUL) and thread.waits_for_input():
        return
    time.sleep(seconds)


class _DULClock(_ReactorClock):
    """The ``time`` module, but for its ``sleep`` (:func:`_dul_pause`)."""

    sleep = staticmethod(_dul_pause)


_DUL_CLOCK = _DULClock()


class WakingQueue(queue.Queue[Any]):
    """A queue that calls ``wake`` after every put (``put_nowait`` goes through ``put``), then
    ``after_put`` with the item, on the putting thread, while the woken consumer already runs."""

    def __init__(self, wake: Callable[[], None], after_put: Callable[[Any], None] | None = None) -> None:
        super().__init__()
        self._wake = wake
        self._after_put = after_put

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()
        if self._after_put is not None:
            self._after_put(item)


class ServingQueue(WakingQueue):
    """The association's message queue, which lets ``serve_here`` take a message instead."""

    def __init__(self, wake: Callable[[], None], after_put: Callable[[Any], None],
                 serve_here: Callable[[Any], bool]) -> None:
        super().__init__(wake, after_put)
        self._serve_here = serve_here

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if not self._serve_here(item):
            super().put(item, block, timeout)


class Doorbell:
    """A socket pair one thread rings and another waits on in ``select()`` beside its socket.

    A socket pair rather than an ``os.pipe``: once closed, a late ring fails on the closed socket
    object instead of writing into whatever file reused the descriptor number.
    """

    def __init__(self) -> None:
        self._bell, self._ringer = socket.socketpair()
        self._bell.setblocking(False)
        self._ringer.setblocking(False)

    def fileno(self) -> int:
        return self._bell.fileno()

    def ring(self) -> None:
        with contextlib.suppress(OSError):  # full (it is ringing already) or closed (nobody waits)
            self._ringer.send(b"\0")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            while self._bell.recv(4096):
                pass

    def close(self) -> None:
        self._ringer.close()
        self._bell.close()


class WakefulDUL(DULServiceProvider):
    """The DUL thread, asleep in ``select()`` until its socket has data or it has something to do."""

    def __init__(self, assoc: Association, wake_association: Callable[[], None]) -> None:
        self._bell = Doorbell()
        self._stopping = False
        self._wake_association = wake_association
        super().__init__(assoc)
        self._run_loop_delay = 0.0  # the wait is in _is_transport_event, woken by the doorbell
        self.to_provider_queue = WakingQueue(self._bell.ring)
        self.to_user_queue = WakingQueue(wake_association)

    @property
    def _kill_thread(self) -> bool:
        return self._stopping

    @_kill_thread.setter
    def _kill_thread(self, value: bool) -> None:
        self._stopping = value
        if value:
            self._bell.ring()

    def _send(self, pdu: Any) -> None:
        with _send_lock(self.socket):
            super()._send(pdu)

    def send_now(self, primitive: P_DATA) -> bool:
        """Send a P-DATA on the calling thread (the handler's), sparing the hand-off to this one.

        Only on a door's socket (whose closing waits for the send), on an established association
        (Sta6, where P-DATA leaves the state as it is) with nothing queued before it or waiting to
        change the state, over a plain TCP socket (an SSL object must not be used by two threads
        at once), and with nobody listening for the sent PDU or bytes. False, sending nothing,
        otherwise: the caller queues it as usual. A failed send is left to this thread, which
        meets the closed connection on its next read.
        """
        lock = getattr(self.socket, "send_lock", None)
        if lock is None or self.assoc.get_handlers(evt.EVT_PDU_SENT) or self.assoc.get_handlers(evt.EVT_DATA_SENT):
            return False
        with lock:  # the socket is not closed, nor written by the DUL thread, meanwhile
            sock = getattr(self.socket, "socket", None)
            if (type(sock) is not socket.socket  # closed, or an ssl.SSLSocket
                    or self._stopping or self.state_machine.current_state != "Sta6"
                    or not self.to_provider_queue.empty() or not self.event_queue.empty()):
                return False
            with contextlib.suppress(OSError):
                sock.sendall(P_DATA_TF(primitive).encode())
            return True

    def _read_pdu_data(self) -> None:
        """Read one PDU; a P-DATA-TF of an established association goes straight to DIMSE.

        pynetdicom copies each P-DATA-TF four times on its way to the data set file (joining its
        header and body, into ``bytes``, slicing each fragment out, slicing the control byte off)
        and passes it through the event queue and the state machine, whose only action for it
        in Sta6 is handing it to DIMSE (DT-2). Here the fragments are views of the body as it was
        read, handed to DIMSE at once; only when pynetdicom's path would do the same: in Sta6,
        with no event or PDU queued before it, and nobody listening for received PDUs or bytes.
        Every other PDU, and every PDU in any other case, takes pynetdicom's path.
        """
        if (self.state_machine.current_state != "Sta6" or not self.event_queue.empty()
                or not self._recv_pdu.empty() or self.assoc.get_handlers(evt.EVT_PDU_RECV)
                or self.assoc.get_handlers(evt.EVT_DATA_RECV)):
            super()._read_pdu_data()
            return
        pdu = read_pdu(cast(Readable, self.socket))
        if isinstance(pdu, str):  # the event: the connection closed (Evt17), or an invalid PDU (Evt19)
            self.event_queue.put(pdu)
        elif isinstance(pdu, P_DATA):
            self.assoc.dimse.receive_primitive(pdu)
        else:
            try:
                decoded, event = self._decode_pdu(pdu)
            except Exception:  # as pynetdicom: an undecodable PDU is an invalid one
                log.warning("association %s: a PDU could not be decoded", self.assoc.name, exc_info=True)
                self.event_queue.put(EVENT_INVALID_PDU)
                return
            self.event_queue.put(event)
            self._recv_pdu.put(decoded)

    def waits_for_input(self) -> bool:
        """Whether the next pass waits in ``select()`` when it has nothing to do: an open
        connection to wait on, in neither Sta13 (:meth:`_is_transport_event`) nor Sta1 (pynetdicom
        closes the socket after a release without letting go of the object, and ``select()`` on
        it fails at once)."""
        sock = getattr(self.socket, "socket", None)
        return (self.state_machine.current_state not in ("Sta1", "Sta13")
                and isinstance(sock, socket.socket) and sock.fileno() != -1)

    def idle_timer_stopped(self) -> None:
        self._idle_timer.stop()

    def idle_timer_restarted(self) -> None:
        self._idle_timer.restart()

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            self._bell.close()
            self._wake_association()  # its reactor checks whether this thread is alive

    def _is_transport_event(self) -> bool:
        """pynetdicom's check, after waiting for data when there is nothing else to do."""
        if self.event_queue.empty() and not self._stopping and self.state_machine.current_state != "Sta13":
            self._wait_for_input()
        return bool(super()._is_transport_event())

    def _wait_for_input(self) -> None:
        sock = getattr(self.socket, "socket", None)
        if not isinstance(sock, socket.socket) or _buffered(self.socket, sock):
            return
        timeout = max(MIN_WAIT_S, min(WAIT_S, self.artim_timer.remaining))
        try:
            bell = self._bell.fileno()
            readable, _, _ = select.select([sock.fileno(), bell], [], [], timeout)
        except (OSError, ValueError):  # closed meanwhile: pynetdicom's own check reports it
            return
        if bell in readable:
            self._bell.drain()


def _send_lock(association_socket: object) -> contextlib.AbstractContextManager[object]:
    """The lock a door socket's sends and its closing take (``GuardedSocket.send_lock``)."""
    lock = getattr(association_socket, "send_lock", None)
    return lock if lock is not None else contextlib.nullcontext()


def _buffered(association_socket: object, sock: socket.socket) -> bool:
    """Data already read off the socket: a replayed request, or TLS records decrypted ahead."""
    if getattr(association_socket, "has_buffered_data", False):
        return True
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0


class WakefulDIMSE(DIMSEServiceProvider):
    """The association thread's source of requests: a wait on an event, not a 1 ms poll.

    It serves a C-STORE request on the DUL thread that decoded it where it may
    (:meth:`_serve_here`), and sends a plain C-STORE response encoded directly
    (:mod:`node.store_response`) unless someone listens for ``EVT_DIMSE_SENT``, which needs
    pynetdicom's message object; on the serving thread, when :meth:`WakefulDUL.send_now` may,
    instead of through the DUL thread's queue.
    """

    def __init__(self, assoc: Association, wake: threading.Event,
                 on_data_set: Callable[[object], None] | None = None) -> None:
        super().__init__(assoc)
        self._wake = wake
        self._on_data_set = on_data_set
        self.msg_queue = ServingQueue(wake.set, self._queued, self._serve_here)

    def get_msg(self, block: bool = False) -> Any:
        if block:
            return super().get_msg(block=True)
        self._wake.clear()  # before looking: a put after this line sets it again
        item = super().get_msg(block=False)
        if item[1] is None and not self._other_work():
            self._wake.wait(WAIT_S)
            item = super().get_msg(block=False)
        _after_a_message.pending = item[1] is not None
        return item

    def _queued(self, item: Any) -> None:
        """A message was handed to the association thread: give its data set file (a C-STORE's) to
        ``on_data_set`` on this, the DUL thread, which has nothing to do until the handler answers."""
        received = getattr(item[1], "_dataset_file", None)
        if received is not None and self._on_data_set is not None:
            self._on_data_set(received)

    def _serve_here(self, item: tuple[int, Any]) -> bool:
        """Serve a C-STORE request on the DUL thread that decoded it, instead of handing it to the
        association thread; True if it was.

        The peer waits for the answer, so this thread has nothing else to do meanwhile, and the
        hand-off (a queue, a wake-up, the other thread taking the GIL) is spared. Only when the
        association thread would serve it at once: established, no release sent, its reactor not
        paused for the node's own requests, nothing queued before it. The idle timer stands still
        while the handler runs (the association thread would not check it while serving either).
        """
        context_id, primitive = item
        assoc, dul = self.assoc, self.assoc.dul
        if not (isinstance(primitive, C_STORE) and primitive.is_valid_request
                and threading.current_thread() is dul and isinstance(dul, WakefulDUL)
                and context_id in assoc._accepted_cx  # noqa: SLF001 - else pynetdicom aborts: the other thread's job
                and assoc.is_established and not assoc._sent_release  # noqa: SLF001 - the reactor's own checks
                and assoc._reactor_checkpoint.is_set()  # noqa: SLF001
                and self.msg_queue.empty() and dul.to_user_queue.empty()):
            return False
        dul.idle_timer_stopped()
        try:
            assoc._serve_request(primitive, context_id)  # noqa: SLF001
        finally:
            dul.idle_timer_restarted()
        return True

    def send_msg(self, primitive: Any, context_id: int) -> None:
        pdata = None
        if not self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
            pdata = store_response_pdata(primitive, context_id, self.maximum_pdu_size)
        if pdata is None:
            super().send_msg(primitive, context_id)
        elif not (isinstance(self.dul, WakefulDUL) and self.dul.send_now(pdata)):
            self.dul.send_pdu(pdata)

    def _other_work(self) -> bool:
        """Something the association's reactor checks besides messages (release, abort, the end)."""
        dul = self.assoc.dul
        return not dul.to_user_queue.empty() or not dul.is_alive() or bool(self.assoc._kill)  # noqa: SLF001 - the reactor's own flag


def _kill_from_any_thread(assoc: Association) -> None:
    """Make the association's ``kill`` safe to call on its DUL thread.

    pynetdicom's ``kill`` (which a blocking ``abort`` calls) waits for the DUL thread to end. On
    that thread, where requests are now served (:meth:`WakefulDIMSE._serve_here`, whose error path
    aborts), it would wait for itself forever; there the waiting is handed to a thread of its own,
    and the DUL thread goes on to send the abort and reach the state where it may stop.
    """
    kill = assoc.kill

    def kill_here_or_aside() -> None:
        if threading.current_thread() is assoc.dul:
            threading.Thread(target=kill, name=f"{threading.current_thread().name}-kill", daemon=True).start()
        else:
            kill()

    vars(assoc)["kill"] = kill_here_or_aside


@functools.cache
def supported() -> bool:
    """Whether this pynetdicom has the internals these classes build on (checked once)."""
    if vars(association_module).get("time") not in (time, _REACTOR_CLOCK):
        return False
    if vars(dul_module).get("time") not in (time, _DUL_CLOCK):
        return False
    for cls, names in _INTERNALS.items():
        probe: object = cls
        for name in names:
            if not hasattr(probe, name) and name not in _instance_attributes(cls):
                return False
    return True


def _instance_attributes(cls: type) -> set[str]:
    init = getattr(cls, "__init__", None)
    code = getattr(init, "__code__", None)
    return set(code.co_names) if code is not None else set()


def make_wakeful(assoc: Association, on_data_set: Callable[[object], None] | None = None) -> bool:
    """Give a new (not yet started) acceptor association the event-driven providers.

    ``on_data_set`` is called on the DUL thread with the file of each received C-STORE data set,
    once the request is on its way to the handler (the node starts its fsync there).

    Returns False, leaving pynetdicom's own, where this pynetdicom differs from the one they were
    written for."""
    if not supported():
        return False
    vars(association_module)["time"] = _REACTOR_CLOCK  # the module's own name for it, as it looks it up
    vars(dul_module)["time"] = _DUL_CLOCK
    wake = threading.Event()
    assoc.dul = WakefulDUL(assoc, wake.set)
    assoc.dimse = WakefulDIMSE(assoc, wake, on_data_set)
    _kill_from_any_thread(assoc)
    # pynetdicom's timeout setters configure the DUL's timers: configure the new DUL's.
    assoc.acse_timeout = assoc.acse_timeout
    assoc.network_timeout = assoc.network_timeout
    return True
