"""The AI result as a TID 1500 Imaging Measurement Report (Comprehensive 3D SR), IHE AIR style.

One SR per study and model holds every lesion: the observer is this installation (a device, with
its UID), the algorithm is named with its version (the model artifact's hash) and parameters, and
each lesion is a measurement group with its tracking identifier, finding site liver, the predicted
class as a coded qualitative evaluation (private scheme 99TRIPHASE, documented in
docs/CONFORMANCE.md), the probability of every class, the region on the source image, and the
roles and series used. VerificationFlag stays UNVERIFIED: a person has not signed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from worker.results import identity

PRIVATE_SCHEME = "99TRIPHASE"
INDETERMINATE = "indeterminate"
NOT_FOR_DIAGNOSTIC_USE = "Produced by an algorithm. Research use only: not for diagnostic use until validated."
MANUFACTURER = "triphase"


def label_code(label: str) -> hd.sr.CodedConcept:
    """A class label in the private coding scheme (code value = the label in upper case)."""
    meaning = "Indeterminate (the model abstained)" if label == INDETERMINATE else label.replace("_", " ")
    return hd.sr.CodedConcept(value=label.upper(), scheme_designator=PRIVATE_SCHEME, meaning=meaning)


def probability_concept(label: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=f"PROB_{label.upper()}", scheme_designator=PRIVATE_SCHEME,
                              meaning=f"Probability of {label.replace('_', ' ')}")


PREDICTED_CLASS = hd.sr.CodedConcept(value="PREDICTED_CLASS", scheme_designator=PRIVATE_SCHEME,
                                     meaning="Predicted lesion class")
ROLES_USED = hd.sr.CodedConcept(value="ROLES_USED", scheme_designator=PRIVATE_SCHEME,
                                meaning="Acquisitions used as colour channels")
ROI_SOURCE = hd.sr.CodedConcept(value="ROI_SOURCE", scheme_designator=PRIVATE_SCHEME, meaning="Lesion location source")
DISCLAIMER = hd.sr.CodedConcept(value="DISCLAIMER", scheme_designator=PRIVATE_SCHEME, meaning="Use statement")


@dataclass(frozen=True)
class AlgorithmInfo:
    name: str
    version: str  # the model artifact's content hash
    software_version: str
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LesionResult:
    lesion_id: str
    label: str  # a class, or "indeterminate"
    probabilities: dict[str, float]
    roi_source: str
    region_image: Dataset  # header of the source image the region is drawn on
    region_pixels: np.ndarray  # (N, 2) column, row polyline, closed
    roles_used: str  # e.g. "R=arterial (series ...), G=delayed (...), B=pre (...)"


def _group(study_uid: str, result: LesionResult, algorithm: AlgorithmInfo) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.asarray(result.region_pixels, dtype=float),
        source_image=hd.sr.SourceImageForRegion.from_source_image(result.region_image),
    )
    measurements = [
        hd.sr.Measurement(name=probability_concept(label), value=round(float(p), 6), unit=codes.UCUM.NoUnits,
                          algorithm_id=hd.sr.AlgorithmIdentification(name=algorithm.name, version=algorithm.version))
        for label, p in result.probabilities.items()
    ]
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=identity.tracking_uid(study_uid, algorithm.version, result.lesion_id), identifier=result.lesion_id),
        referenced_region=region,
        finding_type=codes.SCT.Lesion,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Liver)],
        algorithm_id=hd.sr.AlgorithmIdentification(name=algorithm.name, version=algorithm.version,
                                                   parameters=[f"{k}={v}" for k, v in algorithm.parameters.items()]),
        measurements=measurements,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=PREDICTED_CLASS, value=label_code(result.label))],
    )
    container = group[0]
    for concept, text in ((ROLES_USED, result.roles_used), (ROI_SOURCE, result.roi_source),
                          (DISCLAIMER, NOT_FOR_DIAGNOSTIC_USE)):
        container.ContentSequence.append(hd.sr.TextContentItem(
            name=concept, value=text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    return group


def build_sr(study_uid: str, results: Sequence[LesionResult], evidence: Sequence[Dataset], *,
             algorithm: AlgorithmInfo, device_uid: str, series_number: int = 7701,
             series_description: str = "AI liver lesion class (not for diagnostic use)") -> hd.sr.Comprehensive3DSR:
    """The report for one study and model; its UIDs depend only on (study, model version)."""
    if not results:
        raise ValueError("an SR needs at least one lesion result")
    modality = str(evidence[0].get("Modality", "CT"))
    procedure = codes.LN.MRIUnspecifiedBodyRegion if modality == "MR" else codes.LN.CTUnspecifiedBodyRegion
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid, name=algorithm.name, manufacturer_name=MANUFACTURER,
            model_name=algorithm.name, serial_number=algorithm.software_version),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=procedure,
        imaging_measurements=[_group(study_uid, r, algorithm) for r in results],
        title=codes.DCM.ImagingMeasurementReport,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(evidence),
        content=report[0],
        series_instance_uid=identity.sr_series_uid(study_uid, algorithm.version),
        series_number=series_number,
        sop_instance_uid=identity.sr_uid(study_uid, algorithm.version),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=series_description,
        institution_name=evidence[0].get("InstitutionName"),
    )
    add_provenance(sr, algorithm)
    scheme = Dataset()
    scheme.CodingSchemeDesignator = PRIVATE_SCHEME
    scheme.CodingSchemeName = "triphase lesion classes and result concepts"
    scheme.CodingSchemeResponsibleOrganization = "triphase project (docs/CONFORMANCE.md)"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def add_provenance(ds: Dataset, algorithm: AlgorithmInfo) -> None:
    """Name the algorithm as contributing equipment, with its version and the use statement."""
    equipment = Dataset()
    equipment.Manufacturer = MANUFACTURER
    equipment.ManufacturerModelName = algorithm.name[:64]
    equipment.SoftwareVersions = [algorithm.software_version, algorithm.version[:64]]
    equipment.ContributionDescription = NOT_FOR_DIAGNOSTIC_USE[:64]
    purpose = Dataset()
    purpose.CodeValue = codes.DCM.ProcessingEquipment.value
    purpose.CodingSchemeDesignator = "DCM"
    purpose.CodeMeaning = codes.DCM.ProcessingEquipment.meaning
    equipment.PurposeOfReferenceCodeSequence = [purpose]
    ds.ContributingEquipmentSequence = [equipment]
    ds.ManufacturerModelName = algorithm.name[:64]
    ds.SoftwareVersions = [algorithm.software_version, algorithm.version[:64]]
