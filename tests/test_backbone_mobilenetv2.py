"""MobileNetV2-FPN backbone: P2-P7 shapes and strides, FREEZE_AT and frozen BN, gradients of a
RetinaMask training step, GN-FPN, detectron2's RetinaNet and Mask R-CNN on it, bad options."""

from __future__ import annotations

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_backbone, build_model
from detectron2.utils.events import EventStorage
from torch import nn

from retinamask_d2 import RetinaMask, add_retinamask_config
from retinamask_d2.modeling.backbone_mobilenetv2 import MobileNetV2
from tests.common import CONFIGS_DIR, training_batch

NORM_TYPES = (nn.BatchNorm2d, FrozenBatchNorm2d)
MNV2_QUICKSTART = CONFIGS_DIR / "quickstart" / "retinamask_MNV2_synthetic.yaml"
# torchvision features indices of the stem and of each stage (strides 2, 4, 8, 16, 32)
STAGE_INDICES = {"stem": range(0, 2), "m2": range(2, 4), "m3": range(4, 7),
                 "m4": range(7, 14), "m5": range(14, 19)}  # fmt: skip


def _cfg(**changes):
    cfg = get_cfg()
    add_retinamask_config(cfg)
    cfg.merge_from_file(str(MNV2_QUICKSTART))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RETINANET.NUM_CLASSES = 3
    # small heads, as tests/common.py's tiny config: the backbone is what is tested
    cfg.MODEL.RETINANET.NUM_CONVS = 1
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 1
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 32
    cfg.merge_from_list([x for kv in changes.items() for x in kv])
    return cfg


def test_p2_to_p7_shapes_and_strides():
    cfg = _cfg()
    backbone = build_backbone(cfg).eval()
    assert backbone.bottom_up.output_shape() == {
        "m2": ShapeSpec(channels=24, stride=4),
        "m3": ShapeSpec(channels=32, stride=8),
        "m4": ShapeSpec(channels=96, stride=16),
        "m5": ShapeSpec(channels=1280, stride=32),
    }
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 128, 256))
    assert list(out) == ["p2", "p3", "p4", "p5", "p6", "p7"]
    for level, (name, x) in enumerate(out.items(), start=2):
        assert x.shape == (1, 64, 128 >> level, 256 >> level), name
        assert backbone.output_shape()[name] == ShapeSpec(channels=64, stride=2**level)


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 5])
def test_freeze_at_freezes_stem_and_first_stages(freeze_at):
    backbone = MobileNetV2(["m2", "m3", "m4", "m5"], norm="BN", freeze_at=freeze_at)
    frozen = list(STAGE_INDICES)[:freeze_at]
    for stage, indices in STAGE_INDICES.items():
        modules = [backbone.features[i] for i in indices]
        params = [p for m in modules for p in m.parameters()]
        norms = [n for m in modules for n in m.modules() if isinstance(n, NORM_TYPES)]
        assert norms and params
        if stage in frozen:
            assert not any(p.requires_grad for p in params), stage
            assert all(isinstance(n, FrozenBatchNorm2d) for n in norms), stage
        else:
            assert all(p.requires_grad for p in params), stage
            assert all(isinstance(n, nn.BatchNorm2d) for n in norms), stage


def test_frozen_bn_norm_and_bad_options_name_the_key():
    backbone = MobileNetV2(["m5"], norm="FrozenBN")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules()) == 52
    with pytest.raises(ValueError, match="MODEL.MOBILENETV2.NORM: 'GN'"):
        MobileNetV2(["m5"], norm="GN")
    with pytest.raises(ValueError, match=r"MODEL.MOBILENETV2.OUT_FEATURES: \['res5'\]"):
        MobileNetV2(["m4", "res5"])


def test_retinamask_trains_a_step_and_gradients_reach_the_unfrozen_stages():
    cfg = _cfg(**{"MODEL.BACKBONE.FREEZE_AT": 2})
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert isinstance(model, RetinaMask)
    with EventStorage():
        losses = model(training_batch())
    assert {"loss_cls", "loss_box_reg", "loss_mask"} <= set(losses)
    sum(losses.values()).backward()
    features = model.backbone.bottom_up.features
    for stage, indices in STAGE_INDICES.items():
        grads = [p.grad for i in indices for p in features[i].parameters()]
        if stage in ("stem", "m2"):
            assert all(g is None for g in grads), stage
        else:
            assert all(g is not None and g.abs().sum() > 0 for g in grads), stage


def test_gn_fpn():
    cfg = _cfg(**{"MODEL.FPN.NORM": "GN"})
    fpn = build_backbone(cfg)
    assert isinstance(fpn.fpn_lateral2.norm, nn.GroupNorm)
    cfg = _cfg(**{"MODEL.FPN.NORM": ""})
    assert build_backbone(cfg).fpn_lateral2.norm is None


@pytest.mark.parametrize("meta", ["RetinaNet", "GeneralizedRCNN"])
def test_detectron2_retinanet_and_mask_rcnn_train_on_it(meta):
    cfg = _cfg(**{"MODEL.META_ARCHITECTURE": meta, "MODEL.ROI_HEADS.NUM_CLASSES": 3})
    cfg.MODEL.RETINANET.NORM = ""  # v0.6's RetinaNet head takes no GN
    cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = (
        cfg.MODEL.ANCHOR_GENERATOR.SIZES
        if meta == "RetinaNet"
        else [[16], [32], [64], [128], [256]]
    )
    torch.manual_seed(0)
    model = build_model(cfg).train()
    with EventStorage():
        losses = model(training_batch())
    expected = (
        {"loss_cls", "loss_box_reg"} if meta == "RetinaNet" else {"loss_mask", "loss_rpn_cls"}
    )
    assert expected <= set(losses)
    sum(losses.values()).backward()
    assert model.backbone.bottom_up.features[18][0].weight.grad.abs().sum() > 0
