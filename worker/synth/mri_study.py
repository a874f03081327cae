"""The gadoxetic-acid liver MRI examination: the ten series of the early-vs-progressed HCC study.

T1 in- and opposed-phase come from one dual-echo breath-hold (same time and offset: only the echo
time tells them apart on some scanners). The diffusion series holds a low and a high b-value at the
same positions. T2 and diffusion are acquired either before the injection or in the twenty-minute
wait for the hepatobiliary phase, as sites do both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from worker.synth import mri_physics
from worker.synth.context import SCAN_TOP_Z, StudyContext
from worker.synth.dicom_writer import format_time
from worker.synth.geometry import Grid, Vec3, axial_grid
from worker.synth.plan import Acquisition, Attributes, SeriesPlan, random_offset

DYNAMIC = ("pre", "arterial", "portal", "transitional")
T2_DWI = ("t2_haste", "t2_fse", "dwi")


def contrast_attributes(ctx: StudyContext, injection_s: float) -> Attributes:
    return {
        "ContrastBolusAgent": ctx.style.mr_agent,
        "ContrastBolusRoute": "IV",
        "ContrastBolusVolume": 7.0,
        "ContrastBolusStartTime": format_time(injection_s),
        "ContrastBolusIngredient": "GADOLINIUM",
    }


NO_CONTRAST: Attributes = {k: None for k in ("ContrastBolusAgent", "ContrastBolusRoute",
                                             "ContrastBolusVolume", "ContrastBolusStartTime",
                                             "ContrastBolusIngredient")}


@dataclass(frozen=True)
class _Exam:
    """What holds for the whole examination: field strength, protocol, patient, timing."""

    field_t: float
    seqs: dict[str, mri_physics.Sequence]
    strength: float
    liver_fat: float
    spacing: float
    center: tuple[float, float]
    t2_after: bool
    injection: float
    times: dict[str, float]

    def enhanced(self, role: str) -> bool:
        return self.times[role] > self.injection


def _draw_exam(ctx: StudyContext) -> _Exam:
    """The examination's random draws, in the order that keeps every seed's files unchanged."""
    rng, start = ctx.rng, ctx.start_s
    field_t = 3.0 if rng.uniform() < 0.5 else 1.5
    strength = float(rng.normal(1.0, 0.08))
    liver_fat = float(rng.uniform(0.0, 0.12))
    center = (float(rng.normal(0, 3)), float(rng.normal(0, 3)))
    t2_after = bool(rng.uniform() < 0.5)
    injection = start + 760.0 + float(rng.uniform(0, 60))
    times: dict[str, float] = {"t1_in": start + 120.0, "t1_out": start + 120.0, "t2_haste": start + 200.0,
                               "t2_fse": start + 300.0, "dwi": start + 450.0, "pre": start + 700.0}
    if t2_after:
        times.update(t2_haste=injection + 330.0, t2_fse=injection + 450.0, dwi=injection + 650.0)
    for role, (mean, sd) in mri_physics.GD_TIMES.items():
        times[role] = injection + float(rng.normal(mean, sd))
    return _Exam(field_t, mri_physics.sequences(field_t), strength, liver_fat, ctx.slice_spacing(), center,
                 t2_after, injection, times)


def _grid_for(ctx: StudyContext, exam: _Exam, role: str) -> Grid:
    is_3d = exam.seqs[role].acquisition_type == "3D"
    matrix = max(ctx.options.matrix // 2, 16) if role == "dwi" else ctx.options.matrix
    fov = float(ctx.rng.choice([360.0, 380.0, 400.0]))
    top = SCAN_TOP_Z + round(float(ctx.rng.uniform(-1.0, 1.0)) * exam.spacing, 2)
    return axial_grid(center_xy=exam.center, top_z=top, fov_mm=fov, matrix=matrix, n_slices=ctx.options.slices,
                      slice_spacing=exam.spacing,
                      slice_thickness=exam.spacing if is_3d else round(exam.spacing * 0.8, 3))


def _placement(ctx: StudyContext, exam: _Exam, role: str, dual: tuple[Grid, Vec3]) -> tuple[Grid, Vec3]:
    """A role's grid and breath-hold offset; in- and opposed-phase share the dual-echo breath-hold.

    The opposed-phase echo still draws a grid and an offset of its own (and drops them), so that
    the random stream, hence every file of a seed, stays as it always was.
    """
    if role == "t1_in":
        return dual
    own = (_grid_for(ctx, exam, role), random_offset(ctx.rng, ctx.options.motion_mm))
    return dual if role == "t1_out" else own


def _order(exam: _Exam) -> list[str]:
    """Roles in acquisition order: T2 and diffusion before the injection or in the hepatobiliary wait."""
    before, after = ([], list(T2_DWI)) if exam.t2_after else (list(T2_DWI), [])
    return ["t1_in", "t1_out", *before, *DYNAMIC, *after, "hepatobiliary"]


def _acquisitions(ctx: StudyContext, exam: _Exam, signal: Mapping[str, Mapping[str, float]], role: str,
                  grid: Grid, offset: Vec3) -> list[Acquisition]:
    """The role's acquisitions: one, or a low and a high b-value for diffusion."""
    seq, style = exam.seqs[role], ctx.style
    contrast = contrast_attributes(ctx, exam.injection) if exam.enhanced(role) else dict(NO_CONTRAST)
    attrs: Attributes = {**contrast, **_sequence_attrs(seq, exam.field_t, grid.slice_spacing)}
    attrs["ImageType"] = list(style.mr_image_type[role])
    t_post = exam.times[role] - exam.injection if exam.enhanced(role) else None
    values = mri_physics.tissue_signal(role, t_post, ctx.lesions, signal, exam.liver_fat, exam.strength)
    dynamic = ctx.single_series and role in DYNAMIC
    if role != "dwi":
        return [Acquisition(role=role, grid=grid, offset=offset, time_s=exam.times[role],
                            number=DYNAMIC.index(role) + 1 if dynamic else 1, values=values, attrs=attrs,
                            is_reference=role == "hepatobiliary", noise=seq.noise)]
    b_high, b_low = style.dwi_b, (0.0 if style.name == "ge" else 50.0)
    adc = mri_physics.tissue_signal("adc", None, ctx.lesions, signal, exam.liver_fat, exam.strength)
    low = mri_physics.low_b_signal(values, adc, b_high, b_low)
    return [Acquisition(role=None, grid=grid, offset=offset, time_s=exam.times[role], number=1, values=low,
                        attrs=attrs | {"DiffusionBValue": b_low}, noise=seq.noise),
            Acquisition(role="dwi", grid=grid, offset=offset, time_s=exam.times[role], number=1,
                        values=values, attrs=attrs | {"DiffusionBValue": b_high}, noise=seq.noise)]


def plan(ctx: StudyContext, signal: Mapping[str, Mapping[str, float]]) -> list[SeriesPlan]:
    """The ten series, or seven when the dynamic phases share one multiphase series."""
    style, exam = ctx.style, _draw_exam(ctx)
    series: list[SeriesPlan] = []
    number = style.series_numbers["first"]
    dual = (_grid_for(ctx, exam, "t1_in"), random_offset(ctx.rng, ctx.options.motion_mm))
    dynamic_acqs: list[Acquisition] = []
    for role in _order(exam):
        grid, offset = _placement(ctx, exam, role, dual)
        if ctx.single_series and role in DYNAMIC and dynamic_acqs:
            grid = dynamic_acqs[0].grid  # one multiphase series rescans the same volume
        acqs = _acquisitions(ctx, exam, signal, role, grid, offset)
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
                                 acquisitions=tuple(acqs), attrs=_series_attrs(ctx, exam.times[role])))
        number += 1
    return series


def _sequence_attrs(seq: mri_physics.Sequence, field_t: float, spacing: float) -> Attributes:
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


def _series_attrs(ctx: StudyContext, acquired_s: float) -> Attributes:
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
