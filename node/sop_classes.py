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
