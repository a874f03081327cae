"""Generate one study end to end: plan, render, write DICOM and SEG, return its truth.

Each study draws from its own random stream, seeded by (seed, study index), so study 7 of a run
is the same whatever the number of studies, and a run can be resumed or parallelised by index.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from worker.synth import ct_physics, ct_study, extras, mri_physics, mri_study
from worker.synth.anatomy import place_lesions
from worker.synth.context import StudyContext, StudyOptions
from worker.synth.dicom_writer import (
    CT_IMAGE,
    MR_IMAGE,
    Instance,
    StudyHeader,
    format_time,
    geometry_attributes,
    header_copy,
    make_uid,
    pixel_attributes,
    study_dataset,
    write_series,
)
from worker.synth.geometry import Vec3
from worker.synth.plan import Acquisition, SeriesPlan, render
from worker.synth.seg_writer import build_seg, lesion_mask, write_seg
from worker.synth.tasks import TaskSpec, task_spec
from worker.synth.truth import LabelRow
from worker.synth.vendors import resolve_style

log = logging.getLogger(__name__)

SOFTWARE = "SYNTH 1.0"
SEG_SERIES_NUMBER = 7001


@dataclass(frozen=True)
class SeriesRecord:
    series_uid: str
    number: int
    kind: str
    acquisitions: tuple[tuple[str | None, int, tuple[float, float, float], bool], ...]
    """(role, AcquisitionNumber, breath-hold offset, is reference) per acquisition."""
    files: int


@dataclass(frozen=True)
class StudyRecord:
    """What was written for one study, and its truth."""

    folder: Path
    patient_id: str
    study_uid: str
    accession: str
    style: str
    labels: tuple[LabelRow, ...]
    series: tuple[SeriesRecord, ...]
    reference_offset: tuple[float, float, float]

    @property
    def files(self) -> int:
        return sum(s.files for s in self.series) + 1


def choose_labels(spec: TaskSpec, index: int, rng: np.random.Generator, *, balanced: bool,
                  max_lesions: int) -> list[str]:
    """The lesions' classes: the paper's mix (or a balanced cycle by study index)."""
    count = 1 + int(rng.integers(0, max(max_lesions, 1)))
    p = np.array(spec.proportions, dtype=float)
    p /= p.sum()
    first = spec.labels[index % len(spec.labels)] if balanced else spec.labels[int(rng.choice(len(p), p=p))]
    return [first] + [spec.labels[int(rng.choice(len(p), p=p))] for _ in range(count - 1)]


def _header(ctx_seed: int, index: int, options: StudyOptions, rng: np.random.Generator, style_charset: str,
            manufacturer: str, institution: str, modality: str, japanese: bool, study_uid: str,
            for_uid: str) -> tuple[StudyHeader, float]:
    day = datetime.date(2001, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 7300)))
    start_s = float(rng.integers(8 * 3600, 17 * 3600))
    age = int(rng.integers(40, 86))
    birth = datetime.date(day.year - age, int(rng.integers(1, 13)), int(rng.integers(1, 29)))
    if (birth.month, birth.day) > (day.month, day.day):
        age -= 1
    name = f"SYNTH^PATIENT{index + 1:04d}"
    if japanese:
        name += "=合成^患者=ゴウセイ^カンジャ"
    description = {("CT", False): "CT LIVER DYNAMIC", ("CT", True): "肝臓ダイナミックCT",
                   ("MR", False): "MR LIVER GD-EOB-DTPA", ("MR", True): "肝臓 EOB-MRI"}[(modality, japanese)]
    header = StudyHeader(
        patient_name=name, patient_id=f"SYNTH-{ctx_seed}-{index + 1:04d}", birth_date=birth.strftime("%Y%m%d"),
        sex="M" if rng.uniform() < 0.75 else "F", age=f"{age:03d}Y", weight_kg=float(rng.integers(48, 90)),
        study_uid=study_uid, study_date=day.strftime("%Y%m%d"), study_time=format_time(start_s),
        accession=f"SY{ctx_seed % 1_000_000:06d}{index + 1:05d}", study_id=f"{index + 1}",
        description=description, frame_of_reference_uid=for_uid, charset=style_charset,
        manufacturer=manufacturer, institution=institution, station=f"SYNTH{modality}01",
        serial=f"SYN{modality}0001")
    return header, start_s


def generate_study(out_dir: Path, options: StudyOptions, index: int, *,
                   labels: Sequence[str] | None = None) -> StudyRecord:
    """Write study ``index`` of a run into ``out_dir/study-NNNN`` and return its record.

    ``labels`` forces the lesions' classes (one lesion per label) instead of drawing them.
    """
    spec = task_spec(options.task)
    if options.seed < 0:
        raise ValueError("seed must be >= 0")
    rng = np.random.default_rng([options.seed, index])
    vendor = resolve_style(options.style, int(rng.integers(0, 1 << 30)))
    chosen = list(labels) if labels is not None else choose_labels(spec, index, rng, balanced=options.balanced,
                                                                   max_lesions=options.max_lesions)
    if labels is not None:
        options = replace(options, style=f"{options.style}|labels={','.join(chosen)}")
    for label in chosen:
        if label not in spec.labels:
            raise ValueError(f"label {label!r} is not a class of {spec.name}")
    core = ct_physics.CORE_FRACTION if spec.modality == "CT" else {}
    lesions = place_lesions(rng, chosen, spec.lesion_size_mm, core)
    fingerprint = options.fingerprint()
    header, start_s = _header(options.seed, index, options, rng, vendor.charset, vendor.manufacturer,
                              vendor.institution, spec.modality, vendor.name == "japanese",
                              make_uid(fingerprint, index, "study"), make_uid(fingerprint, index, "frame-of-reference"))
    ctx = StudyContext(options=options, index=index, style=vendor, header=header, lesions=lesions, rng=rng,
                       start_s=start_s)
    folder = out_dir / f"study-{index + 1:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    series = _plan(ctx, spec)
    records: list[SeriesRecord] = []
    reference_headers: list[Dataset] = []
    reference: Acquisition | None = None
    for plan in series:
        files, refs = _write_image_series(ctx, folder, plan, spec.modality)
        reference_headers.extend(refs)
        for acq in plan.acquisitions:
            if acq.is_reference:
                reference = acq
        records.append(SeriesRecord(plan.uid, plan.number, plan.kind,
                                    tuple((a.role, a.number, a.offset, a.is_reference) for a in plan.acquisitions),
                                    files))
    if options.extras and spec.modality == "CT":
        model = vendor.ct_model
        last = max(a.time_s for p in series for a in p.acquisitions)
        dose = extras.dose_screen(ctx, "CT", model, SOFTWARE, last)
        dose_image = Instance(dose.SOPInstanceUID, 1, None, np.frombuffer(dose.PixelData, np.uint8), {})
        write_series(folder, dose, [dose_image], slice_location_axis=None)
        records.append(SeriesRecord(dose.SeriesInstanceUID, int(dose.SeriesNumber), "dose", (), 1))
    assert reference is not None
    _write_seg(ctx, folder, reference, reference_headers)
    truth = tuple(LabelRow(header.patient_id, header.study_uid, header.accession, lesion.lesion_id, lesion.label,
                           _moved(lesion.center, reference.offset),
                           lesion.size_mm)
                  for lesion in lesions)
    log.info("study %d written: %s style, %d series", index + 1, vendor.name, len(records) + 1)
    log.debug("study %d is patient %s, study %s", index + 1, header.patient_id, header.study_uid)
    return StudyRecord(folder=folder, patient_id=header.patient_id, study_uid=header.study_uid,
                       accession=header.accession, style=vendor.name, labels=truth, series=tuple(records),
                       reference_offset=reference.offset)


def _moved(point: Vec3, offset: Vec3) -> Vec3:
    """Where ``point`` of the phantom lies in the reference acquisition (rounded as labels.csv has it)."""
    x, y, z = (round(p + o, 2) for p, o in zip(point, offset, strict=True))
    return x, y, z


def _plan(ctx: StudyContext, spec: TaskSpec) -> list[SeriesPlan]:
    """The image series of the task, then the extras a real study holds."""
    rng, difficulty = ctx.rng, ctx.options.difficulty
    out: list[SeriesPlan] = []
    if spec.modality == "CT":
        kinetics = {lesion.lesion_id: ct_physics.sample_kinetics(rng, lesion.label, difficulty)
                    for lesion in ctx.lesions}
        images = ct_study.plan(ctx, kinetics)
        if ctx.options.extras:
            out.append(extras.ct_localizer(ctx))
        out.extend(images)
        if ctx.options.extras:
            portal = next(a for p in images for a in p.acquisitions if a.role == "portal")
            number = next(p.number for p in images if portal in p.acquisitions)
            out.append(extras.ct_mpr(ctx, portal, number))
        return out
    signal = {lesion.lesion_id: mri_physics.sample_signal(rng, lesion.label, difficulty) for lesion in ctx.lesions}
    images = mri_study.plan(ctx, signal)
    if ctx.options.extras:
        out.append(extras.mr_localizer(ctx))
    out.extend(images)
    if ctx.options.extras:
        dwi = next(p for p in images if any(a.role == "dwi" for a in p.acquisitions))
        adc = mri_physics.tissue_signal("adc", None, ctx.lesions, signal, 0.0, 1.0)
        out.append(extras.mr_adc(ctx, dwi, adc))
    return out


def _pixels(ctx: StudyContext, plan: SeriesPlan, acq: Acquisition, modality: str) -> np.ndarray:
    if modality == "CT" and plan.kind == "localizer":
        return extras.ct_projection(ctx, acq)
    if plan.kind == "adc":
        return extras.adc_pixels(ctx, acq)
    channels = len(next(iter(acq.values.values())))
    background = (-1000.0,) * channels if modality == "CT" else (0.0,) * channels
    rendered = render(acq.grid, acq.offset, ctx.lesions, acq.values, background)
    if modality == "CT":
        return ct_study.pixels(ctx, rendered, acq)
    return mri_study.pixels(ctx, rendered, acq)


def _write_image_series(ctx: StudyContext, folder: Path, plan: SeriesPlan,
                        modality: str) -> tuple[int, list[Dataset]]:
    """Write a CT or MR series; return its file count and the headers of its reference images."""
    style, header = ctx.style, ctx.header
    model = style.ct_model if modality == "CT" else style.mr_model
    ds = study_dataset(header, CT_IMAGE if modality == "CT" else MR_IMAGE, modality, model, SOFTWARE)
    ds.SeriesInstanceUID = plan.uid
    ds.SeriesNumber = plan.number
    ds.SeriesDescription = plan.description
    ds.SeriesDate = header.study_date
    ds.FrameOfReferenceUID = header.frame_of_reference_uid
    for key, value in plan.attrs.items():
        if value is not None:
            setattr(ds, key, value)
    signed = modality == "CT" and style.ct_signed and plan.kind != "localizer"
    pixel_attributes(ds, bits_stored=16 if signed else 12, signed=signed)
    if modality == "CT":
        ds.PixelPaddingValue = -2000 if signed else 0
        if plan.kind == "localizer":
            del ds.PixelPaddingValue
    references: list[Dataset] = []

    def instances() -> Iterator[Instance]:
        number = 0
        for acq in plan.acquisitions:
            geometry_attributes(ds, acq.grid)
            ds.AcquisitionNumber = acq.number
            ds.AcquisitionDate = header.study_date
            stack = _pixels(ctx, plan, acq, modality)
            window = {}
            if modality == "MR":
                top = float(np.percentile(stack[:, ::4, ::4], 99.5))
                window = {"WindowCenter": round(top / 2), "WindowWidth": max(round(top), 1)}
            step = 5.0 / max(acq.grid.n_slices, 1) if style.per_slice_times else 0.0
            for k in range(acq.grid.n_slices):
                number += 1
                t = acq.time_s + k * step
                extra = dict(acq.attrs) | window | {
                    "AcquisitionTime": format_time(t), "ContentDate": header.study_date,
                    "ContentTime": format_time(t + 15.0)}
                inst = Instance(ctx.uid("image", plan.uid, number), number, acq.grid.position(k), stack[k], extra)
                if acq.is_reference:
                    references.append(header_copy(ds, inst))
                yield inst

    axis = 2 if plan.kind in ("image", "adc") else None
    paths = write_series(folder, ds, instances(), slice_location_axis=axis)
    return len(paths), references


def _write_seg(ctx: StudyContext, folder: Path, reference: Acquisition, headers: list[Dataset]) -> None:
    masks = [lesion_mask(lesion, reference.grid, reference.offset) for lesion in ctx.lesions]
    seg = build_seg(headers, masks, ctx.lesions, series_uid=ctx.uid("series", "seg"), sop_uid=ctx.uid("seg", 1),
                    series_number=SEG_SERIES_NUMBER,
                    tracking_uids=[ctx.uid("tracking", lesion.lesion_id) for lesion in ctx.lesions],
                    manufacturer="triphase", content_date=ctx.header.study_date,
                    content_time=format_time(reference.time_s + 3600.0),
                    dimension_uid=ctx.uid("seg-dimension-organisation"))
    write_seg(seg, folder / f"{SEG_SERIES_NUMBER:04d}-00001.dcm")
