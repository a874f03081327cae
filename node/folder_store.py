"""A minimal storage SCP that keeps what it receives in a folder: the demo's stand-in PACS.

It accepts every storage SOP class from anyone and writes each instance durably (the node's own
spool code) under ``<folder>/<Study>/<Series>/<SOP>.dcm``; nothing more. Real deployments send
to a real PACS.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

from node.header import UnreadableDataset, read_header
from node.intake import dataset_bytes
from node.sop_classes import VERIFICATION
from node.spool import Spool
from node.statuses import StoreStatus
from node.uids import InvalidUID, check_uid


def _echo(event: Event) -> int:
    return int(StoreStatus.SUCCESS)


PREAMBLE = b"\x00" * 128 + b"DICM"


class FolderStore:
    def __init__(self, folder: Path, *, ae_title: str = "DEMOPACS") -> None:
        self.spool = Spool(folder)
        self.ae = AE(ae_title=ae_title)
        self.ae.add_supported_context(VERIFICATION)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                self.ae.add_supported_context(context.abstract_syntax, AllTransferSyntaxes)
        self.received: list[Path] = []
        self._server: ThreadedAssociationServer | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the folder store has not been started")
        return int(self._server.server_address[1])

    def start(self, port: int = 0, *, ssl_context: ssl.SSLContext | None = None) -> FolderStore:
        handlers: list[EventHandlerType] = [(evt.EVT_C_STORE, self._store), (evt.EVT_C_ECHO, _echo)]
        self._server = self.ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers,
                                            ssl_context=ssl_context)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    def _store(self, event: Event) -> int:
        request = event.request
        if not isinstance(request, C_STORE):
            return int(StoreStatus.CANNOT_UNDERSTAND)
        # As received, whether pynetdicom kept it in memory or (a node in this process) in a file.
        stream = dataset_bytes(event)
        try:
            header = read_header(stream, str(event.context.transfer_syntax))
            study = check_uid(header.study_uid, "study")
            series = check_uid(header.series_uid, "series")
            instance = check_uid(header.sop_instance_uid, "instance")
        except (UnreadableDataset, InvalidUID):
            return int(StoreStatus.CANNOT_UNDERSTAND)
        stored = self.spool.store(study, series, instance, (PREAMBLE + encode_file_meta(event.file_meta), stream))
        self.received.append(self.spool.absolute(stored.relative_path))
        return int(StoreStatus.SUCCESS)
