"""ATSS anchor assignment (MODEL.RETINAMASK.ATSS) on hand-made cases."""

import pytest
import torch
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, Instances, pairwise_iou

from retinamask_d2.modeling.atss_matcher import atss_match
from tests.common import build_tiny_model, get_tiny_cfg

# The thin config's anchors: 3 sizes per octave from 32 to 512, ratios 0.2-5, strides 8-128.
STRIDES = [8, 16, 32, 64, 128]
RATIOS = [0.2, 0.5, 1.0, 2.0, 5.0]
BAR = [156.0, 253.0, 356.0, 259.0]  # a horizontal 200 x 6 bar in a 512 x 512 image


def _anchors(image_size: int = 512) -> tuple[DefaultAnchorGenerator, list[Boxes]]:
    generator = DefaultAnchorGenerator(
        sizes=[[s, s * 2 ** (1 / 3), s * 2 ** (2 / 3)] for s in (32, 64, 128, 256, 512)],
        aspect_ratios=[RATIOS],
        strides=STRIDES,
        offset=0.0,
    )
    features = [torch.zeros(1, 1, image_size // s, image_size // s) for s in STRIDES]
    return generator, generator(features)


def test_hand_computed_threshold_is_mean_plus_std_of_the_candidates():
    # One level, stride 10, three anchors sharing the GT's x extent: IoUs 0.5, 0.3 and 0.1
    # (GT 10 x 10 against anchors 10 tall by 20, 33.3 and 100). Mean 0.3, sample std 0.2:
    # threshold 0.5, so only the first is positive. Its centre (5, 10) is inside the GT box.
    gt = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    anchors = Boxes(torch.tensor([[0.0, 0.0, 10.0, 20.0], [0, 0, 10, 100 / 3], [0, 0, 10, 100]]))
    torch.testing.assert_close(pairwise_iou(gt, anchors)[0], torch.tensor([0.5, 0.3, 0.1]))
    matched, labels = atss_match(gt, [anchors], [3], [10])
    assert labels.tolist() == [1, 0, 0]
    assert matched.tolist() == [0, 0, 0]


def test_anchor_positive_for_two_objects_goes_to_the_one_it_overlaps_most():
    gts = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 12.0]]))
    anchors = Boxes(torch.tensor([[0.0, 0.0, 10.0, 11.0], [50, 50, 60, 60], [90, 0, 100, 10]]))
    matched, labels = atss_match(gts, [anchors], [3], [10])
    assert labels.tolist() == [1, 0, 0]
    # IoU 10/11 with the first GT, 11/12 with the second: the second wins.
    assert matched[0].item() == 1


def test_flat_bar_gets_positive_anchors_by_the_adaptive_rule_not_the_fallback():
    _, anchors = _anchors()
    gt = Boxes(torch.tensor([BAR]))
    iou = pairwise_iou(gt, Boxes.cat(anchors))[0]
    # The premise: no anchor reaches RetinaNet's 0.4 / 0.5 thresholds (best 0.2-0.3), so
    # without the low-quality fallback the bar has no positive at all.
    assert 0.2 < iou.max().item() < 0.4
    _, fixed = Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=False)(iou[None])
    assert (fixed == 1).sum() == 0
    matched, labels = atss_match(gt, anchors, [9 * 15] * 5, STRIDES)
    positive = labels == 1
    assert positive.sum() >= 1
    assert (matched[positive] == 0).all()
    # The best anchor is among the positives, and all positives lie on the bar: centres
    # within the bar's box widened to the coarsest stride.
    assert iou[positive].max().item() == pytest.approx(iou.max().item())
    centres = Boxes.cat(anchors)[positive].get_centers()
    assert ((centres[:, 0] >= BAR[0] - 64) & (centres[:, 0] <= BAR[2] + 64)).all()
    assert ((centres[:, 1] - 256).abs() <= 64).all()


def test_switch_makes_the_model_label_the_bar_by_atss():
    cfg = get_tiny_cfg()
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [RATIOS]
    cfg.MODEL.RETINAMASK.ALLOW_LOW_QUALITY_MATCHES = False
    model = build_tiny_model(cfg)
    anchors = model.anchor_generator([torch.zeros(1, 1, 512 // s, 512 // s) for s in STRIDES])
    gt = Instances((512, 512), gt_boxes=Boxes(torch.tensor([BAR])), gt_classes=torch.tensor([2]))
    (labels,), _ = model.label_anchors(anchors, [gt])
    assert (labels == 2).sum() == 0  # fixed thresholds, no fallback: the bar is background
    model.atss_topk = 9
    (labels,), (boxes,) = model.label_anchors(anchors, [gt])
    assert (labels == 2).sum() >= 1
    assert set(labels.unique().tolist()) <= {2, 3}  # the bar's class or background, none ignored
    torch.testing.assert_close(
        boxes[labels == 2], torch.tensor([BAR]).expand(int((labels == 2).sum()), 4)
    )


def test_switch_is_read_from_the_config_and_checked():
    cfg = get_tiny_cfg()
    assert build_tiny_model(cfg).atss_topk == 0
    cfg.MODEL.RETINAMASK.ATSS.ENABLED = True
    cfg.MODEL.RETINAMASK.ATSS.TOPK = 5
    assert build_tiny_model(cfg).atss_topk == 5
    cfg.MODEL.RETINAMASK.ATSS.TOPK = 0
    with pytest.raises(ValueError, match="MODEL.RETINAMASK.ATSS.TOPK"):
        build_tiny_model(cfg)
