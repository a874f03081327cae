"""The series a real study holds beside the phases, which grouping must learn to ignore.

A localizer (CT projection scout, MR three-plane locator), a coronal reformat of the portal phase,
an ADC map next to the diffusion series, and a dose screen (Secondary Capture).
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from worker.synth import ct_physics, mri_physics
from worker.synth.context import StudyContext
from worker.synth.dicom_writer import SECONDARY_CAPTURE, format_time, study_dataset
from worker.synth.geometry import planar_grid
from worker.synth.plan import Acquisition, Attributes, SeriesPlan, random_offset, render

LIVER_CENTRE = (-30.0, -10.0, 40.0)


def ct_localizer(ctx: StudyContext) -> SeriesPlan:
    """An AP scout: one coronal projection image, in its own breath-hold."""
    grid = planar_grid(plane="coronal", center=(0.0, 0.0, 20.0), fov_mm=480.0, matrix=ctx.options.matrix)
    values = ct_physics.tissue_hu(None, ct_physics.Circulation(1.0, 0.0), ctx.lesions,
                                  {lesion.lesion_id: ct_physics.LesionKinetics((50.0, 0, 0, 0), None)
                                   for lesion in ctx.lesions})
    acq = Acquisition(role=None, grid=grid, offset=random_offset(ctx.rng, ctx.options.motion_mm),
                      time_s=ctx.start_s, number=1, values=values,
                      attrs={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"], "WindowCenter": 1000,
                             "WindowWidth": 2000, "RescaleIntercept": 0.0, "ReconstructionDiameter": None,
                             "ConvolutionKernel": None})
    return SeriesPlan(number=ctx.style.series_numbers["localizer"], uid=ctx.uid("series", "localizer"),
                      description=ctx.style.ct_localizer, kind="localizer", acquisitions=(acq,),
                      attrs={"SeriesTime": format_time(ctx.start_s), "KVP": 120.0, "XRayTubeCurrent": 20,
                             "PatientPosition": "HFS", "PositionReferenceIndicator": "",
                             "RescaleSlope": 1.0})


def ct_projection(ctx: StudyContext, acq: Acquisition) -> np.ndarray:
    """Mean attenuation through the patient along y, like a scout, as 12-bit values."""
    g = acq.grid
    centre = (g.origin[0] + g.pixel_spacing[1] * (g.columns - 1) / 2, 0.0,
              g.origin[2] - g.pixel_spacing[0] * (g.rows - 1) / 2)
    thick = planar_grid(plane="coronal", center=centre, fov_mm=g.pixel_spacing[0] * g.rows, matrix=g.rows,
                        n_slices=12, slice_spacing=20.0, slice_thickness=20.0)
    volume = render(thick, acq.offset, ctx.lesions, acq.values, background=(-1000.0,))[0]
    mu = np.clip(volume + 1000.0, 0.0, None).mean(axis=0, keepdims=True)
    image = 4095.0 * (1.0 - np.exp(-mu / 500.0))
    image += ctx.rng.standard_normal(image.shape, dtype=np.float32) * 8.0
    return np.asarray(np.clip(np.rint(image), 0, 4095), dtype=np.uint16)


def ct_mpr(ctx: StudyContext, portal: Acquisition, portal_number: int) -> SeriesPlan:
    """Thick coronal slabs reformatted from the portal phase (DERIVED, not a role)."""
    grid = planar_grid(plane="coronal", center=LIVER_CENTRE, fov_mm=portal.grid.pixel_spacing[0] * portal.grid.rows,
                       matrix=ctx.options.matrix, n_slices=5, slice_spacing=10.0, slice_thickness=3.0)
    attrs = dict(portal.attrs) | {"ImageType": ["DERIVED", "SECONDARY", "REFORMATTED"],
                                  "DerivationDescription": f"Coronal MPR of series {portal_number}"}
    acq = Acquisition(role=None, grid=grid, offset=portal.offset, time_s=portal.time_s, number=portal.number,
                      values=portal.values, attrs=attrs, noise=portal.noise * 0.8)
    return SeriesPlan(number=ctx.style.series_numbers["mpr"], uid=ctx.uid("series", "mpr"),
                      description=ctx.style.mpr, kind="mpr", acquisitions=(acq,),
                      attrs={"SeriesTime": format_time(portal.time_s + 600.0), "KVP": 120.0,
                             "PatientPosition": "HFS", "PositionReferenceIndicator": "",
                             "RescaleIntercept": -1024.0, "RescaleSlope": 1.0, "RescaleType": "HU",
                             "ConvolutionKernel": ctx.style.ct_kernel})


def mr_localizer(ctx: StudyContext) -> SeriesPlan:
    """A three-plane locator: axial, coronal and sagittal images in one series."""
    values = mri_physics.tissue_signal("t2_haste", None, ctx.lesions,
                                       {lesion.lesion_id: mri_physics.LESION_SIGNAL["early_hcc"]
                                        for lesion in ctx.lesions}, 0.0, 1.0)
    offset = random_offset(ctx.rng, ctx.options.motion_mm)
    acqs = []
    for number, plane in enumerate(("axial", "coronal", "sagittal"), start=1):
        grid = planar_grid(plane=plane, center=(0.0, 0.0, 30.0), fov_mm=450.0,
                           matrix=max(ctx.options.matrix // 2, 16), slice_thickness=8.0)
        acqs.append(Acquisition(role=None, grid=grid, offset=offset, time_s=ctx.start_s + number, number=1,
                                values=values, noise=10.0,
                                attrs={"ImageType": ["ORIGINAL", "PRIMARY", "OTHER"]}))
    seq = {"ScanningSequence": ["GR"], "SequenceVariant": ["SS"], "ScanOptions": "", "MRAcquisitionType": "2D",
           "RepetitionTime": 3.6, "EchoTime": 1.6, "EchoTrainLength": 1, "FlipAngle": 50.0,
           "ImagedNucleus": "1H", "EchoNumbers": 1}
    return SeriesPlan(number=ctx.style.series_numbers["localizer"], uid=ctx.uid("series", "localizer"),
                      description=ctx.style.mr_localizer, kind="localizer", acquisitions=tuple(acqs),
                      attrs=seq | {"SeriesTime": format_time(ctx.start_s), "PatientPosition": "HFS",
                                   "PositionReferenceIndicator": ""})


def mr_adc(ctx: StudyContext, dwi: SeriesPlan, adc_values: dict[str, tuple[float, ...]]) -> SeriesPlan:
    """The ADC map computed from the diffusion series (DERIVED ... ADC), on the same grid."""
    high = dwi.acquisitions[-1]
    image_type = ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"] + (["ND", "NORM"] if ctx.style.name == "siemens" else [])
    attrs: Attributes = dict(high.attrs) | {"ImageType": image_type, "DiffusionBValue": None}
    acq = Acquisition(role=None, grid=high.grid, offset=high.offset, time_s=high.time_s, number=1,
                      values=adc_values, attrs=attrs, noise=40.0)
    return SeriesPlan(number=dwi.number + 100, uid=ctx.uid("series", "adc"), description=ctx.style.adc,
                      kind="adc", acquisitions=(acq,), attrs=dict(dwi.attrs))


def adc_pixels(ctx: StudyContext, acq: Acquisition) -> np.ndarray:
    volume = render(acq.grid, acq.offset, ctx.lesions, acq.values, background=(0.0,))[0]
    volume += ctx.rng.standard_normal(volume.shape, dtype=np.float32) * np.float32(acq.noise)
    return np.asarray(np.clip(np.rint(volume), 0, 4095), dtype=np.uint16)


def dose_screen(ctx: StudyContext, modality: str, model: str, software: str, last_s: float) -> Dataset:
    """A dose screen saved as a Secondary Capture image, as CT scanners send at the end of a study."""
    ds = study_dataset(ctx.header, SECONDARY_CAPTURE, modality, model, software)
    ds.SeriesInstanceUID = ctx.uid("series", "dose")
    ds.SOPInstanceUID = ctx.uid("dose", 1)
    ds.SeriesNumber = ctx.style.series_numbers["dose"]
    ds.SeriesDescription = ctx.style.dose
    ds.SeriesDate = ctx.header.study_date
    ds.SeriesTime = format_time(last_s + 30.0)
    ds.ContentDate = ctx.header.study_date
    ds.ContentTime = format_time(last_s + 30.0)
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ConversionType = "WSD"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "SCREEN SAVE"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    size = 256
    image = np.zeros((size, size), dtype=np.uint8)
    rows = int(ctx.rng.integers(5, 9))
    for r in range(rows):  # a table of dose lines, as light bars on black
        top = 30 + r * 22
        image[top:top + 10, 20:20 + int(ctx.rng.integers(120, 220))] = 200
    ds.Rows = size
    ds.Columns = size
    ds.PixelData = image.tobytes()
    return ds
