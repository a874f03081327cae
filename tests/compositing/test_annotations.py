"""Lesion locations from the annotation objects that travel with studies: SEG, RTSTRUCT, SR."""

from __future__ import annotations

import csv
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from worker.grouping import group_paths, load_rules
from worker.grouping.series_info import scan_studies
from worker.roi import RoiSource, lesions_from_rtstruct
from worker.study_composites import build_composites, find_lesions
from worker.synth.context import StudyOptions
from worker.synth.run import generate_run

RULES = load_rules()


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], list[pydicom.Dataset]]:
    out = tmp_path_factory.mktemp("annotated")
    generate_run(out, StudyOptions(task="ct-histology", seed=31, difficulty=0.2, slices=20, matrix=64,
                                   style="siemens", extras=False), 1, [])
    folder = next(out.glob("study-*"))
    with (out / "labels.csv").open() as handle:
        truth = next(csv.DictReader(handle))
    segs = [p for p in folder.glob("*.dcm") if pydicom.dcmread(p, stop_before_pixels=True).Modality == "SEG"]
    for path in segs:
        path.unlink()  # these tests bring their own annotation
    portal_uid = next(r["series_uid"] for r in csv.DictReader((out / "motion.csv").open()) if r["role"] == "portal")
    images = sorted((pydicom.dcmread(p) for p in folder.glob("*.dcm")), key=lambda d: float(d.ImagePositionPatient[2]))
    portal = [d for d in images if d.SeriesInstanceUID == portal_uid]
    return folder, truth, portal


def _circle(centre: np.ndarray, radius: float, z: float, n: int = 24) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.c_[centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles), np.full(n, z)]


def test_rtstruct_contours_give_the_lesion(study, tmp_path: Path) -> None:
    folder, truth, portal = study
    centre = np.array([float(truth[f"center_{a}_mm"]) for a in "xyz"])
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = portal[0].StudyInstanceUID, generate_uid(), "RTSTRUCT"
    roi = Dataset()
    roi.ROINumber, roi.ROIName = 1, "HCC segment 8"
    ds.StructureSetROISequence = [roi]
    contours = []
    for dz, radius in ((-5.0, 4.0), (0.0, 8.0), (5.0, 5.0)):
        contour = Dataset()
        contour.ContourGeometricType = "CLOSED_PLANAR"
        points = _circle(centre, radius, centre[2] + dz)
        contour.NumberOfContourPoints = len(points)
        contour.ContourData = [f"{v:.2f}" for v in points.ravel()]
        contours.append(contour)
    item = Dataset()
    item.ReferencedROINumber = 1
    item.ContourSequence = contours
    ds.ROIContourSequence = [item]
    path = tmp_path / "rtstruct.dcm"
    ds.save_as(path, enforce_file_format=True)
    [lesion] = lesions_from_rtstruct(path)
    assert lesion.source is RoiSource.RTSTRUCT and lesion.label == "HCC segment 8"
    assert np.allclose(lesion.centre_mm, centre, atol=2.0)
    assert lesion.largest_slice_mm[2] == pytest.approx(centre[2], abs=0.01)  # the 8 mm contour
    assert lesion.size_mm == pytest.approx(16.0, abs=0.5)


def test_sr_image_region_gives_the_lesion(study, tmp_path: Path) -> None:
    folder, truth, portal = study
    centre = np.array([float(truth[f"center_{a}_mm"]) for a in "xyz"])
    reference = min(portal, key=lambda d: abs(float(d.ImagePositionPatient[2]) - centre[2]))
    origin = np.array(reference.ImagePositionPatient, dtype=float)
    spacing = [float(v) for v in reference.PixelSpacing]
    pixel = (centre[:2] - origin[:2]) / np.array([spacing[1], spacing[0]])  # (column, row)
    polygon = np.array([pixel + 6 * np.array([np.cos(a), np.sin(a)])
                        for a in np.linspace(0, 2 * np.pi, 12, endpoint=False)] + [pixel + [6, 0]])
    region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=polygon,
                               source_image=hd.sr.SourceImageForRegion.from_source_image(reference))
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="LESION-7"),
        referenced_region=region, finding_type=codes.SCT.Neoplasm)
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name="Reader^One"))),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=[group])
    sr = hd.sr.Comprehensive3DSR(evidence=[reference], content=report[0], series_instance_uid=generate_uid(),
                                 series_number=90, sop_instance_uid=generate_uid(), instance_number=1,
                                 manufacturer="Reading station")
    sr.save_as(folder / "annotation-sr.dcm")
    try:
        [series] = scan_studies([folder]).series.values()
        [grouping] = group_paths([folder], RULES).values()
        [lesion] = find_lesions(series, grouping)
        assert lesion.source is RoiSource.SR and lesion.lesion_id == "LESION-7"
        assert np.allclose(lesion.centre_mm[:2], centre[:2], atol=max(spacing) + 0.5)
        [result] = build_composites([folder], RULES, size=32).values()
        assert result.skipped is None and result.roi_source == "sr-image-region"
    finally:
        (folder / "annotation-sr.dcm").unlink()
