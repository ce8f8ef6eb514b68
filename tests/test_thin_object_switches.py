"""The mechanisms for long, thin and crossing objects, each on a hand-made case: mask-IoU NMS,
class-agnostic NMS, 56 x 56 masks, extra anchor aspect ratios."""

import pytest
import torch
from detectron2.layers import paste_masks_in_image
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.structures import BitMasks, Boxes, Instances, pairwise_iou
from torch.nn import functional as F

from retinamask_d2.modeling.mask_nms import mask_iou_matrix, mask_nms
from tests.common import build_tiny_model, get_tiny_cfg, set_retinamask_keys

SIZE = 64
M = 28
# Two bars crossing as an X: the same box, masks along the two diagonals of the box.
X_BOX = [8.0, 8.0, 56.0, 56.0]


def _diagonal(flip: bool, side: int = M) -> torch.Tensor:
    """(side, side) probabilities: 1 on a 3-cell-wide diagonal (anti-diagonal if ``flip``)."""
    i = torch.arange(side)
    mask = ((i[:, None] - i[None, :]).abs() <= 1).float()
    return mask.flip(1) if flip else mask


def _model(**keys):
    cfg = get_tiny_cfg(num_classes=2)
    cfg.INPUT.MIN_SIZE_TEST = cfg.INPUT.MAX_SIZE_TEST = SIZE
    set_retinamask_keys(cfg, keys)
    torch.manual_seed(0)
    return build_tiny_model(cfg).eval()


def _infer(model, boxes, scores, classes, masks):
    """The model's inference when its box branch scores ``boxes`` (used as anchors, zero
    deltas) and its mask head predicts ``masks`` for them: RetinaNet's decoding and box NMS and
    RetinaMask's post-processing run for real."""
    by_score = {round(s, 4): m for s, m in zip(scores, masks)}

    def forward_inference(images, features, predictions):
        probabilities = torch.zeros(len(boxes), model.num_classes)
        probabilities[torch.arange(len(boxes)), torch.tensor(classes)] = torch.tensor(scores)
        anchors = [Boxes(torch.tensor(boxes))]
        deltas = [torch.zeros(len(boxes), 4)]
        return [model.inference_single_image(anchors, [probabilities], deltas, (SIZE, SIZE))]

    def predict(features, detections):
        for d in detections:
            d.pred_masks = torch.stack([by_score[round(s, 4)] for s in d.scores.tolist()]).reshape(
                -1, 1, M, M
            )
        return detections

    model.forward_inference = forward_inference
    model.mask_branch.predict = predict
    with torch.no_grad():
        (output,) = model([{"image": torch.zeros(3, SIZE, SIZE)}])
    return output["instances"]


def test_crossing_bars_survive_mask_nms_and_not_box_nms():
    boxes = [X_BOX, X_BOX, [9.0, 8.0, 56.0, 57.0]]  # the third: a duplicate of the first bar
    scores = [0.9, 0.8, 0.7]
    masks = [_diagonal(False), _diagonal(True), _diagonal(False)]

    box_only = _infer(_model(), boxes, scores, [0, 0, 0], masks)
    with_mask_nms = _infer(
        _model(**{"MASK_NMS.ENABLED": True, "MASK_NMS.BOX_THRESH": 1.0}),
        boxes,
        scores,
        [0, 0, 0],
        masks,
    )

    assert box_only.scores.tolist() == pytest.approx([0.9])  # box NMS keeps one bar
    assert with_mask_nms.scores.tolist() == pytest.approx([0.9, 0.8])  # both bars, no duplicate
    first, second = with_mask_nms.pred_masks
    assert first[20, 20] and not first[20, 44]  # the "\" bar
    assert second[20, 44] and not second[20, 20]  # the "/" bar


def test_mask_nms_box_stage_keeps_its_threshold():
    # With the default loose box stage (0.9), boxes of IoU 0.96 are still merged by box NMS,
    # those of IoU 0.8 reach the mask stage.
    near = [X_BOX, [9.0, 8.0, 56.0, 57.0]]
    apart = [X_BOX, [8.0, 8.0, 56.0, 44.0]]  # IoU 0.75
    masks = [_diagonal(False), _diagonal(True)]
    model = _model(**{"MASK_NMS.ENABLED": True})
    assert model.test_nms_thresh == 0.9
    assert len(_infer(model, near, [0.9, 0.8], [0, 0], masks)) == 1
    assert len(_infer(model, apart, [0.9, 0.8], [0, 0], masks)) == 2
    assert len(_infer(_model(), apart, [0.9, 0.8], [0, 0], masks)) == 1


def test_mask_nms_masks_pre_topk_and_box_nms_for_the_rest():
    # Three detections of class 0: A (masked), B overlapping A's box at IoU 0.75, C apart.
    boxes = [X_BOX, [8.0, 8.0, 56.0, 44.0], [0.0, 58.0, 20.0, 64.0]]
    scores = [0.9, 0.8, 0.7]
    masks = [_diagonal(False), _diagonal(True), _diagonal(False)]
    model = _model(**{"MASK_NMS.ENABLED": True, "MASK_NMS.PRE_TOPK": 1, "TEST_TOPK_MASKS": 3})
    result = _infer(model, boxes, scores, [0, 0, 0], masks)
    assert result.scores.tolist() == pytest.approx([0.9, 0.7])  # B: box IoU 0.75 > 0.4 with A
    assert result.pred_masks[0].any() and not result.pred_masks[1].any()  # only A has a mask
    all_masked = _model(**{"MASK_NMS.ENABLED": True, "MASK_NMS.PRE_TOPK": 3, "TEST_TOPK_MASKS": 1})
    result = _infer(all_masked, boxes, scores, [0, 0, 0], masks)
    assert result.scores.tolist() == pytest.approx([0.9, 0.8, 0.7])  # masks tell A and B apart
    assert all(m.any() for m in result.pred_masks)


def test_mask_nms_cuts_to_the_detection_count_after_suppression():
    # 3 objects, each found twice (same mask, box IoU 0.98; no box stage); 3 detections per
    # image at most.
    boxes, scores, masks = [], [], []
    for k, x in enumerate((0.0, 22.0, 44.0)):
        for d in (0.0, 0.2):
            boxes.append([x + d, 10.0, x + 18.0, 30.0])
            scores.append(0.9 - 0.2 * k - d / 2)
            masks.append(_diagonal(False))
    model = _model(**{"MASK_NMS.ENABLED": True, "MASK_NMS.BOX_THRESH": 1.0})
    model.max_detections_per_image = 3
    result = _infer(model, boxes, scores, [0] * 6, masks)
    # Cut before suppression, the 3 places would go to the first two objects.
    assert result.scores.tolist() == pytest.approx([0.9, 0.7, 0.5])


def test_mask_nms_needs_masks():
    with pytest.raises(ValueError, match="TEST_TOPK_MASKS"):
        _model(**{"MASK_NMS.ENABLED": True, "TEST_TOPK_MASKS": 0})


def test_mask_nms_against_a_hand_computed_iou():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, :2] = True  # 8 px
    masks[1, :3] = True  # 12 px, 8 shared with 0: IoU 8/12
    masks[2, 2:] = True  # 8 px, disjoint from 0, 4 shared with 1: IoU 4/16
    iou = mask_iou_matrix(masks)
    assert iou[0, 1].item() == pytest.approx(8 / 12) and iou[1, 2].item() == pytest.approx(1 / 4)
    assert iou[0, 2].item() == 0.0
    scores = torch.tensor([0.5, 0.9, 0.7])
    assert mask_nms(masks, scores, None, 0.5).tolist() == [1, 2]
    assert mask_nms(masks, scores, None, 0.7).tolist() == [1, 2, 0]
    # Per class: 0 and 1 differ in class, so 0 survives 1.
    assert mask_nms(masks, scores, torch.tensor([0, 1, 1]), 0.5).tolist() == [1, 2, 0]


def test_mask_nms_compares_empty_masks_by_box():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, :2] = True
    scores = torch.tensor([0.9, 0.8, 0.7])
    box_iou = torch.tensor([[1.0, 0.6, 0.2], [0.6, 1.0, 0.1], [0.2, 0.1, 1.0]])
    # 1 and 2 have empty masks: 1 overlaps 0's box at 0.6 > 0.4 and goes, 2 stays.
    assert mask_nms(masks, scores, None, 0.5, box_iou, 0.4).tolist() == [0, 2]
    assert mask_nms(masks, scores, None, 0.5, box_iou, 0.7).tolist() == [0, 1, 2]
    assert mask_nms(masks, scores, None, 0.5).tolist() == [0, 1, 2]  # no boxes: mask IoU 0


def test_class_agnostic_nms_keeps_one_detection_per_object():
    boxes = [X_BOX, [9.0, 8.0, 56.0, 57.0]]
    masks = [_diagonal(False), _diagonal(False)]
    per_class = _infer(_model(), boxes, [0.9, 0.8], [0, 1], masks)
    agnostic = _infer(_model(CLASS_AGNOSTIC_NMS=True), boxes, [0.9, 0.8], [0, 1], masks)
    assert per_class.pred_classes.tolist() == [0, 1]
    assert agnostic.pred_classes.tolist() == [0]
    # With mask NMS, the mask stage is agnostic too: the same mask in two classes is one object.
    both = _model(CLASS_AGNOSTIC_NMS=True, **{"MASK_NMS.ENABLED": True, "MASK_NMS.BOX_THRESH": 1.0})
    assert _infer(both, boxes, [0.9, 0.8], [0, 1], masks).pred_classes.tolist() == [0]
    mask_only = _model(**{"MASK_NMS.ENABLED": True, "MASK_NMS.BOX_THRESH": 1.0})
    assert _infer(mask_only, boxes, [0.9, 0.8], [0, 1], masks).pred_classes.tolist() == [0, 1]


def _head_56_model():
    cfg = get_tiny_cfg(num_classes=2)
    cfg.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsample2xHead"
    torch.manual_seed(0)
    return build_tiny_model(cfg)


def test_56_masks_reach_the_loss_with_56_targets():
    model = _head_56_model()
    gt = Instances((SIZE, SIZE))
    gt.gt_boxes = Boxes(torch.tensor([[8.0, 20.0, 56.0, 30.0]]))
    gt.gt_classes = torch.tensor([1])
    bitmap = torch.zeros(1, SIZE, SIZE, dtype=torch.bool)
    bitmap[0, 24:27, 8:56] = True  # a 3 px bar in a 10 px box
    gt.gt_masks = BitMasks(bitmap)
    roi = Instances((SIZE, SIZE))
    roi.pred_boxes = Boxes(gt.gt_boxes.tensor.clone())
    roi.scores = torch.tensor([0.9])
    roi.pred_classes = torch.tensor([1])
    features = [torch.randn(1, 64, SIZE // s, SIZE // s) for s in (8, 16, 32)]

    logits = []
    model.mask_branch.mask_head.predictor.register_forward_hook(
        lambda _m, _a, out: logits.append(out)
    )
    from detectron2.utils.events import EventStorage

    with EventStorage():
        loss = model.mask_branch.losses(features, [roi], [gt])["loss_mask"]

    (pred,) = logits
    assert pred.shape[-2:] == (56, 56)
    # Independent reference: BCE against the GT cropped at 56 x 56, for both RoIs (the
    # detection and the GT box, the same box here), class 1's channel.
    target = gt.gt_masks.crop_and_resize(gt.gt_boxes.tensor, 56).float()
    reference = F.binary_cross_entropy_with_logits(pred[:, 1], target.expand(len(pred), -1, -1))
    torch.testing.assert_close(loss, reference)
    # 28 x 28 targets would not even have the logits' shape: the loss saw 56.
    assert gt.gt_masks.crop_and_resize(gt.gt_boxes.tensor, 28).shape[-1] != pred.shape[-1]


def test_56_masks_are_pasted():
    model = _head_56_model().eval()
    dets = Instances((SIZE, SIZE))
    dets.pred_boxes = Boxes(torch.tensor([[8.0, 20.0, 56.0, 30.0]]))
    dets.scores = torch.tensor([0.9])
    dets.pred_classes = torch.tensor([1])
    predicted = []
    model.mask_branch.mask_head.register_forward_hook(
        lambda _m, args, _out: predicted.append(args[1][0].pred_masks.clone())
    )
    model.forward_inference = lambda images, features, predictions: [dets]
    with torch.no_grad():
        (out,) = model([{"image": torch.zeros(3, SIZE, SIZE)}])
    (masks,) = predicted
    assert masks.shape == (1, 1, 56, 56)
    expected = paste_masks_in_image(masks[:, 0], dets.pred_boxes, (SIZE, SIZE))
    assert torch.equal(out["instances"].pred_masks, expected)


def _anchors(ratios, grid: int):
    cfg = get_tiny_cfg()
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [ratios]
    shapes = build_tiny_model(cfg).backbone.output_shape()
    from detectron2.layers import ShapeSpec

    levels = [f"p{i}" for i in range(3, 8)]
    generator = DefaultAnchorGenerator(
        cfg, [ShapeSpec(stride=shapes[f].stride, channels=1) for f in levels]
    )
    return Boxes.cat(
        generator(
            [torch.zeros(1, 1, grid // shapes[f].stride, grid // shapes[f].stride) for f in levels]
        )
    )


def test_extra_aspect_ratios_give_a_horizontal_1_to_8_bar_a_positive_anchor():
    default = _anchors([0.5, 1.0, 2.0], 256)
    extra = _anchors([0.2, 0.5, 1.0, 2.0, 5.0], 256)
    assert len(extra) * 3 == len(default) * 5  # 5 ratios instead of 3 at every position
    # 1:8, centred on a P3 anchor centre (detectron2 offset 0: centres on multiples of 8).
    bar = Boxes(torch.tensor([[64.0 - 48, 96.0 - 6, 64.0 + 48, 96.0 + 6]]))
    assert pairwise_iou(bar, default).max() < 0.4  # not even a low-quality match above 0.4
    assert pairwise_iou(bar, extra).max() >= 0.5  # a real positive of RetinaNet's matcher


def test_thin_config_switches_its_mechanisms_on():
    from tests.common import CONFIGS_DIR

    cfg = get_tiny_cfg()
    cfg.merge_from_file(str(CONFIGS_DIR / "retinamask_R50_FPN_thin.yaml"))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    model = build_tiny_model(cfg)
    assert model.anchor_generator.num_cell_anchors == [15] * 5  # 3 scales x 5 ratios
    assert model.mask_nms_thresh == 0.5 and model.test_nms_thresh == 0.9
    assert model.mask_branch.in_features == ["p2", "p3", "p4", "p5"]
    assert type(model.mask_branch.mask_head).__name__ == "MaskRCNNConvUpsampleHead"
    assert model.mask_branch.frame_head is not None  # oriented mask RoIs
