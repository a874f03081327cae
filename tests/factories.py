"""Small, valid DICOM instances for node tests (the synthetic-study generator makes real studies)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def ct_dataset(study_uid: str, series_uid: str, sop_uid: str | None = None, *, index: int = 0,
               size: int = 32, patient_id: str = "SYNTH0001") -> Dataset:
    sop_uid = sop_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = study_uid + ".1" if len(study_uid) < 62 else generate_uid()
    ds.PatientName = "SYNTH^NODETEST"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = "ACC0001"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.SeriesDescription = "Abdomen"
    ds.InstanceNumber = index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [0.0, 0.0, float(index * 5)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.8, 0.8]
    ds.SliceThickness = 5.0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.KVP = 120
    ds.PixelData = (np.arange(size * size, dtype=np.int16).reshape(size, size) + index).tobytes()
    return ds


def write_study(folder: Path, *, series: int = 2, per_series: int = 3, size: int = 32) -> tuple[str, list[Path]]:
    """A study of ``series`` x ``per_series`` CT instances written as Part-10 files."""
    study_uid = generate_uid()
    paths: list[Path] = []
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(series):
        series_uid = generate_uid()
        for i in range(per_series):
            ds = ct_dataset(study_uid, series_uid, index=i, size=size)
            ds.SeriesNumber = s + 1
            path = folder / f"s{s}_i{i}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return study_uid, paths


def _scaled_geometry(ds: Dataset, factor: int) -> None:
    """Pixel spacing divided by ``factor`` and each frame's top-left pixel centre moved to match."""
    shared = ds.SharedFunctionalGroupsSequence[0]
    orientation = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    measures = shared.PixelMeasuresSequence[0]
    row_spacing, column_spacing = (float(v) for v in measures.PixelSpacing)
    measures.PixelSpacing = [round(row_spacing / factor, 6), round(column_spacing / factor, 6)]
    shift = ((column_spacing - column_spacing / factor) / 2 * orientation[:3]
             + (row_spacing - row_spacing / factor) / 2 * orientation[3:])
    for item in ds.PerFrameFunctionalGroupsSequence:
        plane = item.PlanePositionSequence[0]
        plane.ImagePositionPatient = [round(float(v), 4) for v in np.asarray(plane.ImagePositionPatient) - shift]


def upscaled_multiframe(source: Path, target: Path, factor: int) -> int:
    """``source`` (a Legacy Converted Enhanced instance, explicit VR little endian) with every frame
    ``factor`` times as many rows and columns over the same field of view; returns the file's size.

    A large multi-frame instance for tests, made cheaply: the header is written by pydicom and the
    Pixel Data element appended by hand, one enlarged frame at a time, so the test never holds the
    whole instance in memory either.
    """
    ds = pydicom.dcmread(source)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and int(ds.BitsAllocated) == 16
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    del ds.PixelData
    assert max(ds.keys()) < 0x7FE00010, "Pixel Data must be the last element"
    ds.Rows, ds.Columns = int(ds.Rows) * factor, int(ds.Columns) * factor
    _scaled_geometry(ds, factor)
    ds.save_as(target, enforce_file_format=True)
    stored = frames.dtype.newbyteorder("<")
    block = np.ones((factor, factor), dtype=stored)
    with target.open("ab") as out:
        out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, frames.size * factor * factor * 2))
        for frame in frames:
            out.write(np.kron(frame.astype(stored), block).tobytes())
    return target.stat().st_size
