"""The gadoxetic-acid liver MRI examination: the ten series of the early-vs-progressed HCC study.

T1 in- and opposed-phase come from one dual-echo breath-hold (same time and offset: only the echo
time tells them apart on some scanners). The diffusion series holds a low and a high b-value at the
same positions. T2 and diffusion are acquired either before the injection or in the twenty-minute
wait for the hepatobiliary phase, as sites do both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from worker.synth import mri_physics
from worker.synth.context import SCAN_TOP_Z, StudyContext
from worker.synth.dicom_writer import format_time
from worker.synth.geometry import axial_grid
from worker.synth.plan import Acquisition, SeriesPlan, random_offset

DYNAMIC = ("pre", "arterial", "portal", "transitional")
T2_DWI = ("t2_haste", "t2_fse", "dwi")


def contrast_attributes(ctx: StudyContext, injection_s: float) -> dict[str, Any]:
    return {
        "ContrastBolusAgent": ctx.style.mr_agent,
        "ContrastBolusRoute": "IV",
        "ContrastBolusVolume": 7.0,
        "ContrastBolusStartTime": format_time(injection_s),
        "ContrastBolusIngredient": "GADOLINIUM",
    }


NO_CONTRAST: dict[str, Any] = {k: None for k in ("ContrastBolusAgent", "ContrastBolusRoute",
                                                   "ContrastBolusVolume", "ContrastBolusStartTime",
                                                   "ContrastBolusIngredient")}


def plan(ctx: StudyContext, signal: Mapping[str, Mapping[str, float]]) -> list[SeriesPlan]:
    rng, opts, style = ctx.rng, ctx.options, ctx.style
    field_t = 3.0 if rng.uniform() < 0.5 else 1.5
    seqs = mri_physics.sequences(field_t)
    strength = float(rng.normal(1.0, 0.08))
    liver_fat = float(rng.uniform(0.0, 0.12))
    spacing = ctx.slice_spacing()
    center = (float(rng.normal(0, 3)), float(rng.normal(0, 3)))
    t2_after = bool(rng.uniform() < 0.5)
    start = ctx.start_s
    injection = start + 760.0 + float(rng.uniform(0, 60))
    times: dict[str, float] = {"t1_in": start + 120.0, "t1_out": start + 120.0, "t2_haste": start + 200.0,
                               "t2_fse": start + 300.0, "dwi": start + 450.0, "pre": start + 700.0}
    if t2_after:
        times.update(t2_haste=injection + 330.0, t2_fse=injection + 450.0, dwi=injection + 650.0)
    for role, (mean, sd) in mri_physics.GD_TIMES.items():
        times[role] = injection + float(rng.normal(mean, sd))

    def grid_for(role: str) -> Any:
        is_3d = seqs[role].acquisition_type == "3D"
        matrix = max(opts.matrix // 2, 16) if role == "dwi" else opts.matrix
        fov = float(rng.choice([360.0, 380.0, 400.0]))
        top = SCAN_TOP_Z + round(float(rng.uniform(-1.0, 1.0)) * spacing, 2)
        return axial_grid(center_xy=center, top_z=top, fov_mm=fov, matrix=matrix, n_slices=opts.slices,
                          slice_spacing=spacing, slice_thickness=spacing if is_3d else round(spacing * 0.8, 3))

    def values_for(role: str) -> dict[str, tuple[float, ...]]:
        t_post = times[role] - injection if times[role] > injection else None
        return mri_physics.tissue_signal(role, t_post, ctx.lesions, signal, liver_fat, strength)

    def contrast(role: str) -> dict[str, Any]:
        return contrast_attributes(ctx, injection) if times[role] > injection else dict(NO_CONTRAST)

    series: list[SeriesPlan] = []
    number = style.series_numbers["first"]
    dual_grid, dual_offset = grid_for("t1_in"), random_offset(rng, opts.motion_mm)
    shared = {"t1_out": (dual_grid, dual_offset)}
    order = ["t1_in", "t1_out"] + ([] if t2_after else list(T2_DWI)) + list(DYNAMIC)
    order += (list(T2_DWI) if t2_after else []) + ["hepatobiliary"]
    dynamic_acqs: list[Acquisition] = []
    for role in order:
        grid, offset = shared.get(role, (dual_grid, dual_offset) if role == "t1_in" else
                                  (grid_for(role), random_offset(rng, opts.motion_mm)))
        if ctx.single_series and role in DYNAMIC and dynamic_acqs:
            grid = dynamic_acqs[0].grid  # one multiphase series rescans the same volume
        seq = seqs[role]
        attrs = contrast(role) | _sequence_attrs(seq, field_t, grid.slice_spacing)
        attrs["ImageType"] = list(style.mr_image_type[role])
        acqs = [Acquisition(role=role, grid=grid, offset=offset, time_s=times[role],
                            number=DYNAMIC.index(role) + 1 if (ctx.single_series and role in DYNAMIC) else 1,
                            values=values_for(role), attrs=attrs, is_reference=role == "hepatobiliary",
                            noise=seq.noise)]
        if role == "dwi":
            b_high, b_low = style.dwi_b, (0.0 if style.name == "ge" else 50.0)
            adc = mri_physics.tissue_signal("adc", None, ctx.lesions, signal, liver_fat, strength)
            low = mri_physics.low_b_signal(acqs[0].values, adc, b_high, b_low)
            acqs = [Acquisition(role=None, grid=grid, offset=offset, time_s=times[role], number=1, values=low,
                                attrs=attrs | {"DiffusionBValue": b_low}, noise=seq.noise),
                    Acquisition(role="dwi", grid=grid, offset=offset, time_s=times[role], number=1,
                                values=acqs[0].values, attrs=attrs | {"DiffusionBValue": b_high},
                                noise=seq.noise)]
        if ctx.single_series and role in DYNAMIC:
            dynamic_acqs.extend(acqs)
            if role == DYNAMIC[-1]:
                series.append(SeriesPlan(number=number, uid=ctx.uid("series", "dynamic"),
                                         description=style.mr_descriptions["pre"], kind="image",
                                         acquisitions=tuple(dynamic_acqs),
                                         attrs=_series_attrs(ctx, dynamic_acqs[-1].time_s)))
                number += 1
            continue
        series.append(SeriesPlan(number=number, uid=ctx.uid("series", role),
                                 description=style.mr_descriptions[role], kind="image",
                                 acquisitions=tuple(acqs), attrs=_series_attrs(ctx, times[role])))
        number += 1
    return series


def _sequence_attrs(seq: mri_physics.Sequence, field_t: float, spacing: float) -> dict[str, Any]:
    return {
        "ScanningSequence": seq.scanning_sequence.split("\\"),
        "SequenceVariant": seq.sequence_variant.split("\\"),
        "ScanOptions": seq.scan_options.split("\\") if seq.scan_options else "",
        "MRAcquisitionType": seq.acquisition_type,
        "RepetitionTime": seq.tr_ms,
        "EchoTime": seq.te_ms,
        "EchoTrainLength": seq.echo_train,
        "FlipAngle": seq.flip_deg,
        "MagneticFieldStrength": field_t,
        "ImagingFrequency": round(42.577478 * field_t, 6),
        "ImagedNucleus": "1H",
        "SpacingBetweenSlices": spacing,
        "EchoNumbers": 1,
        "NumberOfAverages": 1.0,
        "InPlanePhaseEncodingDirection": "COL",
        "DiffusionBValue": None,
    }


def _series_attrs(ctx: StudyContext, acquired_s: float) -> dict[str, Any]:
    return {
        "SeriesTime": format_time(acquired_s),
        "PatientPosition": "HFS",
        "PositionReferenceIndicator": "",
        "AngioFlag": "N",
    }


def pixels(ctx: StudyContext, rendered: np.ndarray, acq: Acquisition) -> np.ndarray:
    """Magnitude images: opposed phase is |water - fat|, in phase water + fat; Rician noise."""
    if rendered.shape[0] == 2:
        water, fat = rendered
        signal = np.abs(water - fat) if acq.role == "t1_out" else water + fat
    else:
        signal = rendered[0]
    sigma = acq.noise * float(np.sqrt(6.0 / max(acq.grid.slice_thickness, 0.5)))
    return mri_physics.to_magnitude(ctx.rng, signal, sigma)
