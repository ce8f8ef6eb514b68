"""Checkpoints from elsewhere, converted to this project's model."""

from .imagenet import (
    ImageNetCheckpointError,
    bundled_mobilenetv2_file,
    convert_imagenet_mobilenetv2,
    load_state_dict_file,
    to_backbone_checkpoint,
)
from .imagenet_path import MOBILENETV2_URL, bundled_mobilenetv2_checkpoint
from .official import (
    OfficialCheckpointError,
    convert_official_state_dict,
    load_official_state_dict,
    to_detectron2_checkpoint,
)

__all__ = [
    "MOBILENETV2_URL",
    "ImageNetCheckpointError",
    "OfficialCheckpointError",
    "bundled_mobilenetv2_checkpoint",
    "bundled_mobilenetv2_file",
    "convert_imagenet_mobilenetv2",
    "convert_official_state_dict",
    "load_official_state_dict",
    "load_state_dict_file",
    "to_backbone_checkpoint",
    "to_detectron2_checkpoint",
]
