"""The mask branch's parts: RoIAlign, level assignment, training RoIs, targets and loss."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ROIAlign, ShapeSpec
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads.mask_head import mask_rcnn_loss
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

from retinamask_d2.modeling import RetinaMaskBranch, select_mask_training_rois
from tests.common import get_tiny_cfg

# The standard worked example: a 4 x 4 feature map holding 1..16 in row-major order, i.e. the
# value at pixel (x, y) is 4y + x + 1. Bilinear interpolation at (x, y) = (1.6, 1.15) mixes
# pixels (1,1)=6, (2,1)=7, (1,2)=10, (2,2)=11 with weights (0.4, 0.6) in x and (0.85, 0.15) in y:
# 0.85 * (0.4*6 + 0.6*7) + 0.15 * (0.4*10 + 0.6*11) = 0.85 * 6.6 + 0.15 * 10.6 = 7.2.
FEATURE_4X4 = torch.arange(1, 17, dtype=torch.float32).reshape(1, 1, 4, 4)


def test_roi_align_worked_example_aligned_and_unaligned():
    # One 1x1 bin with one sample at its centre. Aligned RoIAlign (ROIAlignV2) shifts the box
    # by -0.5 pixel, so the box centred at (2.1, 1.65) samples pixel coordinate (1.6, 1.15).
    aligned = ROIAlign((1, 1), spatial_scale=1.0, sampling_ratio=1, aligned=True)
    box = torch.tensor([[0.0, 1.6, 1.15, 2.6, 2.15]])
    assert aligned(FEATURE_4X4, box).item() == pytest.approx(7.2, abs=1e-5)
    # The paper's unaligned RoIAlign samples the box centre as is.
    unaligned = ROIAlign((1, 1), spatial_scale=1.0, sampling_ratio=1, aligned=False)
    box = torch.tensor([[0.0, 1.1, 0.65, 2.1, 1.65]])
    assert unaligned(FEATURE_4X4, box).item() == pytest.approx(7.2, abs=1e-5)


def test_roi_align_bins_average_their_samples():
    # Box (0.5, 0.5, 3.5, 3.5), aligned: pixel region [0, 3]^2 in 2x2 bins of 1.5 pixels, each
    # averaging 2x2 samples. The map is linear, so a bin's average is its centre's value:
    # centres 0.75 and 2.25 give 4*0.75+0.75+1 = 4.75, 6.25, 10.75, 12.25.
    pooler = ROIPooler((2, 2), scales=[1.0], sampling_ratio=2, pooler_type="ROIAlignV2")
    pooled = pooler([FEATURE_4X4], [Boxes(torch.tensor([[0.5, 0.5, 3.5, 3.5]]))])
    expected = torch.tensor([[[[4.75, 6.25], [10.75, 12.25]]]])
    torch.testing.assert_close(pooled, expected)


def _branch(cfg=None) -> RetinaMaskBranch:
    cfg = cfg or get_tiny_cfg()
    shapes = {f"p{k}": ShapeSpec(channels=4, stride=2**k) for k in range(3, 8)}
    return RetinaMaskBranch(cfg, shapes)


def _levels_used(branch: RetinaMaskBranch, sizes: list[tuple[float, float]]) -> list[int]:
    """Pool square-ish boxes centred in a 1024 x 1024 image from P3-P5 maps filled with 3, 4, 5:
    the pooled value names the level ROIPooler picked."""
    features = [torch.full((1, 4, 1024 // 2**k, 1024 // 2**k), float(k)) for k in (3, 4, 5)]
    boxes = torch.tensor([[512 - w / 2, 512 - h / 2, 512 + w / 2, 512 + h / 2] for w, h in sizes])
    pooled = branch.pooler(features, [Boxes(boxes)])
    return [int(round(v)) for v in pooled[:, 0, 7, 7].tolist()]


# k = floor(k0 + log2(sqrt(w * h) / s0)), clamped to [3, 5]. With s0 = 224, k0 = 4 (default):
# sqrt area < 224 -> P3 (16 would be level 0 unclamped), 224..447 -> P4, >= 448 -> P5.
LEVEL_TABLE_DEFAULT = [
    ((16, 16), 3),
    ((111, 111), 3),
    ((223, 223), 3),
    ((224, 224), 4),
    ((112, 448), 4),  # sqrt(112 * 448) = 224
    ((447, 447), 4),
    ((448, 448), 5),
    ((1000, 1000), 5),  # level 6 unclamped
]
# With k0 = 5 (the official "canonical5" variant): < 112 -> P3, 112..223 -> P4, >= 224 -> P5.
LEVEL_TABLE_K0_5 = [((111, 111), 3), ((112, 112), 4), ((223, 223), 4), ((224, 224), 5)]
# With s0 = 112, k0 = 4: < 112 -> P3, 112..223 -> P4, >= 224 -> P5.
LEVEL_TABLE_S0_112 = [((111, 111), 3), ((112, 112), 4), ((223, 223), 4), ((224, 224), 5)]


@pytest.mark.parametrize(
    "canonical_level, canonical_size, table",
    [(4, 224, LEVEL_TABLE_DEFAULT), (5, 224, LEVEL_TABLE_K0_5), (4, 112, LEVEL_TABLE_S0_112)],
)
def test_box_size_to_fpn_level_table(canonical_level, canonical_size, table):
    cfg = get_tiny_cfg()
    cfg.MODEL.RETINAMASK.CANONICAL_LEVEL = canonical_level
    cfg.MODEL.RETINAMASK.CANONICAL_BOX_SIZE = canonical_size
    sizes, levels = zip(*table)
    assert _levels_used(_branch(cfg), list(sizes)) == list(levels)


def _square(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _gt(mask_format: str) -> Instances:
    """A 32 x 48 (h x w) image with GT 0 = square (4,4)-(20,20) of class 1 and GT 1 = square
    (24,0)-(40,16) of class 2, as polygons or bitmasks."""
    squares = [(4, 4, 20, 20), (24, 0, 40, 16)]
    gt = Instances((32, 48))
    gt.gt_boxes = Boxes(torch.tensor(squares, dtype=torch.float32))
    gt.gt_classes = torch.tensor([1, 2])
    if mask_format == "polygon":
        gt.gt_masks = PolygonMasks([[_square(*s)] for s in squares])
    else:
        bitmasks = torch.zeros(2, 32, 48, dtype=torch.bool)
        for i, (x0, y0, x1, y1) in enumerate(squares):
            bitmasks[i, y0:y1, x0:x1] = True
        gt.gt_masks = BitMasks(bitmasks)
    return gt


def _detections(boxes: list[list[float]], image_size: tuple[int, int] = (32, 48)) -> Instances:
    dets = Instances(image_size)
    dets.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    dets.scores = torch.linspace(0.9, 0.5, len(boxes))
    dets.pred_classes = torch.zeros(len(boxes), dtype=torch.int64)
    return dets


DETECTIONS = [
    [4, 4, 32, 20],  # IoU 256/448 = 0.57 with GT 0 (0.16 with GT 1): GT 0 fills its left 16 px
    [24, 24, 31, 31],  # overlaps no GT: negative
    [4, 4, 20, 40],  # leaves the image: clipped to (4,4,20,32), IoU 0.57, GT 0 fills the top 16
    [24, 0, 40, 14],  # inside GT 1, IoU 14/16 = 0.875: positive for class 2, all foreground
    [0, 0, 10, 10],  # IoU 36/320 with GT 0: negative
]


def _expected_targets() -> tuple[list[list[float]], list[int], np.ndarray]:
    """Hand-made: positives in order (detections first, then the GT boxes), their classes and
    their 28 x 28 targets."""
    left16, top16, full = np.zeros((28, 28)), np.zeros((28, 28)), np.ones((28, 28))
    left16[:, :16] = 1
    top16[:16, :] = 1
    boxes = [[4, 4, 32, 20], [4, 4, 20, 32], [24, 0, 40, 14], [4, 4, 20, 20], [24, 0, 40, 16]]
    return boxes, [1, 1, 2, 1, 2], np.stack([left16, top16, full, full, full])


@pytest.mark.parametrize("mask_format", ["polygon", "bitmask"])
def test_training_rois_and_their_mask_targets(mask_format):
    gt = _gt(mask_format)
    matcher = Matcher([0.5], [0, 1], allow_low_quality_matches=False)
    (rois,) = select_mask_training_rois([_detections(DETECTIONS)], [gt], matcher)

    boxes, classes, targets = _expected_targets()
    torch.testing.assert_close(rois.proposal_boxes.tensor, torch.tensor(boxes, dtype=torch.float32))
    assert rois.gt_classes.tolist() == classes
    # The targets mask_rcnn_loss uses are the GT masks' crop_and_resize on the RoIs ...
    cropped = rois.gt_masks.crop_and_resize(rois.proposal_boxes.tensor, 28)
    # ... and they are the hand-made ones.
    np.testing.assert_array_equal(cropped.numpy().astype(np.float64), targets)


def test_mask_loss_reads_only_the_gt_class_channel():
    gt = _gt("polygon")
    matcher = Matcher([0.5], [0, 1], allow_low_quality_matches=False)
    (rois,) = select_mask_training_rois([_detections(DETECTIONS)], [gt], matcher)
    _, classes, targets = _expected_targets()
    num_classes = 3
    torch.manual_seed(0)
    logits = torch.randn(len(rois), num_classes, 28, 28)

    with EventStorage():
        loss = mask_rcnn_loss(logits, [rois])
        # Independent reference: mean BCE of the GT channel against the hand-made targets.
        gt_channel = logits[torch.arange(len(rois)), torch.tensor(classes)]
        reference = F.binary_cross_entropy_with_logits(
            gt_channel, torch.from_numpy(targets).float()
        )
        torch.testing.assert_close(loss, reference)

        others = logits.clone()
        for i, c in enumerate(classes):
            for k in range(num_classes):
                if k != c:
                    others[i, k] = torch.randn(28, 28) * 10
        assert torch.equal(mask_rcnn_loss(others, [rois]), loss)

        changed = logits.clone()
        changed[0, classes[0]] += 1.0
        assert not torch.allclose(mask_rcnn_loss(changed, [rois]), loss)


def test_gt_boxes_are_positives_when_no_detection_overlaps():
    gt = _gt("polygon")
    matcher = Matcher([0.5], [0, 1], allow_low_quality_matches=False)
    far = _detections([[24, 24, 31, 31], [0, 22, 3, 31]])
    no_detections = _detections([])
    for dets in (far, no_detections):
        (rois,) = select_mask_training_rois([dets], [gt], matcher)
        assert torch.equal(rois.proposal_boxes.tensor, gt.gt_boxes.tensor)
        assert rois.gt_classes.tolist() == [1, 2]


def test_image_without_annotations_has_no_training_rois():
    empty = Instances((32, 48), gt_boxes=Boxes(torch.zeros(0, 4)))
    empty.gt_classes = torch.zeros(0, dtype=torch.int64)  # DatasetMapper sets no gt_masks here
    matcher = Matcher([0.5], [0, 1], allow_low_quality_matches=False)
    (rois,) = select_mask_training_rois([_detections(DETECTIONS)], [empty], matcher)
    assert len(rois) == 0


def test_missing_gt_masks_is_a_clear_error():
    gt = _gt("polygon")
    del gt._fields["gt_masks"]
    matcher = Matcher([0.5], [0, 1], allow_low_quality_matches=False)
    with pytest.raises(ValueError, match="MODEL.MASK_ON"):
        select_mask_training_rois([_detections(DETECTIONS)], [gt], matcher)


def _features(branch: RetinaMaskBranch) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(1, 4, 64 // 2**k, 64 // 2**k) for k in (3, 4, 5)]


def test_mask_head_runs_channels_last_on_cpu_with_the_same_results(monkeypatch):
    # The layout is a speed-up only (see _fast_layout): masks, loss and gradients must be those
    # of detectron2's default layout.
    import retinamask_d2.modeling.mask_branch as mask_branch

    branch = _branch()
    layouts = []
    branch.mask_head.register_forward_pre_hook(
        lambda _, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    features = _features(branch)
    dets = _detections(DETECTIONS)

    def run() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        branch.zero_grad()
        branch.train()
        with EventStorage():
            loss = branch.losses(features, [_detections(DETECTIONS)], [_gt("bitmask")])
        loss["loss_mask"].backward()
        grads = [p.grad.clone() for p in branch.mask_head.parameters()]
        (masks,) = branch.eval().predict(features, [dets])
        return loss["loss_mask"].detach(), masks.pred_masks, grads

    fast = run()
    assert layouts == [True, True]
    monkeypatch.setattr(mask_branch, "_fast_layout", lambda pooled: pooled)
    default = run()
    assert layouts[2:] == [False, False]
    torch.testing.assert_close(fast[0], default[0])
    torch.testing.assert_close(fast[1], default[1])
    for got, expected in zip(fast[2], default[2]):
        torch.testing.assert_close(got, expected)


def test_the_mask_head_has_the_box_heads_class_count():
    # One class count: MODEL.ROI_HEADS.NUM_CLASSES (which detectron2's mask head reads) is
    # ignored, an old config that sets it still builds.
    cfg = get_tiny_cfg(num_classes=3)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 80
    assert _branch(cfg).mask_head.predictor.out_channels == 3
    cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = True  # then the head has one channel
    assert _branch(cfg).mask_head.predictor.out_channels == 1


def test_unknown_mask_feature_is_a_clear_error():
    cfg = get_tiny_cfg()
    cfg.MODEL.RETINAMASK.MASK_IN_FEATURES = ["p2", "p3"]
    with pytest.raises(ValueError, match=r"MASK_IN_FEATURES names \['p2'\]"):
        _branch(cfg)


@pytest.mark.parametrize("key, value", [("POSITIVE_IOU", 0.0), ("POSITIVE_IOU", 1.5)])
def test_invalid_mask_options_are_clear_errors(key, value):
    cfg = get_tiny_cfg()
    cfg.MODEL.RETINAMASK[key] = value
    with pytest.raises(ValueError, match=f"MODEL.RETINAMASK.{key}"):
        _branch(cfg)
