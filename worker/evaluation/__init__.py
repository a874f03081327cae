"""Evaluation as users expect it: ground truth and readers' reads imported from CSV, the model's
predictions from the audit database, metrics with patient-level intervals, reports, and the
papers' experiments (misregistration, architectures)."""
