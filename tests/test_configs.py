"""Every shipped config loads, builds its model and runs it; the paper configs hold the recipe."""

from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from retinamask_d2 import RetinaMask, add_retinamask_config
from tests.common import CONFIGS_DIR

CONFIG_FILES = sorted(CONFIGS_DIR.rglob("*.yaml"))
PAPER_CONFIGS = sorted(p for p in CONFIG_FILES if p.parent.name == "paper" and "Base" not in p.name)


def _load(path: Path):
    cfg = get_cfg()
    add_retinamask_config(cfg)
    cfg.merge_from_file(str(path))
    return cfg


def test_the_expected_configs_exist():
    names = {str(p.relative_to(CONFIGS_DIR)) for p in CONFIG_FILES}
    assert {
        "Base-RetinaMask.yaml",
        "retinamask_R50_FPN.yaml",
        "retinamask_R50_FPN_P3P5.yaml",
        "retinamask_R50_FPN_thin.yaml",
        "paper/retinamask_R50_FPN_2x_ms.yaml",
        "paper/retinamask_R101_FPN_2x_ms.yaml",
        "paper/retinamask_R101_FPN_GN_2x_ms.yaml",
        "paper/retinamask_X101_32x8d_FPN_GN_2x_ms.yaml",
    } <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(CONFIGS_DIR)))
def test_config_builds_a_model_that_infers_and_trains_a_step(path):
    cfg = _load(path)
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert isinstance(model, RetinaMask)
    with torch.no_grad():
        # Without weights (FrozenBN is an identity) deep features are meaningless: make every
        # anchor a detection (score 0.5, box = anchor) so that the mask branch runs for sure.
        for layer in (model.head.cls_score, model.head.bbox_pred):
            layer.weight.zero_()
            layer.bias.zero_()
        (out,) = model([{"image": torch.rand(3, 64, 64) * 255}])
    result = out["instances"]
    expected = 50 if cfg.MODEL.RETINAMASK.DROP_UNMASKED else 100
    if cfg.MODEL.RETINAMASK.MASK_NMS.ENABLED:  # mask NMS may drop duplicates among the 50 masked
        assert expected - 50 < len(result) <= expected
    else:
        assert len(result) == expected
    assert result.pred_masks.shape[1:] == (64, 64)

    # Training: scores that differ between anchors (equal ones make NMS keep an arbitrary
    # set), boxes still the anchors, some of which lie on the GT box.
    torch.nn.init.normal_(model.head.cls_score.weight, std=0.01)
    inst = Instances((64, 64), gt_boxes=Boxes(torch.tensor([[8.0, 8.0, 40.0, 56.0]])))
    inst.gt_classes = torch.tensor([cfg.MODEL.RETINANET.NUM_CLASSES - 1])
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, 8:56, 8:40] = True
    inst.gt_masks = BitMasks(mask)
    with EventStorage() as storage:
        losses = model.train()([{"image": torch.rand(3, 64, 64) * 255, "instances": inst}])
        assert storage.latest()["retinamask/num_mask_rois"][0] > 1  # detections, not only GT
    dice = {"loss_mask_dice"} if cfg.MODEL.RETINAMASK.MASK_DICE_WEIGHT else set()
    frame = {"loss_mask_frame"} if cfg.MODEL.RETINAMASK.MASK_ROI == "oriented" else set()
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask"} | dice | frame
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.mask_branch.mask_head.predictor.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.name)
def test_paper_configs_switch_the_whole_recipe_on(path):
    cfg = _load(path)
    assert cfg.MODEL.BACKBONE.NAME == "build_retinamask_resnet_fpn_backbone"  # P6 from P5
    assert cfg.MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1.ENABLED
    assert tuple(cfg.MODEL.RETINANET.BBOX_REG_WEIGHTS) == (10.0, 10.0, 5.0, 5.0)
    assert cfg.MODEL.RETINANET.NMS_THRESH_TEST == 0.4
    assert cfg.MODEL.RETINAMASK.ALLOW_LOW_QUALITY_MATCHES
    assert cfg.MODEL.RETINAMASK.MASK_IN_FEATURES == ["p3", "p4", "p5"]
    assert cfg.MODEL.RETINAMASK.TEST_TOPK_MASKS == 50 and cfg.MODEL.RETINAMASK.DROP_UNMASKED
    assert cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE == "ROIAlign"
    assert cfg.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO == 2
    assert cfg.SOLVER.MAX_ITER == 180000 and cfg.SOLVER.IMS_PER_BATCH == 16  # 2x
    assert min(cfg.INPUT.MIN_SIZE_TRAIN) == 640 and max(cfg.INPUT.MIN_SIZE_TRAIN) == 1000
    assert cfg.INPUT.MIN_SIZE_TEST == 800 and cfg.INPUT.MAX_SIZE_TRAIN == 1333
    gn = "GN" in path.name
    assert (cfg.MODEL.FPN.NORM == "GN") == gn and (cfg.MODEL.RETINANET.NORM == "GN") == gn
    assert cfg.MODEL.WEIGHTS.startswith("detectron2://ImageNetPretrained/")
    # Warm-up over the official number of images: 500 x 8, 500 x 4.
    official_batch = 8 if cfg.MODEL.RESNETS.DEPTH == 50 else 4
    assert cfg.SOLVER.WARMUP_ITERS * cfg.SOLVER.IMS_PER_BATCH == 500 * official_batch
    assert cfg.SOLVER.WEIGHT_DECAY_NORM == (1e-4 if gn else 0.0)  # official decays GN weights
    assert cfg.MODEL.ANCHOR_GENERATOR.OFFSET == 0.5
    # the official inference: anchors, thresholds, candidates, detections, input mean
    assert cfg.MODEL.ANCHOR_GENERATOR.NAME == "RetinaMaskOfficialAnchorGenerator"
    assert cfg.MODEL.ANCHOR_GENERATOR.OFFSET == 0.5
    assert cfg.MODEL.RETINANET.SCORE_THRESH_TEST == 0.05
    assert cfg.MODEL.RETINANET.TOPK_CANDIDATES_TEST == 1000
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 100
    assert cfg.MODEL.PIXEL_MEAN == [102.9801, 115.9465, 122.7717]
    assert cfg.MODEL.RETINAMASK.FPN_NORM_CONV_BIAS == gn


def test_default_config_pools_small_boxes_from_p2_and_keeps_the_box_branch():
    cfg = _load(CONFIGS_DIR / "retinamask_R50_FPN.yaml")
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert model.head_in_features == ["p3", "p4", "p5", "p6", "p7"]
    assert model.mask_branch.in_features == ["p2", "p3", "p4", "p5"]
    # Level k = floor(4 + log2(sqrt(area) / 224)) clamped to [2, 5]: a 32-pixel box goes to P2
    # (it went to P3, the finest, without P2), a 224-pixel box to P4. Maps filled with their
    # level number show where each box was pooled from.
    features = [torch.full((1, 256, 512 // 2**k, 512 // 2**k), float(k)) for k in (2, 3, 4, 5)]
    boxes = Boxes(torch.tensor([[100.0, 100.0, 132.0, 132.0], [100.0, 100.0, 324.0, 324.0]]))
    pooled = model.mask_branch.pooler(features, [boxes])
    assert pooled[:, 0, 7, 7].tolist() == [2.0, 4.0]
    assert cfg.MODEL.RETINAMASK.MASK_DICE_WEIGHT == 1.0


def test_p3p5_config_and_the_paper_configs_pool_from_p3_without_dice():
    for path in (CONFIGS_DIR / "retinamask_R50_FPN_P3P5.yaml", *PAPER_CONFIGS):
        cfg = _load(path)
        assert cfg.MODEL.RETINAMASK.MASK_IN_FEATURES == ["p3", "p4", "p5"], path.name
        assert cfg.MODEL.RESNETS.OUT_FEATURES == ["res3", "res4", "res5"], path.name
        assert cfg.MODEL.RETINAMASK.MASK_DICE_WEIGHT == (0.0 if path in PAPER_CONFIGS else 1.0)
