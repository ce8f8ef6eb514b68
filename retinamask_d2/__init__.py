"""RetinaMask for detectron2: importing this package registers the `RetinaMask` meta-architecture
and the `build_retinamask_resnet_fpn_backbone` backbone."""

from .arch import RetinaMask
from .config import add_retinamask_config
from .modeling import build_retinamask_resnet_fpn_backbone

__all__ = ["RetinaMask", "add_retinamask_config", "build_retinamask_resnet_fpn_backbone"]
