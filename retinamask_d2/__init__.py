"""RetinaMask for detectron2: importing this package registers the `RetinaMask` meta-architecture,
the `build_retinamask_resnet_fpn_backbone` and `build_retinamask_mobilenetv2_fpn_backbone`
backbones, the `imagenet://MobileNetV2` weights path and the synthetic dataset names."""

from . import data  # noqa: F401  (registers retinamask_synthetic_train/_val)
from .checkpoint import imagenet_path  # noqa: F401  (registers imagenet://MobileNetV2)
from .config import add_retinamask_config
from .modeling import (
    RetinaMask,
    build_retinamask_mobilenetv2_fpn_backbone,
    build_retinamask_resnet_fpn_backbone,
)

__all__ = [
    "RetinaMask",
    "add_retinamask_config",
    "build_retinamask_mobilenetv2_fpn_backbone",
    "build_retinamask_resnet_fpn_backbone",
]
