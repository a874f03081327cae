"""The C-STORE response statuses the node answers with, named (PS3.4 Annex B.2.3, PS3.7 C).

Every instance is either stored and answered SUCCESS, or refused with one of the failure codes
below: the sending PACS then knows to retry or to alert, and nothing is silently dropped.
"""

from __future__ import annotations

from enum import IntEnum


class StoreStatus(IntEnum):
    SUCCESS = 0x0000
    # Failure: processing failure (an unexpected error inside the node; logged with its traceback)
    PROCESSING_FAILURE = 0x0110
    # Refused: out of resources. The peer may retry later.
    OUT_OF_RESOURCES_DISK = 0xA700  # free space below the configured watermark
    OUT_OF_RESOURCES_WRITE = 0xA701  # the file system refused the write (ENOSPC, EIO, ...)
    OUT_OF_RESOURCES_DATABASE = 0xA702  # the audit database could not record the instance
    OUT_OF_RESOURCES_SHUTDOWN = 0xA703  # the node is shutting down
    OUT_OF_RESOURCES_TOO_LARGE = 0xA704  # the instance exceeds node.max_instance_mb
    # Error: data set does not match SOP class (or its SOP instance UID the request's)
    DATASET_DOES_NOT_MATCH = 0xA900
    # Error: cannot understand.
    CANNOT_UNDERSTAND = 0xC210  # the data set cannot be parsed
    INVALID_UID = 0xC211  # a UID is unsafe or malformed
    MISSING_IDENTIFIER = 0xC212  # a required identifying attribute is absent
