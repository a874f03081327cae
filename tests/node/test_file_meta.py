"""The File Meta Information the node writes itself is byte for byte pydicom's."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import JPEG2000, CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import dimse_messages
from pynetdicom.dsutils import create_file_meta

from node import file_meta


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000])
@pytest.mark.parametrize("sop_instance", [generate_uid(), "1.2.3.4", "1.2.3.45"])  # odd and even lengths
def test_same_bytes_as_pydicom(transfer_syntax: str, sop_instance: str) -> None:
    values = {"sop_class_uid": CTImageStorage, "sop_instance_uid": sop_instance, "transfer_syntax": transfer_syntax}
    expected = BytesIO()
    write_file_meta_info(expected, create_file_meta(**values))
    ours = BytesIO()
    file_meta.write_file_meta_info(ours, file_meta.create_file_meta(**values))
    assert ours.getvalue() == expected.getvalue()


def test_a_pydicom_dataset_is_still_written_by_pydicom() -> None:
    meta = create_file_meta(sop_class_uid=CTImageStorage, sop_instance_uid="1.2.3",
                            transfer_syntax=ExplicitVRLittleEndian)
    expected, ours = BytesIO(), BytesIO()
    write_file_meta_info(expected, meta)
    file_meta.write_file_meta_info(ours, meta)
    assert ours.getvalue() == expected.getvalue()


def test_installed_in_pynetdicoms_receive_path() -> None:
    file_meta.install()
    assert vars(dimse_messages)["create_file_meta"] is file_meta.create_file_meta
    assert vars(dimse_messages)["write_file_meta_info"] is file_meta.write_file_meta_info
