"""``[models]``: where pretrained weights are and which device runs inference.

A plain model with no loader: models/ imports none of our packages and reads no configuration
itself. The worker loads the ``[models]`` section (``worker.settings.ModelsSection``) and passes
these values in.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ModelsSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    weights_dir: Path | None = Field(None, description="default: $TORCH_HOME/hub/checkpoints")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
