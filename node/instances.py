"""From a parsed header to the checked identity and the database record of an instance.

The C-STORE handler, start-up recovery and batch import all need the same two steps; doing them in
one place keeps the UID checks (the guard in front of every spool path) identical everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from db.repository import InstanceRecord
from node.header import Header
from node.spool import StoredFile
from node.uids import check_uid


@dataclass(frozen=True)
class InstanceIdentity:
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str


def checked_identity(header: Header) -> InstanceIdentity:
    """The four UIDs of an instance, each safe as a path component; raises InvalidUID."""
    return InstanceIdentity(
        study_uid=check_uid(header.study_uid, "Study Instance UID"),
        series_uid=check_uid(header.series_uid, "Series Instance UID"),
        sop_instance_uid=check_uid(header.sop_instance_uid, "SOP Instance UID"),
        sop_class_uid=check_uid(header.sop_class_uid, "SOP Class UID"),
    )


def instance_record(header: Header, identity: InstanceIdentity, stored: StoredFile, transfer_syntax: str, *,
                    calling_ae: str | None = None, association_id: int | None = None) -> InstanceRecord:
    return InstanceRecord(
        study_uid=identity.study_uid, series_uid=identity.series_uid,
        sop_instance_uid=identity.sop_instance_uid, sop_class_uid=identity.sop_class_uid,
        transfer_syntax_uid=transfer_syntax, path=stored.relative_path, size_bytes=stored.size_bytes,
        sha256=stored.sha256, patient_id=header.patient_id, accession_number=header.accession_number,
        study_date=header.study_date, modality=header.modality, series_number=header.series_number,
        series_description=header.series_description, calling_ae=calling_ae, association_id=association_id,
    )
