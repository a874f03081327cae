"""Sending side: C-ECHO and C-STORE to a remote node (``triphase echo`` / ``send``, write-back).

Files are sent as they are on disk (pynetdicom reads the encoded data set, no decode), over as
few associations as the 128-context limit allows, with TCP_NODELAY set (dcmtk-based peers and
Nagle's algorithm otherwise add ~40 ms per instance). Every response status is checked.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_ASSOCIATE

from node.settings import PeerSettings
from node.sop_classes import STUDY_ROOT_FIND, STUDY_ROOT_MOVE, VERIFICATION

log = logging.getLogger(__name__)

MAX_CONTEXTS = 128
_ADDRESS = re.compile(r"(?P<aet>[^@]{1,16})@(?P<host>\[[^\]]+\]|[^:@]+):(?P<port>\d{1,5})")


class AddressError(ValueError):
    """A remote node is not written AET@HOST:PORT."""


@dataclass(frozen=True)
class RemoteNode:
    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> RemoteNode:
        match = _ADDRESS.fullmatch(text.strip())
        if not match or not 0 < int(match["port"]) < 65536:
            raise AddressError(f"{text!r} is not AET@HOST:PORT")
        return cls(match["aet"].strip(), match["host"].strip("[]"), int(match["port"]))

    @classmethod
    def resolve(cls, text: str, peers: Sequence[PeerSettings]) -> RemoteNode:
        """``AET@HOST:PORT``, or the name of a configured peer that has a host and a port.

        Raises :class:`AddressError` for a malformed address, LookupError for an unknown name.
        """
        if "@" in text:
            return cls.parse(text)
        for peer in peers:
            if peer.name == text and peer.host and "/" not in peer.host and peer.port:  # a range is no target
                return cls(peer.ae_title, peer.host, peer.port)
        raise LookupError(f"{text!r} is neither AET@HOST:PORT nor a configured peer with host and port")

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


class AssociationFailed(ConnectionError):
    """The remote node could not be reached, or rejected or aborted the association."""


def set_nodelay(assoc: Association) -> None:
    sock = assoc.dul.socket.socket if assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def client_tls_context(*, ca_file: str | None = None, cert_file: str | None = None,
                       key_file: str | None = None) -> ssl.SSLContext:
    """TLS for DICOM associations (PS3.15 secure transport): the server is verified, and our
    certificate is presented when the destination requires one."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def _associate(ae: AE, remote: RemoteNode, tls: ssl.SSLContext | None) -> Association:
    tls_args = (tls, remote.host) if tls is not None else None
    return ae.associate(remote.host, remote.port, ae_title=remote.ae_title, tls_args=tls_args)


def _ae(calling_ae: str, timeout_s: float) -> AE:
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout_s
    return ae


def echo(remote: RemoteNode, *, calling_ae: str, timeout_s: float = 10.0, tls: ssl.SSLContext | None = None) -> int:
    """C-ECHO; returns the response status (0 = success) or raises AssociationFailed."""
    ae = _ae(calling_ae, timeout_s)
    ae.add_requested_context(VERIFICATION)
    assoc = _associate(ae, remote, tls)
    if not assoc.is_established:
        raise AssociationFailed(_why_not(assoc, remote))
    try:
        status = assoc.send_c_echo()
        if not status or "Status" not in status:
            raise AssociationFailed(f"no C-ECHO response from {remote}")
        return int(status.Status)
    finally:
        assoc.release()


def _why_not(assoc: Association, remote: RemoteNode) -> str:
    rejection = _rejection(assoc)
    if rejection is not None:
        reason = f"{rejection.result_str}, {rejection.source_str}: {rejection.reason_str}"
        return f"{remote} rejected the association ({reason}; is our AE title configured there?)"
    try:  # pynetdicom reports a refused connection as an abort; tell the two apart
        socket.create_connection((remote.host, remote.port), timeout=3).close()
    except OSError as exc:
        return f"cannot reach {remote}: {exc.strerror or exc}"
    return f"{remote} aborted the association"


def _rejection(assoc: Association) -> A_ASSOCIATE | None:
    """The peer's A-ASSOCIATE-RJ, also where pynetdicom called it an abort.

    pynetdicom's requestor checks that its socket is still connected after sending the request;
    a peer that rejects at once can have had its answer read, and the socket closed, by the
    reading thread before that check, and the requestor then aborts with the rejection left
    unread in its queue.
    """
    answers = [assoc.acceptor.primitive]
    if not assoc.is_rejected:
        with contextlib.suppress(AttributeError):
            answers += list(assoc.dul.to_user_queue.queue)
    for answer in answers:
        if isinstance(answer, A_ASSOCIATE) and answer.result in (0x01, 0x02):
            return answer
    return None


@dataclass(frozen=True)
class FileToSend:
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


@dataclass
class SendResult:
    sent: list[tuple[Path, int]] = field(default_factory=list)  # (file, status)
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (file, why)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # not DICOM Part-10

    @property
    def ok(self) -> bool:
        return not self.failed and all(status in (0x0000, 0xB000, 0xB007, 0xB006) for _, status in self.sent)

    @property
    def refused(self) -> list[tuple[Path, int]]:
        return [(p, s) for p, s in self.sent if s not in (0x0000, 0xB000, 0xB007, 0xB006)]


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def scan(paths: Iterable[Path], result: SendResult) -> list[FileToSend]:
    """Read the file meta of each file; files that are not DICOM Part-10 are noted and skipped."""
    found: list[FileToSend] = []
    for path in iter_files(paths):
        try:
            meta = read_file_meta_info(path)
            found.append(FileToSend(path, str(meta.MediaStorageSOPClassUID),
                                    str(meta.MediaStorageSOPInstanceUID), str(meta.TransferSyntaxUID)))
        except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, not fatal
            result.skipped.append((path, f"not a DICOM file: {type(exc).__name__}"))
    return found


def _batches(files: list[FileToSend]) -> Iterator[tuple[list[tuple[str, str]], list[FileToSend]]]:
    """Group files so each association needs at most 128 (SOP class, transfer syntax) contexts."""
    contexts: list[tuple[str, str]] = []
    batch: list[FileToSend] = []
    for item in sorted(files, key=lambda f: (f.sop_class_uid, f.transfer_syntax_uid)):
        key = (item.sop_class_uid, item.transfer_syntax_uid)
        if key not in contexts:
            if len(contexts) == MAX_CONTEXTS:
                yield contexts, batch
                contexts, batch = [], []
            contexts.append(key)
        batch.append(item)
    if batch:
        yield contexts, batch


def send(
    files: list[FileToSend], remote: RemoteNode, *, calling_ae: str, timeout_s: float = 30.0,
    result: SendResult | None = None, progress: Callable[[FileToSend, int | None], None] | None = None,
    tls: ssl.SSLContext | None = None,
) -> SendResult:
    """C-STORE ``files``; each response status is kept in the result, nothing is assumed."""
    result = result or SendResult()
    for contexts, batch in _batches(files):
        ae = _ae(calling_ae, timeout_s)
        for sop_class, ts in contexts:
            ae.add_requested_context(sop_class, [ts])
        assoc = _associate(ae, remote, tls)
        if not assoc.is_established:
            why = _why_not(assoc, remote)
            result.failed.extend((f.path, why) for f in batch)
            continue
        set_nodelay(assoc)
        try:
            for item in batch:
                status = _store_one(assoc, item)
                if isinstance(status, str):
                    result.failed.append((item.path, status))
                else:
                    result.sent.append((item.path, status))
                if progress:
                    progress(item, status if isinstance(status, int) else None)
                if not assoc.is_established:
                    rest = batch[batch.index(item) + 1:]
                    result.failed.extend((f.path, "association lost") for f in rest)
                    break
        finally:
            if assoc.is_established:
                assoc.release()
    return result


def _store_one(assoc: Association, item: FileToSend) -> int | str:
    accepted = [cx for cx in assoc.accepted_contexts
                if cx.abstract_syntax == item.sop_class_uid and UID(item.transfer_syntax_uid) in cx.transfer_syntax]
    if not accepted:
        return "the remote node did not accept this SOP class / transfer syntax"
    try:
        status = assoc.send_c_store(item.path)
    except Exception as exc:  # noqa: BLE001 - a file that cannot be sent fails alone, not the batch
        return f"C-STORE failed: {type(exc).__name__}: {exc}"
    if not status or "Status" not in status:
        return "no C-STORE response (timeout or aborted)"
    return int(status.Status)


def _query_ae(calling_ae: str, timeout_s: float) -> AE:
    ae = _ae(calling_ae, timeout_s)
    ae.add_requested_context(STUDY_ROOT_FIND)
    ae.add_requested_context(STUDY_ROOT_MOVE)
    return ae


def find_studies(remote: RemoteNode, query: dict[str, str], *, calling_ae: str, timeout_s: float = 30.0,
                 tls: ssl.SSLContext | None = None) -> list[dict[str, str]]:
    """Study-level C-FIND (Study Root); returns the matches' identifying attributes."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    for keyword in ("StudyInstanceUID", "PatientID", "AccessionNumber", "StudyDate", "ModalitiesInStudy",
                    "StudyDescription"):
        setattr(identifier, keyword, "")
    for keyword, value in query.items():
        setattr(identifier, keyword, value)
    assoc = _associate(_query_ae(calling_ae, timeout_s), remote, tls)
    if not assoc.is_established:
        raise AssociationFailed(_why_not(assoc, remote))
    found: list[dict[str, str]] = []
    try:
        for status, match in assoc.send_c_find(identifier, STUDY_ROOT_FIND):
            if status is None or "Status" not in status:
                raise AssociationFailed(f"no C-FIND response from {remote}")
            code = int(status.Status)
            if code in (0xFF00, 0xFF01) and match is not None:
                found.append({k: str(match.get(k, "")) for k in ("StudyInstanceUID", "PatientID", "AccessionNumber",
                                                                  "StudyDate", "ModalitiesInStudy")})
            elif code not in (0x0000, 0xFF00, 0xFF01):
                raise AssociationFailed(f"C-FIND refused by {remote}: status 0x{code:04X}")
    finally:
        assoc.release()
    return found


def move_study(remote: RemoteNode, study_uid: str, destination_ae: str, *, calling_ae: str,
               timeout_s: float = 600.0, tls: ssl.SSLContext | None = None) -> tuple[int, int]:
    """C-MOVE one study to ``destination_ae``; returns (completed, failed) sub-operations."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    assoc = _associate(_query_ae(calling_ae, timeout_s), remote, tls)
    if not assoc.is_established:
        raise AssociationFailed(_why_not(assoc, remote))
    completed = failed = 0
    final = None
    try:
        for status, _ in assoc.send_c_move(identifier, destination_ae, STUDY_ROOT_MOVE):
            if status is None or "Status" not in status:
                raise AssociationFailed(f"no C-MOVE response from {remote}")
            final = int(status.Status)
            completed = int(status.get("NumberOfCompletedSuboperations", completed) or completed)
            failed = int(status.get("NumberOfFailedSuboperations", failed) or failed)
    finally:
        assoc.release()
    if final not in (0x0000, 0xB000):
        raise AssociationFailed(f"C-MOVE of a study from {remote} ended with status 0x{(final or 0):04X}")
    return completed, failed
