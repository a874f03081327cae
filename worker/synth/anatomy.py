"""The abdomen phantom: organs, vessels and lesions as ellipsoids and cylinders in patient mm.

Shapes are painted in order onto a grid, each with the fraction of every voxel it covers, so the
edges show partial volume that depends on the pixel size and the slice thickness, as on a real
scanner. Organs that ride on the diaphragm (liver and its lesions, spleen, kidneys, portal vein,
gallbladder) take a breath-hold offset; the body wall, spine, aorta and IVC stay still.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from worker.synth.geometry import Grid, Vec3, vec3


@dataclass(frozen=True)
class Shape:
    """An axis-aligned ellipsoid; a radius of ``inf`` along z makes it an elliptic cylinder."""

    tissue: str
    center: Vec3
    radii: Vec3
    motion: float = 0.0
    """How much of the breath-hold offset the shape follows (1 for liver, 0 for spine)."""

    def moved(self, offset: Vec3) -> Shape:
        if not self.motion:
            return self
        c = self.center
        return replace(self, center=(c[0] + self.motion * offset[0], c[1] + self.motion * offset[1],
                                     c[2] + self.motion * offset[2]))

    def contains(self, point: Vec3, margin_mm: float = 0.0) -> bool:
        """Whether ``point`` lies inside the shape grown by ``margin_mm``."""
        q = sum(((p - c) / (r + margin_mm)) ** 2 for p, c, r in zip(point, self.center, self.radii, strict=True)
                if np.isfinite(r))
        return q <= 1.0


@dataclass(frozen=True)
class Lesion:
    """A liver lesion: its truth and the geometry of its enhancing rim and inner core."""

    lesion_id: str
    label: str
    center: Vec3
    radii: Vec3
    core_fraction: float = 0.0
    """Relative radius of a core that enhances differently (necrosis, fibrous centre), 0 for none."""

    @property
    def size_mm(self) -> float:
        return round(2 * max(self.radii), 1)

    def shapes(self) -> list[Shape]:
        out = [Shape(f"lesion:{self.lesion_id}", self.center, self.radii, motion=1.0)]
        if self.core_fraction > 0:
            core = vec3(r * self.core_fraction for r in self.radii)
            out.append(Shape(f"lesion:{self.lesion_id}:core", self.center, core, motion=1.0))
        return out


INF = float("inf")

# Painted in this order: later shapes cover earlier ones. Sizes are an adult abdomen's.
ANATOMY: tuple[Shape, ...] = (
    Shape("fat", (0.0, 0.0, 0.0), (165.0, 118.0, INF)),  # subcutaneous fat
    Shape("muscle", (0.0, 2.0, 0.0), (150.0, 104.0, INF)),  # abdominal wall
    Shape("fat", (0.0, 0.0, 0.0), (140.0, 93.0, INF)),  # intra-abdominal fat
    Shape("muscle", (-38.0, 82.0, 0.0), (28.0, 22.0, INF)),  # paraspinal muscles
    Shape("muscle", (38.0, 82.0, 0.0), (28.0, 22.0, INF)),
    Shape("lung", (-75.0, 15.0, 215.0), (62.0, 78.0, 110.0), motion=1.0),  # lung bases
    Shape("lung", (75.0, 15.0, 205.0), (62.0, 78.0, 110.0), motion=1.0),
    Shape("stomach", (55.0, -35.0, 60.0), (38.0, 32.0, 45.0), motion=0.8),
    Shape("liver", (-58.0, -8.0, 40.0), (88.0, 78.0, 85.0), motion=1.0),
    Shape("liver", (15.0, -42.0, 62.0), (58.0, 32.0, 48.0), motion=1.0),  # left lobe
    Shape("gallbladder", (-45.0, -52.0, -18.0), (16.0, 15.0, 30.0), motion=1.0),
    Shape("portal_vein", (-35.0, 8.0, 22.0), (34.0, 8.0, 9.0), motion=1.0),
    Shape("spleen", (92.0, 40.0, 45.0), (32.0, 44.0, 55.0), motion=0.9),
    Shape("kidney", (-72.0, 58.0, -62.0), (28.0, 26.0, 50.0), motion=0.6),
    Shape("kidney", (72.0, 56.0, -50.0), (28.0, 26.0, 50.0), motion=0.6),
    Shape("ivc", (-24.0, 22.0, 0.0), (12.0, 10.0, INF)),
    Shape("aorta", (14.0, 34.0, 0.0), (11.0, 11.0, INF)),
    Shape("bone", (0.0, 62.0, 0.0), (20.0, 18.0, INF)),  # vertebral body, cortex
    Shape("marrow", (0.0, 62.0, 0.0), (16.5, 14.5, INF)),  # cancellous bone
)

TISSUES: tuple[str, ...] = ("air", "fat", "muscle", "lung", "stomach", "liver", "gallbladder", "portal_vein", "spleen",
                            "kidney", "ivc", "aorta", "bone", "marrow")

MAIN_LIVER = next(s for s in ANATOMY if s.tissue == "liver")
LEFT_LOBE = [s for s in ANATOMY if s.tissue == "liver"][1]


def place_lesions(rng: np.random.Generator, labels: Sequence[str], size_range: tuple[float, float],
                  core_fraction: Mapping[str, float]) -> list[Lesion]:
    """Put one lesion per label inside the right lobe, clear of the large vessels and each other."""
    lesions: list[Lesion] = []
    vessels = [s for s in ANATOMY if s.tissue in ("portal_vein", "ivc", "gallbladder")]
    for index, label in enumerate(labels):
        for _ in range(200):
            size = float(rng.uniform(*size_range))
            r = size / 2
            radii = (r, r * float(rng.uniform(0.85, 1.0)), r * float(rng.uniform(0.85, 1.0)))
            u = rng.normal(size=3)
            u *= float(rng.uniform(0.0, 0.55)) / np.linalg.norm(u)
            center = vec3(round(float(c + k * a), 2)
                          for c, k, a in zip(MAIN_LIVER.center, u, MAIN_LIVER.radii, strict=True))
            if not MAIN_LIVER.contains(center, margin_mm=-r - 4):
                continue
            if any(v.contains(center, margin_mm=r + 6) for v in vessels):
                continue
            if any(np.linalg.norm(np.subtract(center, o.center)) < r + max(o.radii) + 6 for o in lesions):
                continue
            lesions.append(Lesion(f"L{index + 1}", label, center, radii,
                                  core_fraction=core_fraction.get(label, 0.0)))
            break
        else:
            raise RuntimeError("could not place the lesions without overlap; use fewer or smaller lesions")
    return lesions


def _span(coords: np.ndarray, lo: float, hi: float) -> slice | None:
    inside = np.nonzero((coords >= lo) & (coords <= hi))[0]
    if inside.size == 0:
        return None
    return slice(int(inside[0]), int(inside[-1]) + 1)


def paint(volume: np.ndarray, grid: Grid, layers: Sequence[tuple[Shape, Sequence[float]]]) -> None:
    """Paint shapes with per-channel values onto ``volume`` (channels, z, y, x) in place.

    Each voxel becomes ``(1 - f) * old + f * value`` where ``f`` is the covered fraction. ``f`` is
    estimated from the implicit ellipsoid function and its gradient: the signed distance to the
    surface divided by the voxel's width along the surface normal, so thin slices give sharp edges
    across planes and thick slices blurred ones.
    """
    coords = grid.axis_coordinates()
    width = grid.resolution()
    xs, ys, zs = coords["x"], coords["y"], coords["z"]
    for shape, values in layers:
        (cx, cy, cz), (ax, ay, az) = shape.center, shape.radii
        pad = 2 * max(width.values())
        sx, sy = _span(xs, cx - ax - pad, cx + ax + pad), _span(ys, cy - ay - pad, cy + ay + pad)
        sz = slice(0, len(zs)) if not np.isfinite(az) else _span(zs, cz - az - pad, cz + az + pad)
        if sx is None or sy is None or sz is None:
            continue
        dx = ((xs[sx] - cx) / ax).astype(np.float32)[None, None, :]
        dy = ((ys[sy] - cy) / ay).astype(np.float32)[None, :, None]
        q2 = dx * dx + dy * dy
        grad2 = (dx * (width["x"] / ax)) ** 2 + (dy * (width["y"] / ay)) ** 2
        if np.isfinite(az):
            dz = ((zs[sz] - cz) / az).astype(np.float32)[:, None, None]
            q2 = q2 + dz * dz
            grad2 = grad2 + (dz * (width["z"] / az)) ** 2
        else:
            q2 = np.broadcast_to(q2, (sz.stop - sz.start, *q2.shape[1:]))
            grad2 = np.broadcast_to(grad2, q2.shape)
        q = np.sqrt(q2)
        # q - 1 over |grad q| . voxel width; grad q = d / (a q) so q cancels: (q2 - q) / sqrt(grad2).
        frac = np.clip(0.5 - (q2 - q) / np.sqrt(np.maximum(grad2, 1e-12)), 0.0, 1.0)
        for channel, value in enumerate(values):
            block = volume[channel, sz, sy, sx]
            block += frac * (np.float32(value) - block)


def layers_for(offset: Vec3, lesions: Sequence[Lesion],
               values: Mapping[str, Sequence[float]]) -> list[tuple[Shape, Sequence[float]]]:
    """The anatomy and lesions moved by a breath-hold ``offset``, each with its tissue's values.

    Lesions are painted right after the liver, so vessels that cross them stay on top.
    """
    layers: list[tuple[Shape, Sequence[float]]] = []
    for shape in ANATOMY:
        layers.append((shape.moved(offset), values[shape.tissue]))
        if shape is LEFT_LOBE:
            for lesion in lesions:
                rim = values[f"lesion:{lesion.lesion_id}"]
                for part in lesion.shapes():
                    layers.append((part.moved(offset), values.get(part.tissue, rim)))
    return layers
