"""MRI signal on gadoxetic-acid liver MRI: the ten series of the early-vs-progressed HCC study.

Values are plausible magnitudes (0-4095) of each sequence, not a Bloch simulation: what matters is
the contrast between tissues that radiologists read (fat drop on opposed phase, T2 brightness,
restricted diffusion, arterial hyperenhancement and washout, hepatocyte uptake in the hepatobiliary
phase). T1 in- and opposed-phase images come from one dual-echo acquisition: each tissue has a water
and a fat signal, so the opposed-phase image shows the dark ring at fat-water borders by itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from worker.synth.anatomy import Lesion

# (water, fat) signal on T1 gradient echo.
T1_WATER_FAT: dict[str, tuple[float, float]] = {
    "air": (0, 0), "lung": (15, 0), "stomach": (90, 0), "fat": (70, 880), "muscle": (260, 10), "liver": (430, 0),
    "gallbladder": (110, 0), "portal_vein": (210, 0), "spleen": (300, 0), "kidney": (320, 0), "ivc": (190, 0),
    "aorta": (170, 0),
    "bone": (25, 5), "marrow": (230, 420),
}
T2_HASTE: dict[str, float] = {
    "air": 0, "lung": 10, "stomach": 700, "fat": 520, "muscle": 110, "liver": 170, "gallbladder": 1150,
    "portal_vein": 45, "spleen": 380, "kidney": 340, "ivc": 40, "aorta": 30, "bone": 20, "marrow": 260,
}
T2_FSE_FS: dict[str, float] = {
    "air": 0, "lung": 10, "stomach": 800, "fat": 90, "muscle": 120, "liver": 190, "gallbladder": 1250,
    "portal_vein": 60, "spleen": 430, "kidney": 380, "ivc": 55, "aorta": 40, "bone": 15, "marrow": 110,
}
DWI_HIGH_B: dict[str, float] = {
    "air": 0, "lung": 4, "stomach": 40, "fat": 15, "muscle": 55, "liver": 130, "gallbladder": 70, "portal_vein": 12,
    "spleen": 270, "kidney": 230, "ivc": 10, "aorta": 8, "bone": 5, "marrow": 60,
}
ADC: dict[str, float] = {  # x 1e-6 mm2/s, as vendors store ADC maps
    "air": 0, "lung": 0, "stomach": 2800, "fat": 300, "muscle": 1400, "liver": 1250, "gallbladder": 2900,
    "portal_vein": 2500, "spleen": 850, "kidney": 1900, "ivc": 2500, "aorta": 2600, "bone": 400, "marrow": 500,
}
T1_FS_PRE: dict[str, float] = {  # fat-suppressed 3D gradient echo before contrast
    "air": 0, "lung": 12, "stomach": 80, "fat": 70, "muscle": 250, "liver": 390, "gallbladder": 90, "portal_vein": 190,
    "spleen": 300, "kidney": 290, "ivc": 180, "aorta": 170, "bone": 20, "marrow": 120,
}
# Enhancement on fat-suppressed T1 at seconds after gadoxetic acid; hepatocytes take it up later.
GD_ENHANCEMENT: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "aorta": ((0, 12, 24, 32, 60, 180, 1200), (0, 0, 700, 900, 520, 300, 110)),
    "portal_vein": ((0, 18, 30, 45, 65, 180, 1200), (0, 0, 250, 600, 700, 380, 120)),
    "ivc": ((0, 25, 40, 70, 180, 1200), (0, 0, 200, 520, 350, 110)),
    "liver": ((0, 20, 35, 65, 180, 600, 1200), (0, 0, 90, 250, 330, 470, 540)),
    "spleen": ((0, 18, 32, 65, 180, 1200), (0, 0, 420, 380, 240, 120)),
    "kidney": ((0, 18, 32, 65, 180, 1200), (0, 0, 650, 560, 400, 260)),
    "muscle": ((0, 30, 65, 180, 1200), (0, 0, 60, 80, 60)),
    "gallbladder": ((0, 600, 1200), (0, 0, 450)),  # biliary excretion
}
GD_TIMES: dict[str, tuple[float, float]] = {"arterial": (28.0, 3.0), "portal": (65.0, 5.0),
                                            "transitional": (180.0, 15.0), "hepatobiliary": (1200.0, 60.0)}

# Lesion signal per class. Early HCC is subtle: near-iso on T2, DWI and arterial phase, a little
# hypointense in the hepatobiliary phase, and often fatty. Progressed HCC is T2 bright, restricts
# diffusion, hyperenhances in the arterial phase, washes out and lacks hepatocyte uptake.
# Keys: t1_water, t1_fat, t2_haste, t2_fse, dwi, adc, pre, arterial, portal, transitional, hbp
# (the last four as enhancement over pre).
LESION_SIGNAL: dict[str, dict[str, float]] = {
    "early_hcc": {"t1_water": 420, "t1_fat": 70, "t2_haste": 185, "t2_fse": 205, "dwi": 155,
                  "adc": 1150, "pre": 400, "arterial": 110, "portal": 230, "transitional": 270,
                  "hepatobiliary": 330},
    "progressed_hcc": {"t1_water": 330, "t1_fat": 10, "t2_haste": 300, "t2_fse": 330, "dwi": 320,
                       "adc": 850, "pre": 330, "arterial": 560, "portal": 250, "transitional": 140,
                       "hepatobiliary": 70},
}
LESION_SPREAD: dict[str, float] = {"t1_water": 40, "t1_fat": 30, "t2_haste": 45, "t2_fse": 45, "dwi": 55,
                                   "adc": 120, "pre": 35, "arterial": 160, "portal": 60, "transitional": 60,
                                   "hepatobiliary": 100}


@dataclass(frozen=True)
class Sequence:
    """Acquisition parameters of one MR series, as they appear in the header."""

    role: str
    scanning_sequence: str
    sequence_variant: str
    scan_options: str
    acquisition_type: str
    te_ms: float
    tr_ms: float
    flip_deg: float
    noise: float
    echo_train: int = 1
    b_value: float | None = None


def sequences(field_t: float) -> dict[str, Sequence]:
    """The protocol's series at 1.5 or 3 T; in- and opposed-phase echo times depend on the field."""
    te_in, te_out = (4.6, 2.3) if field_t < 2 else (2.3, 1.15)
    dynamic = Sequence("pre", "GR", "SP\\SS", "FS", "3D", 1.3 if field_t < 2 else 1.4, 3.9, 12.0, 14.0)
    out = {
        "t1_in": Sequence("t1_in", "GR", "SP", "", "2D", te_in, 160.0, 70.0, 10.0),
        "t1_out": Sequence("t1_out", "GR", "SP", "", "2D", te_out, 160.0, 70.0, 10.0),
        "t2_haste": Sequence("t2_haste", "SE", "SK\\SP", "PFP", "2D", 92.0, 1400.0, 160.0, 9.0,
                             echo_train=128),
        "t2_fse": Sequence("t2_fse", "SE", "SK\\SP\\OSP", "FS\\RT", "2D", 85.0, 3800.0, 150.0, 8.0,
                           echo_train=17),
        "dwi": Sequence("dwi", "EP", "SK\\SP", "FS", "2D", 62.0, 5200.0, 90.0, 12.0, b_value=800.0),
    }
    for role in ("pre", "arterial", "portal", "transitional", "hepatobiliary"):
        out[role] = replace(dynamic, role=role)
    return out


def sample_signal(rng: np.random.Generator, label: str, difficulty: float) -> dict[str, float]:
    """A lesion's signal: its class mixed toward the other class by a latent grade, then scattered."""
    other = "progressed_hcc" if label == "early_hcc" else "early_hcc"
    mix = float(np.clip(difficulty * abs(rng.normal(0.0, 0.45)), 0.0, 0.9))
    out = {}
    for key, value in LESION_SIGNAL[label].items():
        v = (1 - mix) * value + mix * LESION_SIGNAL[other][key]
        out[key] = round(float(max(v + difficulty * LESION_SPREAD[key] * rng.normal(), 0.0)), 2)
    return out


def _gd(tissue: str, t_s: float) -> float:
    if tissue not in GD_ENHANCEMENT:
        return 0.0
    knots, values = GD_ENHANCEMENT[tissue]
    return float(np.interp(t_s, knots, values))


def tissue_signal(role: str, t_s: float | None, lesions: list[Lesion],
                  signal: Mapping[str, Mapping[str, float]], liver_fat: float,
                  strength: float) -> dict[str, tuple[float, ...]]:
    """Every tissue's signal in one series; T1 in/out give (water, fat) pairs, others one value."""
    out: dict[str, tuple[float, ...]] = {}
    if role in ("t1_in", "t1_out"):
        for tissue, (w, f) in T1_WATER_FAT.items():
            if tissue == "liver":
                w, f = w * (1 - liver_fat), w * liver_fat * 1.6
            out[tissue] = (w, f)
        for lesion in lesions:
            s = signal[lesion.lesion_id]
            out[f"lesion:{lesion.lesion_id}"] = (s["t1_water"], s["t1_fat"])
        return out
    table = {"t2_haste": T2_HASTE, "t2_fse": T2_FSE_FS, "dwi": DWI_HIGH_B, "adc": ADC}.get(role, T1_FS_PRE)
    for tissue, value in table.items():
        enh = strength * _gd(tissue, t_s) if (t_s is not None and table is T1_FS_PRE) else 0.0
        out[tissue] = (value + enh,)
    for lesion in lesions:
        s = signal[lesion.lesion_id]
        if table is T1_FS_PRE:
            value = s["pre"] + (strength * _lesion_enh(s, t_s) if t_s is not None else 0.0)
        else:
            value = s[role]
        out[f"lesion:{lesion.lesion_id}"] = (value,)
    return out


def _lesion_enh(s: Mapping[str, float], t_s: float) -> float:
    knots = (0.0, 15.0, GD_TIMES["arterial"][0], GD_TIMES["portal"][0], GD_TIMES["transitional"][0],
             GD_TIMES["hepatobiliary"][0])
    return float(np.interp(t_s, knots, (0.0, 0.0, s["arterial"], s["portal"], s["transitional"],
                                        s["hepatobiliary"])))


def low_b_signal(high_b: Mapping[str, tuple[float, ...]], adc: Mapping[str, tuple[float, ...]],
                 b_high: float, b_low: float) -> dict[str, tuple[float, ...]]:
    """The low-b image that goes with a high-b one: S_low = S_high * exp((b_high - b_low) * ADC)."""
    return {k: (min(v[0] * float(np.exp((b_high - b_low) * adc[k][0] * 1e-6)), 3000.0),)
            for k, v in high_b.items()}


def to_magnitude(rng: np.random.Generator, volume: np.ndarray, sigma: float) -> np.ndarray:
    """Rician magnitude of ``volume`` (rows x columns planes) with coil shading, as uint16."""
    planes, rows, cols = volume.shape
    yy = np.linspace(-1.0, 1.0, rows, dtype=np.float32)[:, None]
    xx = np.linspace(-1.0, 1.0, cols, dtype=np.float32)[None, :]
    shading = 1.0 + 0.18 * yy * yy + 0.1 * xx * xx
    real = volume * shading + rng.standard_normal(volume.shape, dtype=np.float32) * np.float32(sigma)
    imag = rng.standard_normal(volume.shape, dtype=np.float32) * np.float32(sigma)
    return np.asarray(np.clip(np.sqrt(real * real + imag * imag), 0, 4095), dtype=np.uint16)
