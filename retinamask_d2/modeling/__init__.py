"""RetinaMask's model; importing this module registers the meta-architecture, the backbone and
the official-shape anchor generator."""

from .anchor_generator import RetinaMaskOfficialAnchorGenerator
from .backbone import build_retinamask_resnet_fpn_backbone
from .backbone_mobilenetv2 import build_retinamask_mobilenetv2_fpn_backbone
from .mask_branch import RetinaMaskBranch
from .mask_head_56 import MaskRCNNConvUpsample2xHead
from .mask_rois import select_mask_training_rois
from .retinamask import RetinaMask
from .smooth_l1 import SelfAdjustingSmoothL1Loss

__all__ = [
    "MaskRCNNConvUpsample2xHead",
    "RetinaMask",
    "RetinaMaskBranch",
    "RetinaMaskOfficialAnchorGenerator",
    "SelfAdjustingSmoothL1Loss",
    "build_retinamask_mobilenetv2_fpn_backbone",
    "build_retinamask_resnet_fpn_backbone",
    "select_mask_training_rois",
]
