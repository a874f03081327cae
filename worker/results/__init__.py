"""Outputs a PACS can show: TID 1500 Structured Report, Secondary Capture, and their write-back."""
