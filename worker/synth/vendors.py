"""How different scanners and sites write the same examination.

Only standard attributes carry the phase: series descriptions as each vendor or site names them,
ImageType conventions, contrast attributes and timing, MR echo times and b-values. Nothing here
is a marker that only this generator writes, because grouping is judged on real studies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STYLES = ("ge", "siemens", "canon", "japanese")


@dataclass(frozen=True)
class VendorStyle:
    """One scanner family's (or one Japanese site's) conventions."""

    name: str
    manufacturer: str
    ct_model: str
    mr_model: str
    charset: str
    ct_kernel: str
    ct_image_type: tuple[str, ...]
    ct_signed: bool
    """GE stores signed 16-bit CT pixels; the others unsigned 12-bit."""
    ct_descriptions: dict[str, str]
    """Per role; ``{thk}`` is replaced by the slice thickness (``{thk1}``: with one decimal)."""
    mr_descriptions: dict[str, str]
    mr_image_type: dict[str, tuple[str, ...]]
    ct_agent: str
    mr_agent: str
    single_series: bool
    """All dynamic phases in one series, told apart by AcquisitionNumber."""
    ct_localizer: str
    mr_localizer: str
    mpr: str
    dose: str
    adc: str
    dwi_b: float
    per_slice_times: bool
    """Whether AcquisitionTime advances slice by slice within a series."""
    series_numbers: dict[str, int] = field(default_factory=dict)
    institution: str = "SYNTHETIC TEST HOSPITAL"


_MR_ROLES = ("t1_in", "t1_out", "t2_haste", "t2_fse", "dwi", "pre", "arterial", "portal", "transitional",
             "hepatobiliary")


def _same(value: tuple[str, ...], **overrides: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    out = {role: value for role in _MR_ROLES}
    out.update(overrides)
    return out


STYLE_TABLE: dict[str, VendorStyle] = {
    "ge": VendorStyle(
        name="ge", manufacturer="GE MEDICAL SYSTEMS", ct_model="Revolution CT", mr_model="SIGNA Artist",
        charset="ISO_IR 100", ct_kernel="STANDARD", ct_image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
        ct_signed=True,
        ct_descriptions={"pre": "{thk}mm NC", "arterial": "{thk}mm ART", "portal": "{thk}mm PV",
                         "delayed": "{thk}mm DELAY"},
        mr_descriptions={"t1_in": "Ax DUAL ECHO IP", "t1_out": "Ax DUAL ECHO OP", "t2_haste": "Ax SSFSE T2",
                         "t2_fse": "Ax T2 FRFSE FS", "dwi": "Ax DWI b1000", "pre": "Ax LAVA Pre",
                         "arterial": "Ax LAVA Arterial", "portal": "Ax LAVA Portal",
                         "transitional": "Ax LAVA 3min", "hepatobiliary": "Ax LAVA HBP 20min"},
        mr_image_type=_same(("ORIGINAL", "PRIMARY", "OTHER"),
                            t1_in=("DERIVED", "PRIMARY", "IN_PHASE"), t1_out=("DERIVED", "PRIMARY", "OUT_PHASE")),
        ct_agent="OMNIPAQUE 350", mr_agent="Gd-EOB-DTPA", single_series=False,
        ct_localizer="Scout", mr_localizer="3-Plane Loc", mpr="COR REFORMAT 3mm", dose="Dose Report",
        adc="ADC (10^-6 mm^2/s)", dwi_b=1000.0, per_slice_times=False,
        series_numbers={"localizer": 1, "first": 2, "mpr": 300, "dose": 999},
    ),
    "siemens": VendorStyle(
        name="siemens", manufacturer="SIEMENS", ct_model="SOMATOM Force", mr_model="MAGNETOM Vida",
        charset="ISO_IR 100", ct_kernel="Br40d", ct_image_type=("ORIGINAL", "PRIMARY", "AXIAL", "CT_SOM5 SPI"),
        ct_signed=False,
        ct_descriptions={"pre": "Abdomen nativ {thk1} Br40", "arterial": "ArtPhase {thk1} Br40",
                         "portal": "PVP {thk1} Br40", "delayed": "Delay {thk1} Br40"},
        mr_descriptions={"t1_in": "t1_fl2d_opp-in_tra_bh", "t1_out": "t1_fl2d_opp-in_tra_bh",
                         "t2_haste": "t2_haste_tra_mbh", "t2_fse": "t2_tse_fs_tra_trig",
                         "dwi": "ep2d_diff_b50_800_tra_TRACEW", "pre": "t1_vibe_fs_tra_bh",
                         "arterial": "t1_vibe_fs_tra_bh", "portal": "t1_vibe_fs_tra_bh",
                         "transitional": "t1_vibe_fs_tra_bh", "hepatobiliary": "t1_vibe_fs_tra_bh_20min"},
        mr_image_type=_same(("ORIGINAL", "PRIMARY", "M", "ND", "NORM"),
                            dwi=("DERIVED", "PRIMARY", "DIFFUSION", "TRACEW", "ND", "NORM")),
        ct_agent="Iopromide 370", mr_agent="Gd-EOB-DTPA", single_series=False,
        ct_localizer="Topogram 0.6 T20f", mr_localizer="localizer", mpr="COR MPR 3.0 Br40",
        dose="Patient Protocol", adc="ep2d_diff_b50_800_tra_ADC", dwi_b=800.0, per_slice_times=True,
        series_numbers={"localizer": 1, "first": 2, "mpr": 601, "dose": 501},
    ),
    "canon": VendorStyle(
        name="canon", manufacturer="CANON_MEC", ct_model="Aquilion ONE", mr_model="Vantage Orian",
        charset="ISO_IR 100", ct_kernel="FC08", ct_image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
        ct_signed=False,
        ct_descriptions={"pre": "Body {thk1} CE", "arterial": "Body {thk1} CE", "portal": "Body {thk1} CE",
                         "delayed": "Body {thk1} CE"},
        mr_descriptions={"t1_in": "T1 DUAL in", "t1_out": "T1 DUAL out", "t2_haste": "FASE T2 BH",
                         "t2_fse": "T2 FSE FatSat RT", "dwi": "DWI b800", "pre": "Quick3D Dynamic",
                         "arterial": "Quick3D Dynamic", "portal": "Quick3D Dynamic",
                         "transitional": "Quick3D Dynamic", "hepatobiliary": "Quick3D HBP 20min"},
        mr_image_type=_same(("ORIGINAL", "PRIMARY", "OTHER")),
        ct_agent="IOMERON 350", mr_agent="Gd-EOB-DTPA", single_series=True,
        ct_localizer="Scanogram", mr_localizer="Locator", mpr="Cor MPR 3.0", dose="Dose Info",
        adc="ADC map", dwi_b=800.0, per_slice_times=False,
        series_numbers={"localizer": 1, "first": 2, "mpr": 8, "dose": 9000},
    ),
    "japanese": VendorStyle(
        name="japanese", manufacturer="FUJIFILM Healthcare", ct_model="SCENARIA View", mr_model="ECHELON Smart",
        charset="ISO_IR 192", ct_kernel="Abdomen", ct_image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
        ct_signed=False,
        ct_descriptions={"pre": "単純 {thk}mm", "arterial": "動脈相 {thk}mm", "portal": "門脈相 {thk}mm",
                         "delayed": "平衡相 {thk}mm"},
        mr_descriptions={"t1_in": "T1WI in phase", "t1_out": "T1WI opposed phase", "t2_haste": "T2WI SSFSE",
                         "t2_fse": "T2WI 脂肪抑制", "dwi": "DWI b=800", "pre": "EOB 単純",
                         "arterial": "EOB 動脈相", "portal": "EOB 門脈相", "transitional": "EOB 平衡相",
                         "hepatobiliary": "EOB 肝細胞相 20分"},
        mr_image_type=_same(("ORIGINAL", "PRIMARY", "OTHER")),
        ct_agent="イオパミロン370", mr_agent="EOB・プリモビスト", single_series=False,
        ct_localizer="スキャノグラム", mr_localizer="位置決め", mpr="冠状断 MPR 3mm", dose="線量情報",
        adc="ADC", dwi_b=800.0, per_slice_times=False,
        series_numbers={"localizer": 1, "first": 2, "mpr": 20, "dose": 100},
    ),
}


def resolve_style(name: str, choice: int) -> VendorStyle:
    """The named style; ``mixed`` picks one per study from ``choice`` (drawn from the study's seed)."""
    if name == "mixed":
        return STYLE_TABLE[STYLES[choice % len(STYLES)]]
    try:
        return STYLE_TABLE[name]
    except KeyError:
        raise ValueError(f"unknown style {name!r}; expected one of {', '.join(STYLES)}, mixed") from None


def thickness_label(thickness_mm: float) -> str:
    """Slice thickness as sites write it in descriptions: 5, 2.5, 1.25."""
    return f"{thickness_mm:.2f}".rstrip("0").rstrip(".")
