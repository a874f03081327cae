"""The dynamic liver CT examination: pre-contrast, late arterial, portal venous and delayed phases.

Each phase is its own breath-hold (own liver offset), scanned at its own time after the injection,
and may be reconstructed with a slightly different field of view or start position.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from worker.synth import ct_physics
from worker.synth.context import SCAN_TOP_Z, StudyContext
from worker.synth.dicom_writer import format_time
from worker.synth.geometry import axial_grid
from worker.synth.plan import Acquisition, Attributes, SeriesPlan, random_offset
from worker.synth.vendors import thickness_label

ROLES = ("pre", "arterial", "portal", "delayed")
INTERCEPT = -1024.0
WINDOWS = {"pre": (40, 350), "arterial": (60, 400), "portal": (50, 400), "delayed": (50, 400)}


def contrast_attributes(ctx: StudyContext, injection_s: float) -> Attributes:
    return {
        "ContrastBolusAgent": ctx.style.ct_agent,
        "ContrastBolusRoute": "IV",
        "ContrastBolusVolume": 100.0,
        "ContrastBolusStartTime": format_time(injection_s),
        "ContrastFlowRate": [3.0],
        "ContrastBolusIngredient": "IODINE",
    }


NO_CONTRAST: Attributes = {k: None for k in ("ContrastBolusAgent", "ContrastBolusRoute",
                                                   "ContrastBolusVolume", "ContrastBolusStartTime",
                                                   "ContrastFlowRate", "ContrastBolusIngredient")}


def plan(ctx: StudyContext, kinetics: Mapping[str, ct_physics.LesionKinetics]) -> list[SeriesPlan]:
    """The phases of the examination, as one series each or one multiphase series."""
    rng, opts, style = ctx.rng, ctx.options, ctx.style
    circulation = ct_physics.Circulation(strength=float(rng.normal(1.0, 0.1)),
                                         delay_s=float(rng.normal(0.0, 2.5)))
    spacing = ctx.slice_spacing()
    fov = float(rng.choice([340.0, 360.0, 380.0, 400.0]))
    center = (float(rng.normal(0, 3)), float(rng.normal(0, 3)))
    injection = ctx.start_s + 150.0 + float(rng.uniform(0, 60))
    times = {"pre": ctx.start_s + 60.0 + float(rng.uniform(0, 30))}
    for role, (mean, sd) in ct_physics.PHASE_TIMES.items():
        times[role] = injection + float(rng.normal(mean, sd))
    noise = float(rng.uniform(0.8, 1.3))  # body size and dose
    acquisitions: list[Acquisition] = []
    for number, role in enumerate(ROLES, start=1):
        if ctx.single_series:
            grid_fov, top = fov, SCAN_TOP_Z
        else:
            # Phases may be reconstructed with their own field of view and start position.
            grid_fov = fov if rng.uniform() < 0.7 else fov + float(rng.choice([-20.0, 20.0]))
            top = SCAN_TOP_Z + round(float(rng.uniform(-1.0, 1.0)) * spacing, 2)
        grid = axial_grid(center_xy=center, top_z=top, fov_mm=grid_fov, matrix=opts.matrix,
                          n_slices=opts.slices, slice_spacing=spacing, slice_thickness=spacing)
        t_post = None if role == "pre" else times[role] - injection
        values = ct_physics.tissue_hu(t_post, circulation, ctx.lesions, kinetics)
        attrs: Attributes = dict(NO_CONTRAST) if role == "pre" else contrast_attributes(ctx, injection)
        attrs["WindowCenter"], attrs["WindowWidth"] = WINDOWS[role]
        attrs["ReconstructionDiameter"] = grid_fov
        acquisitions.append(Acquisition(role=role, grid=grid, offset=random_offset(rng, opts.motion_mm),
                                        time_s=times[role], number=number, values=values, attrs=attrs,
                                        is_reference=role == "portal", noise=noise))
    base_number = style.series_numbers["first"]
    thk = thickness_label(spacing)
    series: list[SeriesPlan] = []
    if ctx.single_series:
        description = style.ct_descriptions["portal"].format(thk=thk, thk1=f"{spacing:.1f}")
        series.append(SeriesPlan(number=base_number, uid=ctx.uid("series", "dynamic"), description=description,
                                 kind="image", acquisitions=tuple(acquisitions),
                                 attrs=_series_attrs(ctx, acquisitions[-1].time_s)))
    else:
        for offset, acq in enumerate(acquisitions):
            assert acq.role is not None
            series.append(SeriesPlan(number=base_number + offset, uid=ctx.uid("series", acq.role),
                                     description=style.ct_descriptions[acq.role].format(thk=thk, thk1=f"{spacing:.1f}"),
                                     kind="image", acquisitions=(acq,),
                                     attrs=_series_attrs(ctx, acq.time_s)))
    return series


def _series_attrs(ctx: StudyContext, acquired_s: float) -> Attributes:
    """CT acquisition attributes; SeriesTime is when reconstruction ended, as on many scanners."""
    rng = ctx.rng
    return {
        "ImageType": list(ctx.style.ct_image_type),
        "SeriesTime": format_time(acquired_s + float(rng.uniform(20, 90))),
        "KVP": 120.0,
        "DataCollectionDiameter": 500.0,
        "DistanceSourceToDetector": 1085.6,
        "DistanceSourceToPatient": 595.0,
        "GantryDetectorTilt": 0.0,
        "TableHeight": 160.0,
        "RotationDirection": "CW",
        "ExposureTime": 500,
        "XRayTubeCurrent": int(rng.integers(180, 450)),
        "FilterType": "BODY FILTER",
        "GeneratorPower": 60,
        "FocalSpots": [1.2],
        "ConvolutionKernel": ctx.style.ct_kernel,
        "PatientPosition": "FFS" if ctx.style.name == "siemens" else "HFS",
        "RescaleIntercept": INTERCEPT,
        "RescaleSlope": 1.0,
        "RescaleType": "HU",
        "PositionReferenceIndicator": "",
    }


def pixels(ctx: StudyContext, rendered: np.ndarray, acq: Acquisition) -> np.ndarray:
    """HU planes with quantum noise, as stored values (unsigned 12-bit or signed 16-bit)."""
    hu: np.ndarray = rendered[0]
    ct_physics.add_noise(ctx.rng, hu, acq.grid.slice_thickness, acq.noise)
    stored = np.rint(hu - INTERCEPT)
    if ctx.style.ct_signed:
        return np.clip(stored, -1024, 4095).astype(np.int16)
    return np.clip(stored, 0, 4095).astype(np.uint16)
