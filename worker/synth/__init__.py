"""Synthetic multi-phase liver CT and multi-sequence MRI studies with known ground truth.

No patient data may be used to try or test triphase, so this package writes studies that look like
what real scanners send: an analytic abdomen phantom rendered per series (with its own breath-hold
offset, grid and noise), DICOM headers in several vendor styles, one DICOM SEG per study that
carries the lesions' locations, and the truth (``labels.csv``) with simulated readers' reads
(``reads.csv``). Everything is deterministic for a given seed.
"""
