"""The AI result as an RGB Secondary Capture: what every viewer shows, even one that ignores SR.

The picture is a key image (:mod:`worker.results.key_image`): the reference slice with the lesion
outlined, the channel acquisitions, the composite, the Grad-CAM, the class probabilities, the
model and the use statement, burned in (BurnedInAnnotation YES). Patient and study attributes
(and BodyPartExamined, whose absence makes dciodvfy report a Laterality error) come from the
reference slice, which SourceImageSequence names first, followed by the channels' source images;
the SR's image region is drawn on that same slice. A slice that is a frame of a multi-frame
instance is named with its Referenced Frame Number (:mod:`worker.results.references`).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset

from worker.results import identity
from worker.results.algorithm import AlgorithmInfo
from worker.results.key_image import CapturedLesion, render, role_name
from worker.results.references import SourceImage, source_image_sequence
from worker.results.sr import MANUFACTURER, NOT_FOR_DIAGNOSTIC_USE, processing_equipment, software_versions

__all__ = ["CapturedLesion", "SourceImage", "build_sc", "source_image_sequence"]


def build_sc(study_uid: str, lesion: CapturedLesion, source: SourceImage, *, algorithm: AlgorithmInfo,
             instance_number: int, channel_sources: Sequence[SourceImage] = (), series_number: int = 7702,
             series_description: str = "AI liver lesion key image (not for diagnostic use)") -> Dataset:
    """The Secondary Capture of one lesion, in the source study, with deterministic UIDs.

    ``source`` is the reference slice the picture shows (its header, and its frame when it is one);
    ``channel_sources`` are the images that fed the colour channels.
    """
    header = source.header
    if "BodyPartExamined" not in header:
        header = header.copy()
        header.BodyPartExamined = "ABDOMEN"
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=header,
        pixel_array=render(lesion, algorithm, NOT_FOR_DIAGNOSTIC_USE),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=identity.sc_series_uid(study_uid, algorithm.version),
        series_number=series_number,
        sop_instance_uid=identity.sc_uid(study_uid, algorithm.version, lesion.lesion_id),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "P"),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        manufacturer_model_name=algorithm.name[:64],
        software_versions=software_versions(algorithm),
        contributing_equipment=[processing_equipment(algorithm)],
    )
    sc.BodyPartExamined = header.BodyPartExamined
    sc.BurnedInAnnotation = "YES"
    sc.SeriesDescription = series_description
    sc.ImageComments = f"{lesion.label}; model {algorithm.version[:12]}; not for diagnostic use"
    sc.SourceImageSequence = source_image_sequence([source, *channel_sources])
    roles = ", ".join(f"{c}={role_name(r)}" for c, r in zip("RGB", lesion.channels, strict=True))
    sc.DerivationDescription = (f"Key image by {algorithm.name}: {role_name(lesion.reference.role)} slice with "
                                f"the lesion outline, RGB composite of {roles}, Grad-CAM and class "
                                "probabilities; not for diagnostic use")[:1024]
    return sc
