"""CT attenuation: tissue enhancement over time after an iodine bolus, lesion kinetics, noise.

Enhancement is a time curve per tissue (seconds after the start of injection), not a table per
phase, so a late or early scan, or a patient with a slow circulation, moves every tissue the way it
would move in a real patient: the aorta peaks in the late arterial phase, the portal vein in the
portal venous phase, and the liver keeps enhancing until the portal phase.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from worker.synth.anatomy import Lesion

# Unenhanced attenuation (HU).
BASE_HU: dict[str, float] = {
    "air": -1000.0, "lung": -860.0, "stomach": 15.0, "fat": -100.0, "muscle": 50.0, "liver": 58.0, "gallbladder": 8.0,
    "portal_vein": 42.0, "spleen": 48.0, "kidney": 32.0, "ivc": 42.0, "aorta": 42.0,
    "bone": 720.0, "marrow": 210.0,
}

# Enhancement (HU) at seconds after injection start; linear between knots, flat after the last.
ENHANCEMENT: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "aorta": ((0, 14, 26, 36, 45, 70, 120, 180, 300), (0, 0, 180, 300, 260, 170, 135, 115, 95)),
    "portal_vein": ((0, 20, 35, 50, 70, 90, 180, 300), (0, 0, 60, 140, 175, 165, 120, 100)),
    "ivc": ((0, 25, 40, 70, 120, 180, 300), (0, 0, 50, 130, 125, 110, 95)),
    "liver": ((0, 22, 40, 70, 100, 180, 300), (0, 0, 18, 58, 58, 46, 38)),
    "spleen": ((0, 18, 35, 70, 180, 300), (0, 0, 75, 78, 56, 45)),
    "kidney": ((0, 18, 35, 70, 180, 300), (0, 0, 150, 145, 125, 100)),
    "muscle": ((0, 30, 70, 180, 300), (0, 0, 10, 12, 10)),
}

# Nominal acquisition times (s after injection start) and the spread between patients.
PHASE_TIMES: dict[str, tuple[float, float]] = {"arterial": (38.0, 4.0), "portal": (72.0, 6.0),
                                               "delayed": (180.0, 25.0)}

# Lesion kinetics per class: unenhanced HU and enhancement at (arterial, portal, delayed) nominal
# times. Liver is about (58; 18, 58, 46). The HCC grades form an ordered series (arterial
# hyperenhancement and washout rising with grade); the cholangiocellular class has an enhancing
# rim and a fibrous core with progressive delayed enhancement.
KINETICS: dict[str, tuple[float, float, float, float]] = {
    "early_hcc": (55.0, 14.0, 46.0, 39.0),
    "well_hcc": (52.0, 38.0, 50.0, 34.0),
    "moderate_hcc": (48.0, 64.0, 44.0, 24.0),
    "poor_hcc": (44.0, 80.0, 38.0, 17.0),
    "non_hcc_cc": (46.0, 52.0, 50.0, 44.0),  # the rim
}
CORE_KINETICS: dict[str, tuple[float, float, float, float]] = {
    "poor_hcc": (30.0, 4.0, 8.0, 10.0),  # necrosis
    "non_hcc_cc": (40.0, 8.0, 28.0, 58.0),  # fibrous stroma, progressive enhancement
}
CORE_FRACTION: dict[str, float] = {"poor_hcc": 0.45, "non_hcc_cc": 0.7}
HCC_GRADES = ("early_hcc", "well_hcc", "moderate_hcc", "poor_hcc")
# The spread at difficulty 1: about the gap between neighbouring grades.
SPREAD = np.array([4.0, 16.0, 8.0, 8.0])

NOISE_HU_AT_5MM = 10.0


@dataclass(frozen=True)
class Circulation:
    """A patient's bolus: how strongly and how fast the contrast arrives."""

    strength: float
    delay_s: float


Kinetics = tuple[float, float, float, float]
"""Base HU and the enhancement at the arterial, portal and delayed phases."""


@dataclass(frozen=True)
class LesionKinetics:
    """One lesion's sampled parameters: (base HU, enhancement at arterial, portal, delayed)."""

    rim: Kinetics
    core: Kinetics | None


def _four(values: Iterable[float]) -> Kinetics:
    """Base HU and the three enhancements, rounded as the truth files carry them."""
    base, arterial, portal, delayed = (round(float(v), 2) for v in values)
    return base, arterial, portal, delayed


def sample_kinetics(rng: np.random.Generator, label: str, difficulty: float) -> LesionKinetics:
    """Draw a lesion's kinetics around its class, overlapping its neighbours as difficulty grows.

    HCC grades are drawn on a continuous latent grade (so a hard well-differentiated HCC may look
    moderate, as in real series), then every parameter gets its own scatter.
    """
    if label in HCC_GRADES:
        grade = HCC_GRADES.index(label) + difficulty * rng.normal(0.0, 0.55)
        grade = float(np.clip(grade, 0.0, len(HCC_GRADES) - 1))
        lo = int(np.floor(grade))
        hi = min(lo + 1, len(HCC_GRADES) - 1)
        t = grade - lo
        rim = (1 - t) * np.array(KINETICS[HCC_GRADES[lo]]) + t * np.array(KINETICS[HCC_GRADES[hi]])
    else:
        rim = np.array(KINETICS[label])
    rim = rim + difficulty * SPREAD * rng.normal(size=4)
    core: Kinetics | None = None
    if label in CORE_KINETICS:
        core_arr = np.array(CORE_KINETICS[label])
        # On the hard setting the core may be small or faint, hiding the class's sign.
        mix = difficulty * float(rng.uniform(0.0, 0.6))
        core_arr = (1 - mix) * core_arr + mix * rim + difficulty * SPREAD * rng.normal(size=4)
        core = _four(core_arr)
    return LesionKinetics(rim=_four(rim), core=core)


def _lesion_curve(params: tuple[float, float, float, float], t: float) -> float:
    base, art, por, dela = params
    knots = (0.0, 20.0, PHASE_TIMES["arterial"][0], PHASE_TIMES["portal"][0], PHASE_TIMES["delayed"][0],
             300.0)
    return base + float(np.interp(t, knots, (0.0, 0.0, art, por, dela, dela * 0.9)))


def tissue_hu(t_s: float | None, circulation: Circulation, lesions: list[Lesion],
              kinetics: Mapping[str, LesionKinetics]) -> dict[str, tuple[float]]:
    """Every tissue's attenuation at ``t_s`` seconds after injection (``None``: no contrast)."""
    values: dict[str, tuple[float]] = {}
    for tissue, base in BASE_HU.items():
        enh = 0.0
        if t_s is not None and tissue in ENHANCEMENT:
            knots, hu = ENHANCEMENT[tissue]
            enh = circulation.strength * float(np.interp(t_s - circulation.delay_s, knots, hu))
        values[tissue] = (base + enh,)
    for lesion in lesions:
        kin = kinetics[lesion.lesion_id]
        values[f"lesion:{lesion.lesion_id}"] = (_curve(kin.rim, t_s, circulation),)
        if kin.core is not None:
            values[f"lesion:{lesion.lesion_id}:core"] = (_curve(kin.core, t_s, circulation),)
    return values


def _curve(params: tuple[float, float, float, float], t_s: float | None, circulation: Circulation) -> float:
    if t_s is None:
        return params[0]
    base = params[0]
    return base + circulation.strength * (_lesion_curve(params, t_s - circulation.delay_s) - base)


def add_noise(rng: np.random.Generator, hu: np.ndarray, slice_thickness: float, scale: float) -> None:
    """Add CT quantum noise in place: its standard deviation falls as 1/sqrt(slice thickness).

    The noise is mildly correlated between neighbouring pixels, as reconstruction kernels make it.
    """
    sigma = NOISE_HU_AT_5MM * scale * np.sqrt(5.0 / max(slice_thickness, 0.5))
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    smooth = noise.copy()
    smooth[..., 1:, :] += 0.5 * noise[..., :-1, :]
    smooth[..., :, 1:] += 0.5 * noise[..., :, :-1]
    hu += smooth * np.float32(sigma / 1.2247)
