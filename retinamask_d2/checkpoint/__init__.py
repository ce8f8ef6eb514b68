"""Checkpoints from elsewhere, converted to this project's model."""

from .official import (
    OfficialCheckpointError,
    convert_official_state_dict,
    load_official_state_dict,
    to_detectron2_checkpoint,
)

__all__ = [
    "OfficialCheckpointError",
    "convert_official_state_dict",
    "load_official_state_dict",
    "to_detectron2_checkpoint",
]
