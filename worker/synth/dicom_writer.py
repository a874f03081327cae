"""Part-10 files for CT Image, MR Image and Secondary Capture storage, written quickly.

A series is written from one dataset that holds every series-level attribute; only the handful of
per-image attributes (UIDs, number, position, time, pixels) change between files. Copying a dataset
per image would cost more than rendering it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

from worker.synth.geometry import Grid

log = logging.getLogger(__name__)

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
IMPLEMENTATION_VERSION = "TRIPHASE_SYNTH"


def make_uid(*parts: object) -> str:
    """A UID derived only from ``parts``, so the same seed gives the same UIDs."""
    return str(generate_uid(entropy_srcs=["triphase-synth", *map(str, parts)]))


@dataclass(frozen=True)
class StudyHeader:
    """The patient and study attributes every object of one study shares."""

    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    age: str
    weight_kg: float
    study_uid: str
    study_date: str
    study_time: str
    accession: str
    study_id: str
    description: str
    frame_of_reference_uid: str
    charset: str
    manufacturer: str
    institution: str
    station: str
    serial: str


def format_time(seconds_of_day: float) -> str:
    """HHMMSS.ffffff with a fixed number of decimals (TM), wrapping past midnight."""
    s = seconds_of_day % 86400
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{int(h):02d}{int(m):02d}{sec:09.6f}"


def study_dataset(study: StudyHeader, sop_class: str, modality: str, model: str, software: str) -> Dataset:
    """The patient, study, equipment and SOP-common modules."""
    ds = Dataset()
    ds.SpecificCharacterSet = study.charset
    ds.SOPClassUID = sop_class
    ds.InstanceCreationDate = study.study_date
    ds.InstanceCreationTime = study.study_time
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.AccessionNumber = study.accession
    ds.Modality = modality
    ds.Manufacturer = study.manufacturer
    ds.InstitutionName = study.institution
    ds.ReferringPhysicianName = "SYNTH^REFERRER"
    ds.StationName = study.station
    ds.StudyDescription = study.description
    ds.ManufacturerModelName = model
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.birth_date
    ds.PatientSex = study.sex
    ds.PatientAge = study.age
    ds.PatientWeight = study.weight_kg
    ds.DeviceSerialNumber = study.serial
    ds.SoftwareVersions = software
    ds.StudyInstanceUID = study.study_uid
    ds.StudyID = study.study_id
    ds.BodyPartExamined = "ABDOMEN"
    return ds


def geometry_attributes(ds: Dataset, grid: Grid) -> None:
    """Image plane module attributes shared by every image of ``grid``."""
    ds.ImageOrientationPatient = grid.orientation
    ds.PixelSpacing = list(grid.pixel_spacing)
    ds.SliceThickness = round(grid.slice_thickness, 3)
    ds.Rows = grid.rows
    ds.Columns = grid.columns


def pixel_attributes(ds: Dataset, *, bits_stored: int, signed: bool) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0


@dataclass
class Instance:
    """The per-image attributes of one file; ``extra`` are set as dataset attributes."""

    sop_uid: str
    number: int
    position: list[float] | None
    pixels: np.ndarray
    extra: Mapping[str, Any]


def write_series(directory: Path, template: Dataset, instances: Iterable[Instance], *,
                 slice_location_axis: int | None = 2) -> list[Path]:
    """Write each instance as ``<series number>-<instance number>.dcm`` by mutating ``template``.

    Attributes named in an instance's ``extra`` with the value ``None`` are removed for that image,
    so one series can hold images with and without, for example, contrast attributes.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = template.SOPClassUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    template.file_meta = meta
    paths: list[Path] = []
    series_number = int(template.SeriesNumber)
    for inst in instances:
        ds = template
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID = UID(inst.sop_uid)
        ds.InstanceNumber = inst.number
        if inst.position is not None:
            ds.ImagePositionPatient = inst.position
            if slice_location_axis is not None:
                ds.SliceLocation = round(inst.position[slice_location_axis], 4)
        for key, value in inst.extra.items():
            if value is None:
                if key in ds:
                    delattr(ds, key)
            else:
                setattr(ds, key, value)
        ds.PixelData = np.ascontiguousarray(inst.pixels).tobytes()
        path = directory / f"{series_number:04d}-{inst.number:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    log.debug("wrote %d files of series %s", len(paths), series_number)
    return paths


def header_copy(template: Dataset, inst: Instance) -> Dataset:
    """A pixel-less copy of one written image's header, as SEG and other references need."""
    ds = Dataset()
    for elem in template:
        if elem.keyword != "PixelData":
            ds.add(elem.__class__(elem.tag, elem.VR, elem.value) if elem.VR != "SQ" else elem)
    ds.SOPInstanceUID = inst.sop_uid
    ds.InstanceNumber = inst.number
    if inst.position is not None:
        ds.ImagePositionPatient = inst.position
    for key, value in inst.extra.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    return ds
