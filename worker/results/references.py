"""How our outputs name the images they derive from: an instance, and its frame when it has frames.

A classic CT or MR image is one image per SOP instance. An Enhanced or Legacy Converted instance
holds a whole series (often several phases) as numbered frames, so a reference to the instance
alone says nothing about which slice was used: the SR's image region, the SC's Source Image
Sequence and every other reference carry Referenced Frame Number when the image is a frame. The
header travels without its pixel data (the evidence lists and the SC's patient and study
attributes need nothing else).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes


@dataclass(frozen=True)
class SourceImage:
    """A classic image (``frame`` None) or one frame (1-based) of a multi-frame instance."""

    header: Dataset
    frame: int | None = None

    @property
    def uid(self) -> str:
        return str(self.header.SOPInstanceUID)

    @property
    def frames(self) -> list[int] | None:
        """Referenced frame numbers as highdicom's references take them (None for a classic image)."""
        return None if self.frame is None else [self.frame]


def image_reference(image: SourceImage, purpose: Dataset | None = None) -> Dataset:
    """An Image SOP Instance Reference item (PS3.3 Table 10-3), with the frame when there is one."""
    item = Dataset()
    item.ReferencedSOPClassUID = image.header.SOPClassUID
    item.ReferencedSOPInstanceUID = image.uid
    if image.frame is not None:
        item.ReferencedFrameNumber = image.frame
    if purpose is not None:
        item.PurposeOfReferenceCodeSequence = [purpose]
    return item


def source_image_sequence(images: Sequence[SourceImage]) -> list[Dataset]:
    """Source Image Sequence items for the images a picture derives from, each image once, in order.

    Two frames of one instance (phases split from one multi-frame series feed several channels)
    are two images and get an item each, so the first item is always the reference slice.
    """
    items: list[Dataset] = []
    seen: set[tuple[str, int | None]] = set()
    for image in images:
        key = (image.uid, image.frame)
        if key in seen:
            continue
        seen.add(key)
        purpose = Dataset()
        purpose.CodeValue = codes.DCM.SourceImageForImageProcessingOperation.value
        purpose.CodingSchemeDesignator = "DCM"
        purpose.CodeMeaning = codes.DCM.SourceImageForImageProcessingOperation.meaning
        items.append(image_reference(image, purpose))
    return items
