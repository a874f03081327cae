"""A minimal storage SCP that keeps what it receives in a folder: the demo's stand-in PACS.

It accepts every storage SOP class from anyone and writes each instance durably (the node's own
spool code) under ``<folder>/<Study>/<Series>/<SOP>.dcm``; nothing more. Real deployments send
to a real PACS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from node.header import UnreadableDataset, read_header
from node.receiver import PREAMBLE
from node.spool import Spool
from node.statuses import StoreStatus
from node.uids import InvalidUID, check_uid


class FolderStore:
    def __init__(self, folder: Path, *, ae_title: str = "DEMOPACS") -> None:
        self.spool = Spool(folder)
        self.ae = AE(ae_title=ae_title)
        self.ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            self.ae.add_supported_context(context.abstract_syntax, AllTransferSyntaxes)
        self.received: list[Path] = []
        self._server: Any = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self, port: int = 0, *, ssl_context: Any = None) -> FolderStore:
        handlers = [(evt.EVT_C_STORE, self._store), (evt.EVT_C_ECHO, lambda event: 0)]
        self._server = self.ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers,
                                            ssl_context=ssl_context)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    def _store(self, event: Any) -> int:
        from pynetdicom.dsutils import encode_file_meta  # noqa: PLC0415

        stream = event.request.DataSet.getvalue()
        try:
            header = read_header(stream, str(event.context.transfer_syntax))
            uids = [check_uid(v, name) for v, name in ((header.study_uid, "study"), (header.series_uid, "series"),
                                                       (header.sop_instance_uid, "instance"))]
        except (UnreadableDataset, InvalidUID):
            return int(StoreStatus.CANNOT_UNDERSTAND)
        stored = self.spool.store(*uids, (PREAMBLE + encode_file_meta(event.file_meta), stream))
        self.received.append(self.spool.absolute(stored.relative_path))
        return int(StoreStatus.SUCCESS)
