"""The AI result as a TID 1500 Imaging Measurement Report (Comprehensive 3D SR), IHE AIR style.

One SR per study and model holds every lesion: the observer is this installation (a device, with
its UID), the algorithm is named with its version (the model artifact's hash) and parameters, and
each lesion is a measurement group with its tracking identifier, finding site liver, the predicted
class as a coded qualitative evaluation (private scheme 99TRIPHASE, documented in
docs/CONFORMANCE.md), the probability of every class, the region on the source image, and the
roles and series used. VerificationFlag stays UNVERIFIED: a person has not signed it. A region drawn
on a frame of a multi-frame instance names that frame (Referenced Frame Number); the evidence lists
each instance once (a Hierarchical SOP Instance Reference has no frame numbers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from worker.results import identity
from worker.results.algorithm import AlgorithmInfo
from worker.results.references import SourceImage

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
class LesionResult:
    lesion_id: str
    label: str  # a class, or "indeterminate"
    probabilities: dict[str, float]
    roi_source: str
    region_image: SourceImage  # the source image (or frame of a multi-frame instance) the region is drawn on
    region_pixels: np.ndarray  # (N, 2) column, row polyline, closed
    roles_used: str  # e.g. "R=arterial (series ...), G=delayed (...), B=pre (...)"


def _group(study_uid: str, result: LesionResult,
           algorithm: AlgorithmInfo) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.asarray(result.region_pixels, dtype=float),
        source_image=hd.sr.SourceImageForRegion.from_source_image(result.region_image.header,
                                                                  referenced_frame_numbers=result.region_image.frames),
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
    add_text_evaluations(group, [(ROLES_USED, result.roles_used), (ROI_SOURCE, result.roi_source),
                                 (DISCLAIMER, NOT_FOR_DIAGNOSTIC_USE)])
    return group


def add_text_evaluations(group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations,
                         items: Sequence[tuple[hd.sr.CodedConcept, str]]) -> None:
    """Append TEXT rows (name, text) to a measurement group's container, after its other rows.

    TID 1410 allows free-text qualitative evaluations, but highdicom's template takes coded ones
    only (``QualitativeEvaluation`` is a CODE item and its type is checked), and no other argument
    of the template carries text. So this is the one place that edits a built template; the rows
    are documented in docs/CONFORMANCE.md.
    """
    container = group[0]
    for concept, text in items:
        container.ContentSequence.append(hd.sr.TextContentItem(
            name=concept, value=text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))


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
    return hd.sr.Comprehensive3DSR(
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
        manufacturer_model_name=algorithm.name[:64],
        software_versions=software_versions(algorithm),
        contributing_equipment=[processing_equipment(algorithm)],
        coding_schemes=[private_scheme()],
    )


def private_scheme() -> CodingSchemeIdentificationItem:
    """The identification of our private coding scheme, which every SR that uses it must carry."""
    return CodingSchemeIdentificationItem(
        designator=PRIVATE_SCHEME, name="triphase lesion classes and result concepts",
        responsible_organization="triphase project (docs/CONFORMANCE.md)")


def software_versions(algorithm: AlgorithmInfo) -> list[str]:
    """SoftwareVersions of our outputs: triphase's version, then the model's (its content hash)."""
    return [algorithm.software_version, algorithm.version[:64]]


def processing_equipment(algorithm: AlgorithmInfo) -> hd.ContributingEquipment:
    """The algorithm as contributing (processing) equipment, with its version and the use statement."""
    return hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=algorithm.name[:64],
        software_versions=software_versions(algorithm),
        contribution_description=NOT_FOR_DIAGNOSTIC_USE[:64],
    )
