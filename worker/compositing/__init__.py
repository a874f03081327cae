"""The composite command; the composites themselves are made by worker/study_composites.py."""
