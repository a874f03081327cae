"""The non-storage SOP class UIDs the node uses (PS3.4 Annex A, C).

pynetdicom creates its SOP class objects at import time, so a type checker cannot see them; these
are the same UIDs as plain, typed constants. Storage SOP classes come from
``pynetdicom.AllStoragePresentationContexts``.
"""

from __future__ import annotations

from typing import Final

from pydicom.uid import UID

VERIFICATION: Final = UID("1.2.840.10008.1.1")
STUDY_ROOT_FIND: Final = UID("1.2.840.10008.5.1.4.1.2.2.1")
STUDY_ROOT_MOVE: Final = UID("1.2.840.10008.5.1.4.1.2.2.2")

# Storage SOP classes that can locate lesions (what ``require_annotation`` waits for): Segmentation,
# RT Structure Set, and the SR classes that carry measurements and image regions (TID 1500). Dose
# reports, key-object selections and CAD SRs are SRs too, but locate no lesion.
SEGMENTATION: Final = UID("1.2.840.10008.5.1.4.1.1.66.4")
RT_STRUCTURE_SET: Final = UID("1.2.840.10008.5.1.4.1.1.481.3")
ANNOTATION_SR: Final = frozenset({
    UID("1.2.840.10008.5.1.4.1.1.88.11"),  # Basic Text SR
    UID("1.2.840.10008.5.1.4.1.1.88.22"),  # Enhanced SR
    UID("1.2.840.10008.5.1.4.1.1.88.33"),  # Comprehensive SR
    UID("1.2.840.10008.5.1.4.1.1.88.34"),  # Comprehensive 3D SR
    UID("1.2.840.10008.5.1.4.1.1.88.35"),  # Extensible SR
})


def is_annotation(sop_class_uid: str) -> bool:
    """Whether an instance of this SOP class can say where the lesions are."""
    return sop_class_uid in (SEGMENTATION, RT_STRUCTURE_SET) or sop_class_uid in ANNOTATION_SR
