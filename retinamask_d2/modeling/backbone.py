"""ResNet-FPN backbone whose P6 is computed from P5, as in RetinaMask."""

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelP6P7
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from torch import nn


@BACKBONE_REGISTRY.register()
def build_retinamask_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """ResNet-FPN with P6 = conv3x3/2(P5) and P7 = conv3x3/2(ReLU(P6)), from the levels of
    MODEL.FPN.IN_FEATURES (P2-P7 when res2 is among them, as the shipped configs have).

    The official RetinaMask code feeds P6 from the FPN's P5; detectron2's
    ``build_retinanet_resnet_fpn_backbone`` feeds it from res5. Everything else
    (lateral/output convs, ``MODEL.FPN.NORM`` for GN, fuse type) is detectron2's FPN; with a
    norm, ``MODEL.RETINAMASK.FPN_NORM_CONV_BIAS`` adds the official convs' bias.
    """
    return build_p6p7_fpn(cfg, build_resnet_backbone(cfg, input_shape))


def build_p6p7_fpn(cfg, bottom_up: Backbone) -> FPN:
    """detectron2's FPN of ``MODEL.FPN.*`` on ``bottom_up`` with P6/P7 computed from P5, the FPN
    of every RetinaMask backbone."""
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    fpn = FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(out_channels, out_channels, in_feature="p5"),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
    if cfg.MODEL.FPN.NORM and cfg.MODEL.RETINAMASK.FPN_NORM_CONV_BIAS:
        for conv in [*fpn.lateral_convs, *fpn.output_convs]:
            conv.bias = nn.Parameter(conv.weight.new_zeros(conv.out_channels))
    return fpn
