"""Evaluation metrics on arrays: point metrics in scikit-learn's style, the patient-level bootstrap,
DeLong's test and the majority-class baseline. No DICOM, no database: the worker feeds arrays in.
"""
