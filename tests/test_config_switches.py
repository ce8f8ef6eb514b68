"""Every MODEL.RETINAMASK key reaches the model: changing it changes a result.

The table ``SWITCH_TESTS`` names, for each key, the test below that fails when the key is
ignored; a key added to ``add_retinamask_config`` without one fails
``test_every_key_has_a_test``. ``tests/test_export_switches.py`` checks that the inference keys
change the exported model as they change the eager one.
"""

import importlib

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from retinamask_d2 import add_retinamask_config
from retinamask_d2.modeling import retinamask as retinamask_module
from tests.common import config_leaf_keys, get_tiny_cfg, set_retinamask_keys

H, W = 96, 128
# Where each key is shown to take effect: (test module, test name).
HERE = "test_config_switches"
ROIS = (HERE, "test_training_roi_keys_and_not_the_test_keys_choose_the_training_rois")
LEVELS = (HERE, "test_level_assignment_keys")
TOPK = ("test_inference_postprocess", "test_only_the_top_k_detections_get_masks")
ADJUSTING = (HERE, "test_self_adjusting_keys_reach_the_loss")
METADATA = (
    "test_predictor",
    "test_metadata_comes_from_the_models_config_without_reading_a_dataset",
)
ORIENTED = ("test_oriented_rois", "test_oriented_keys_reach_the_frames_and_the_frame_loss")
ORIENTED_KEYS = ("MIN_ELONGATION", "LENGTH_PAD", "WIDTH_PAD", "MIN_WIDTH_RATIO")
ORIENTED_KEYS += ("HEAD_CONV_DIM", "LOSS_WEIGHT")
ATSS = ("test_atss_matcher", "test_switch_is_read_from_the_config_and_checked")
SWITCH_TESTS = {
    "MASK_IN_FEATURES": (
        "test_configs",
        "test_default_config_pools_small_boxes_from_p2_and_keeps_the_box_branch",
    ),
    "CANONICAL_BOX_SIZE": LEVELS,
    "CANONICAL_LEVEL": LEVELS,
    "TRAIN_TOPK": ROIS,
    "TRAIN_SCORE_THRESH": ROIS,
    "TRAIN_TOPK_CANDIDATES": ROIS,
    "TRAIN_NMS_THRESH": ROIS,
    "POSITIVE_IOU": (HERE, "test_positive_iou_decides_which_detections_learn_masks"),
    "MASK_LOSS_WEIGHT": (HERE, "test_mask_loss_weight_scales_only_the_mask_loss"),
    "MASK_DICE_WEIGHT": (HERE, "test_mask_dice_weight_adds_a_dice_term_and_changes_nothing_else"),
    "MASK_BOX_SCALE": (HERE, "test_mask_box_scale_learns_over_the_scaled_boxes"),
    "TEST_TOPK_MASKS": TOPK,
    "DROP_UNMASKED": TOPK,
    "TEST_MASK_SCORE_THRESH": (
        "test_masks_where_kept",
        "test_mask_score_threshold_gives_masks_to_confident_detections_only",
    ),
    "ALLOW_LOW_QUALITY_MATCHES": ("test_model_retinamask", "test_low_quality_matching_is_a_switch"),
    "BOX_REG_LOSS_WEIGHT": (
        "test_model_retinamask",
        "test_box_loss_weight_scales_only_the_box_loss",
    ),
    "SELF_ADJUSTING_SMOOTH_L1.ENABLED": (
        "test_model_retinamask",
        "test_self_adjusting_loss_with_beta_pinned_equals_detectron2_smooth_l1",
    ),
    "SELF_ADJUSTING_SMOOTH_L1.MOMENTUM": ADJUSTING,
    "SELF_ADJUSTING_SMOOTH_L1.BETA_MAX": ADJUSTING,
    "SELF_ADJUSTING_SMOOTH_L1.BETA_MIN": ADJUSTING,
    "MASK_NMS.ENABLED": (
        "test_thin_object_switches",
        "test_crossing_bars_survive_mask_nms_and_not_box_nms",
    ),
    "MASK_NMS.BOX_THRESH": (
        "test_thin_object_switches",
        "test_mask_nms_box_stage_keeps_its_threshold",
    ),
    "MASK_NMS.THRESH": ("test_thin_object_switches", "test_mask_nms_against_a_hand_computed_iou"),
    "MASK_NMS.PRE_TOPK": (
        "test_thin_object_switches",
        "test_mask_nms_masks_pre_topk_and_box_nms_for_the_rest",
    ),
    "CLASS_AGNOSTIC_NMS": (
        "test_thin_object_switches",
        "test_class_agnostic_nms_keeps_one_detection_per_object",
    ),
    "FPN_NORM_CONV_BIAS": (
        "test_convert_official",
        "test_gn_fpn_bias_needs_the_switch_and_anchors_must_match_the_config",
    ),
    "TEST_CLASSES_BY_NAME": ("test_evaluation_inputs", "test_classes_mapped_by_name_when_asked"),
    "MASK_ROI": (
        "test_oriented_rois",
        "test_saturated_model_pastes_each_detection_its_rotated_rectangle",
    ),
    **{f"ORIENTED.{key}": ORIENTED for key in ORIENTED_KEYS},
    "ATSS.ENABLED": ATSS,
    "ATSS.TOPK": ATSS,
    "TEST_EMBEDDINGS": (
        "test_mask_embeddings",
        "test_test_embeddings_returns_maskpool_of_each_masked_detection_and_zeros_for_the_rest",
    ),
    "CLASS_NAMES": METADATA,
    "DATASET_CATEGORY_IDS": METADATA,
}


def test_every_key_has_a_test():
    cfg = get_cfg()
    add_retinamask_config(cfg)
    assert config_leaf_keys(cfg.MODEL.RETINAMASK) == set(SWITCH_TESTS)
    for module, name in SWITCH_TESTS.values():
        assert callable(getattr(importlib.import_module(f"tests.{module}"), name)), name


def _annotated(boxes: list[list[float]], seed: int = 0) -> dict:
    image = torch.rand(3, H, W, generator=torch.Generator().manual_seed(seed)) * 255
    inst = Instances((H, W), gt_boxes=Boxes(torch.tensor(boxes)))
    inst.gt_classes = torch.zeros(len(boxes), dtype=torch.int64)
    masks = torch.zeros(len(boxes), H, W, dtype=torch.bool)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes):
        mask[int(y0) : int(y1), int(x0) : int(x1)] = True
    inst.gt_masks = BitMasks(masks)
    return {"image": image, "instances": inst}


def _detecting_model(**options):
    """A tiny RetinaMask whose every anchor is a detection of class 0 at its own box (score
    sigmoid(2) for class 0, sigmoid(-10) for the others; box deltas 0): training RoIs exist and
    overlap the GT, whatever the random backbone computes."""
    cfg = get_tiny_cfg()
    set_retinamask_keys(cfg, options)
    torch.manual_seed(0)
    model = build_model(cfg)
    head = model.head
    with torch.no_grad():
        for layer in (head.cls_score, head.bbox_pred):
            layer.weight.zero_()
            layer.bias.zero_()
        bias = head.cls_score.bias.view(-1, model.num_classes)  # anchor-major, class-minor
        bias[:, 0], bias[:, 1:] = 2.0, -10.0
    return model


def _training_rois(model, batch: list[dict]) -> list[Instances]:
    """Run a training forward; return the RoIs the mask head was trained on."""
    seen = []
    original = retinamask_module.RetinaMaskBranch.losses

    def spy(branch, features, detections, gt_instances):
        seen.append([d.pred_boxes.tensor.clone() for d in detections])
        return original(branch, features, detections, gt_instances)

    model.mask_branch.losses = spy.__get__(model.mask_branch)
    rois = []
    model.mask_branch.mask_head.register_forward_pre_hook(lambda _, args: rois.append(args[1]))
    with EventStorage():
        losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    return seen[0], rois[0], losses


def test_a_training_step_in_which_detections_overlap_the_gt():
    # detect -> clip -> match -> loss inside forward: the mask head learns from detections
    # (not only from the GT boxes), each positive paired with the GT it covers.
    gt = [[16.0, 16.0, 48.0, 48.0], [64.0, 40.0, 112.0, 88.0]]
    model = _detecting_model(TRAIN_TOPK=100)
    detections, (rois,), losses = _training_rois(model, [_annotated(gt)])
    assert len(detections[0]) == 100
    assert detections[0].min() < 0 or detections[0][:, 2].max() > W  # some leave the image
    boxes = rois.proposal_boxes.tensor
    assert len(boxes) > len(gt)  # positives beyond the 2 GT boxes themselves
    assert boxes.min() >= 0 and boxes[:, 2].max() <= W and boxes[:, 3].max() <= H  # clipped
    ious = torch.stack([_iou(boxes, torch.tensor(g).expand_as(boxes)) for g in gt], dim=1)  # (R, 2)
    matched = ious.argmax(dim=1)
    assert bool((ious.max(dim=1).values >= 0.5).all())
    assert torch.equal(rois.gt_masks.tensor[:, 30, 30], matched == 0)  # inside GT 0 only
    assert losses["loss_mask"] > 0


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt, rb = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(dim=1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_positive_iou_decides_which_detections_learn_masks():
    gt = [[16.0, 16.0, 48.0, 48.0]]
    counts = {}
    for threshold in (0.5, 0.7):
        model = _detecting_model(POSITIVE_IOU=threshold, TRAIN_NMS_THRESH=1.0, TRAIN_TOPK=10**4)
        _, (rois,), _ = _training_rois(model, [_annotated(gt)])
        ious = _iou(rois.proposal_boxes.tensor, torch.tensor(gt).expand(len(rois), 4))
        assert bool((ious >= threshold - 1e-6).all())
        counts[threshold] = len(rois)
    assert counts[0.5] > counts[0.7] >= 1


def test_training_roi_keys_and_not_the_test_keys_choose_the_training_rois():
    batch = [_annotated([[16.0, 16.0, 48.0, 48.0]])]

    def count(**options) -> int:
        detections, _, _ = _training_rois(_detecting_model(**options), batch)
        return len(detections[0])

    default = count()
    assert default == 100
    assert count(TRAIN_TOPK=7) == 7
    assert count(TRAIN_SCORE_THRESH=0.9) == 0  # every score is sigmoid(2) = 0.88
    assert count(TRAIN_NMS_THRESH=0.9, TRAIN_TOPK=10**4) > count(TRAIN_TOPK=10**4)
    assert count(TRAIN_TOPK_CANDIDATES=5, TRAIN_TOPK=10**4) <= 5 * 5  # 5 levels
    # Test-time settings leave training alone.
    model = _detecting_model()
    model.test_score_thresh, model.test_nms_thresh = 0.95, 0.01
    model.test_topk_candidates, model.max_detections_per_image = 1, 1
    detections, _, _ = _training_rois(model, batch)
    assert len(detections[0]) == default


def test_mask_loss_weight_scales_only_the_mask_loss():
    batch = [_annotated([[16.0, 16.0, 48.0, 48.0]])]
    _, _, one = _training_rois(_detecting_model(), batch)
    _, _, three = _training_rois(_detecting_model(MASK_LOSS_WEIGHT=3.0), batch)
    torch.testing.assert_close(three["loss_mask"], 3 * one["loss_mask"])
    assert three["loss_cls"] == one["loss_cls"] and three["loss_box_reg"] == one["loss_box_reg"]


def test_mask_dice_weight_adds_a_dice_term_and_changes_nothing_else():
    batch = [_annotated([[16.0, 16.0, 48.0, 48.0]])]
    with EventStorage():
        off = _detecting_model()(batch)
        model = _detecting_model(MASK_DICE_WEIGHT=0.5)
        on = model(batch)
    assert "loss_mask_dice" not in off
    assert {k: v for k, v in on.items() if k != "loss_mask_dice"} == off
    assert 0.0 < on["loss_mask_dice"] <= 0.5  # 0.5 x (1 - Dice), Dice in [0, 1]
    on["loss_mask_dice"].backward()
    assert model.mask_branch.mask_head.predictor.weight.grad.abs().sum() > 0


def test_mask_box_scale_learns_over_the_scaled_boxes():
    batch = [_annotated([[16.0, 16.0, 48.0, 48.0]])]
    pooled = []
    model = _detecting_model(MASK_BOX_SCALE=1.5)
    model.mask_branch.pooler.register_forward_pre_hook(lambda _, args: pooled.append(args[1]))
    _, (scaled,), _ = _training_rois(model, batch)
    _, (plain,), _ = _training_rois(_detecting_model(), batch)
    # Same RoIs, each box 1.5 x as wide and high about its centre; features are pooled over the
    # boxes the targets are cropped from (the RoIs the head's loss gets).
    centre = plain.proposal_boxes.get_centers().repeat(1, 2)
    expected = centre + (plain.proposal_boxes.tensor - centre) * 1.5
    torch.testing.assert_close(scaled.proposal_boxes.tensor, expected)
    torch.testing.assert_close(pooled[0][0].tensor, expected)
    with pytest.raises(ValueError, match="MASK_BOX_SCALE"):
        _detecting_model(MASK_BOX_SCALE=0.8)


@pytest.mark.parametrize("scale", [1.0, 1.5])
def test_masks_are_pasted_into_the_scaled_boxes(scale):
    # A head whose every mask probability is ~1: each pasted mask is its mask box, clipped to
    # the image; the returned boxes stay the detector's.
    model = _detecting_model(MASK_BOX_SCALE=scale).eval()
    with torch.no_grad():
        model.mask_branch.mask_head.predictor.weight.zero_()
        model.mask_branch.mask_head.predictor.bias.fill_(20.0)
        out = model([{"image": _annotated([[0.0, 0.0, 1.0, 1.0]])["image"]}])[0]["instances"]
    assert len(out) > 0
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    for box, mask in zip(out.pred_boxes.tensor[:10], out.pred_masks[:10], strict=True):
        centre = (box[:2] + box[2:]) / 2
        x0, y0, x1, y1 = (centre.repeat(2) + (box - centre.repeat(2)) * scale).tolist()
        inside = (xs > x0 + 1) & (xs < x1 - 1) & (ys > y0 + 1) & (ys < y1 - 1)
        near = (xs > x0 - 1) & (xs < x1 + 1) & (ys > y0 - 1) & (ys < y1 + 1)
        assert bool(mask[inside].all()) and not bool(mask[~near].any())


def test_level_assignment_keys():
    # Level k = floor(CANONICAL_LEVEL + log2(sqrt(area) / CANONICAL_BOX_SIZE)), clamped to
    # P3-P5; maps filled with their level number show where a box was pooled from.
    def level(**options) -> int:
        branch = _detecting_model(**options).mask_branch
        features = [torch.full((1, 64, 256 // 2**k, 256 // 2**k), float(k)) for k in (3, 4, 5)]
        box = Boxes(torch.tensor([[0.0, 0.0, 112.0, 112.0]]))  # sqrt area 112 = 224 / 2
        return int(branch.pooler(features, [box])[0, 0, 7, 7])

    assert level() == 3  # floor(4 - 1)
    assert level(CANONICAL_BOX_SIZE=112) == 4  # floor(4 + 0)
    assert level(CANONICAL_LEVEL=5) == 4  # floor(5 - 1)


def test_self_adjusting_keys_reach_the_loss():
    loss = _detecting_model(
        **{
            "SELF_ADJUSTING_SMOOTH_L1.MOMENTUM": 0.5,
            "SELF_ADJUSTING_SMOOTH_L1.BETA_MAX": 0.2,
            "SELF_ADJUSTING_SMOOTH_L1.BETA_MIN": 0.01,
        }
    ).box_reg_loss
    assert (loss.momentum, loss.beta_max, loss.beta_min) == (0.5, 0.2, 0.01)
    assert torch.allclose(loss.running_mean, torch.full((4,), 0.2))  # starts at BETA_MAX
    # One update with |x - t| = 1 on every coordinate: mean 0.5 * 0.2 + 0.5 * 1 = 0.6.
    loss(torch.ones(3, 4), torch.zeros(3, 4))
    torch.testing.assert_close(loss.running_mean, torch.full((4,), 0.6))
