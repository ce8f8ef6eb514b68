"""Oriented mask RoIs on hand-made cases: frame fitting, GT warping, pooling, pasting, and the
switch MODEL.RETINAMASK.MASK_ROI through the model."""

import math

import numpy as np
import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

from retinamask_d2.modeling import RetinaMaskBranch
from retinamask_d2.modeling.oriented_head import OrientedFrameHead, gt_frames
from retinamask_d2.modeling.oriented_pooler import OrientedPooler
from retinamask_d2.modeling.oriented_rois import (
    fit_frames,
    frame_corners,
    pad_frames,
    paste_frame_masks,
    paste_frame_masks_whole,
    warp_masks,
)
from tests.common import build_tiny_model, get_tiny_cfg, training_batch

# A bar of length 120 and width 8 at 45 deg, centred at (100, 100) in a 200 x 200 image. Its box
# has side (120 + 8) / sqrt(2) = 90.5, of which the bar covers 960 / 90.5^2 = 11.7%.
BAR = (100.0, 100.0, 120.0, 8.0, math.pi / 4)


def _rectangle_polygon(cx, cy, w, h, theta) -> np.ndarray:
    frame = torch.tensor([[cx, cy, w, h, theta]], dtype=torch.float64)
    return frame_corners(frame)[0].flatten().numpy()


def _inside_rectangle(frame, height: int, width: int, scale=(1.0, 1.0)) -> torch.Tensor:
    """(H, W) bool: output pixels whose centre, mapped back by ``scale``, is in the frame."""
    cx, cy, w, h, theta = frame
    ys, xs = torch.meshgrid(
        (torch.arange(height, dtype=torch.float64) + 0.5) / scale[1],
        (torch.arange(width, dtype=torch.float64) + 0.5) / scale[0],
        indexing="ij",
    )
    u = (xs - cx) * math.cos(theta) + (ys - cy) * math.sin(theta)
    v = -(xs - cx) * math.sin(theta) + (ys - cy) * math.cos(theta)
    return (u.abs() <= w / 2) & (v.abs() <= h / 2)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / float((a | b).sum())


def _bar_masks(kind: str):
    polygon = PolygonMasks([[_rectangle_polygon(*BAR)]])
    if kind == "polygon":
        return polygon
    return BitMasks(_inside_rectangle(BAR, 200, 200)[None])


@pytest.mark.parametrize("kind", ["polygon", "bitmask"])
def test_tilted_bar_fills_its_oriented_target_and_crosses_its_box_target(kind):
    masks = _bar_masks(kind)
    frames, elongated = gt_frames(masks, min_elongation=2.0, device=torch.device("cpu"))
    assert elongated.tolist() == [True]
    cx, cy, w, h, theta = frames[0].tolist()
    # The fitted rectangle is the bar's, within a pixel (a cell of the fit grid is 1.4 px).
    assert (cx, cy) == pytest.approx((100.0, 100.0), abs=1.0)
    assert (w, h) == pytest.approx((120.0, 8.0), abs=1.5)
    assert abs(math.remainder(theta - math.pi / 4, math.pi)) < math.radians(1.0)

    oriented = warp_masks(masks, frames, 28).float().mean().item()
    box = masks.crop_and_resize(masks.get_bounding_boxes().tensor, 28).float().mean().item()
    assert oriented >= 0.9  # the bar fills its own frame
    assert box == pytest.approx(0.117, abs=0.03)  # a thin diagonal of its box
    # Padded as inference pads it, the bar still fills the central 1/1.2 x h / max(1.5 h, 14.4).
    padded = pad_frames(frames, 1.2, 1.5, 0.1)
    assert padded[0, 2:4].tolist() == pytest.approx([144.0, 14.4], abs=2.0)
    fraction = warp_masks(masks, padded, 28).float().mean().item()
    assert fraction == pytest.approx(120 * 8 / (144 * 14.4), abs=0.06)


@pytest.mark.parametrize(
    "polygon",
    [
        _rectangle_polygon(60.0, 50.0, 40.0, 34.0, math.radians(10)),  # 40 x 34, tilted 10 deg
        np.array(
            [
                50 + 20 * f(a)
                for a in np.linspace(0, 2 * np.pi, 32, endpoint=False)
                for f in (np.cos, np.sin)
            ]
        ),  # a disk of radius 20
    ],
    ids=["rectangle", "disk"],
)
def test_near_square_object_keeps_its_box(polygon):
    masks = PolygonMasks([[polygon]])
    frames, elongated = gt_frames(masks, min_elongation=2.0, device=torch.device("cpu"))
    x0, y0, x1, y1 = masks.get_bounding_boxes().tensor[0].tolist()
    assert elongated.tolist() == [False]
    expected = [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, 0.0]
    assert frames[0].tolist() == pytest.approx(expected, abs=1.0)


def test_fit_of_an_axis_aligned_bar_is_its_box_and_a_vertical_bar_turns_a_quarter():
    masks = torch.ones(2, 64, 64)
    boxes = torch.tensor([[10.0, 20.0, 210.0, 26.0], [30.0, 5.0, 36.0, 105.0]])
    frames, elongated = fit_frames(masks, boxes, min_elongation=2.0)
    assert elongated.tolist() == [True, True]
    assert frames[0].tolist() == pytest.approx([110.0, 23.0, 200.0, 6.0, 0.0], abs=1e-3)
    cx, cy, w, h, theta = frames[1].tolist()
    assert [cx, cy, w, h] == pytest.approx([33.0, 55.0, 100.0, 6.0], abs=1e-3)
    assert abs(theta) == pytest.approx(math.pi / 2, abs=1e-4)


@pytest.mark.parametrize("scale", [(1.0, 1.0), (2.0, 1.5)])
def test_saturated_mask_pastes_back_the_rotated_rectangle(scale):
    # A probability-1 mask in a frame is the frame itself, at any output scale (anisotropic
    # scaling turns it into a parallelogram, which the analytic test maps back the same way).
    frames = torch.tensor([BAR, (60.0, 140.0, 90.0, 20.0, math.radians(-30))])
    height, width = round(200 * scale[1]), round(200 * scale[0])
    pasted = paste_frame_masks(torch.ones(2, 1, 28, 28), frames, scale, height, width)
    for mask, frame in zip(pasted, frames.tolist()):
        assert _iou(mask, _inside_rectangle(frame, height, width, scale)) >= 0.95


def test_oriented_pooling_of_an_axis_aligned_frame_is_roi_align():
    # Independent reference: detectron2's aligned RoIAlign with 2 x 2 samples per cell.
    torch.manual_seed(0)
    features = [torch.randn(1, 3, 32, 32), torch.randn(1, 3, 16, 16)]
    boxes = torch.tensor([[10.0, 20.0, 70.0, 52.0], [100.0, 30.0, 220.0, 190.0]])
    kwargs = {"scales": [1 / 8, 1 / 16], "sampling_ratio": 2, "canonical_box_size": 100}
    reference = ROIPooler(7, pooler_type="ROIAlignV2", canonical_level=4, **kwargs)
    pooler = OrientedPooler(7, canonical_level=4, **kwargs)
    frames = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)
    frames = torch.cat([frames, torch.zeros(2, 1)], dim=1)
    expected = reference(features, [Boxes(boxes)])
    torch.testing.assert_close(pooler(features, [frames]), expected, atol=1e-5, rtol=1e-5)
    # A quarter turn reads the same cells transposed (up to the frame's orientation).
    turned = frames.clone()
    turned[:, 2:4] = frames[:, [3, 2]]
    turned[:, 4] = math.pi / 2
    rotated = pooler(features, [turned])
    torch.testing.assert_close(rotated, expected.transpose(2, 3).flip(2), atol=1e-5, rtol=1e-5)


def test_thin_frame_is_pooled_from_the_level_of_its_own_area():
    # Detectron2's rule on w x h: a 200 x 6 frame (sqrt area 35) goes to P3, while its 45 deg
    # box (146 x 146) would go to P4 with canonical size 100, level 4.
    features = [torch.full((1, 1, 64, 64), 3.0), torch.full((1, 1, 32, 32), 4.0)]
    pooler = OrientedPooler(4, [1 / 8, 1 / 16], 2, canonical_box_size=100, canonical_level=4)
    frames = torch.tensor([[256.0, 256.0, 200.0, 6.0, math.pi / 4], [256, 256, 146, 146, 0.0]])
    pooled = pooler(features, [frames])
    assert pooled[:, 0, 2, 2].tolist() == [3.0, 4.0]


def test_gradients_reach_the_features_through_oriented_pooling():
    torch.manual_seed(0)
    features = [torch.randn(2, 1, 6, 6, dtype=torch.float64, requires_grad=True)]
    frames = [
        torch.tensor([[20.0, 25.0, 30.0, 6.0, 0.6]], dtype=torch.float64),
        torch.tensor([[15.0, 15.0, 20.0, 8.0, -1.0], [30, 30, 12, 12, 0]], dtype=torch.float64),
    ]
    pooler = OrientedPooler(2, [1 / 8], 2, canonical_box_size=224, canonical_level=3)
    assert torch.autograd.gradcheck(lambda f: pooler([f], frames), features)


def _oriented_model():
    cfg = get_tiny_cfg()
    cfg.MODEL.RETINAMASK.MASK_ROI = "oriented"
    torch.manual_seed(0)
    return build_tiny_model(cfg)


def _force_frames(model, angle: float, length_log: float, width_log: float) -> None:
    """Make the frame head predict, for every RoI, a rectangle centred on its box with the
    given angle and log sides (relative to the box diagonal)."""
    predictor = model.mask_branch.frame_head.predictor
    with torch.no_grad():
        predictor.weight.zero_()
        predictor.bias.copy_(
            torch.tensor(
                [0.0, 0.0, length_log, width_log, math.cos(2 * angle), math.sin(2 * angle)]
            )
        )


def test_mask_loss_trains_in_frames_and_reaches_the_backbone():
    model = _oriented_model()
    _force_frames(model, math.pi / 4, -0.2, -2.0)
    with EventStorage():
        losses = model(training_batch())
    assert {"loss_mask", "loss_mask_frame"} <= set(losses)
    losses["loss_mask"].backward()
    stem = model.backbone.bottom_up.stem.conv1.weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    # An image without GT next to one with: its RoIs have no masks, the others still train.
    batch = training_batch()
    batch[1]["instances"] = batch[1]["instances"][:0]
    with EventStorage():
        losses = model(batch)
    assert losses["loss_mask"] > 0 and torch.isfinite(losses["loss_mask_frame"])


def test_frame_head_learns_a_bar_frame():
    # A few steps on one tilted bar: the frame loss falls, and the frame decoded from the
    # outputs is the bar's rectangle, padded: targets and decoding agree.
    head = OrientedFrameHead(
        8, 14, 16, 2.0, length_pad=1.2, width_pad=1.5, min_width_ratio=0.1, loss_weight=1.0
    )
    torch.manual_seed(0)
    box_features = torch.randn(4, 8, 14, 14)
    rois = Instances((200, 200))
    rois.proposal_boxes = Boxes(_bar_masks("polygon").get_bounding_boxes().tensor.repeat(4, 1))
    rois.gt_masks = PolygonMasks([[_rectangle_polygon(*BAR)]] * 4)
    optimiser = torch.optim.SGD(head.parameters(), lr=0.02, momentum=0.9)
    first = None
    for _ in range(30):
        loss = head.losses(head(box_features), [rois])["loss_mask_frame"]
        first = first if first is not None else loss.item()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.2 * first
    frame = head.frames(head(box_features), rois.proposal_boxes.tensor)[0]
    cx, cy, w, h, theta = frame.tolist()
    assert abs(math.remainder(theta - math.pi / 4, math.pi)) < math.radians(5)
    assert w == pytest.approx(120 * 1.2, rel=0.1)


def test_saturated_model_pastes_each_detection_its_rotated_rectangle():
    # Through the whole inference path: a mask head saturated at 1 and a frame head that gives
    # every detection a 45 deg rectangle: each output mask is that rectangle, padded, at the
    # requested output size (twice the input's).
    model = _oriented_model().eval()
    _force_frames(model, math.pi / 4, -0.3, -2.5)
    with torch.no_grad():
        model.mask_branch.mask_head.predictor.weight.zero_()
        model.mask_branch.mask_head.predictor.bias.fill_(20.0)
        model.head.cls_score.bias.fill_(0.0)
        model.test_topk_masks = 10
        image = training_batch()[0]["image"]
        (output,) = model([{"image": image, "height": 192, "width": 256}])
    instances = output["instances"]
    masked = instances[: model.test_topk_masks]
    assert len(masked) > 0
    for box, mask in zip(masked.pred_boxes.tensor / 2, masked.pred_masks):
        centre = (box[:2] + box[2:]) / 2
        diag = float((box[2:] - box[:2]).norm())
        frame = [*centre.tolist(), diag * math.exp(-0.3) * 1.2, 0.0, math.pi / 4]
        frame[3] = max(diag * math.exp(-2.5) * 1.5, frame[2] * 0.1)
        expected = _inside_rectangle(frame, 192, 256, (2.0, 2.0))
        if expected.sum() >= 20:  # frames of a few pixels are all edge
            assert _iou(mask, expected) >= 0.9


def test_untrained_frame_head_keeps_every_box_so_masks_equal_box_rois():
    # At init the frame head's angle output is near 0 (near-square everywhere), so "oriented"
    # starts exactly as "box": same masks from the same weights.
    box_cfg = get_tiny_cfg()
    torch.manual_seed(0)
    box_model = build_tiny_model(box_cfg).eval()
    oriented = _oriented_model().eval()
    oriented.load_state_dict(box_model.state_dict(), strict=False)
    with torch.no_grad():
        for model in (box_model, oriented):
            model.mask_branch.mask_head.predictor.weight.mul_(10.0)
            model.head.cls_score.bias.fill_(0.0)
        image = training_batch()[0]["image"]
        a = box_model([{"image": image}])[0]["instances"]
        b = oriented([{"image": image}])[0]["instances"]
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)
    assert a.pred_masks.shape == b.pred_masks.shape and a.pred_masks[:50].any()
    differ = (a.pred_masks != b.pred_masks).float().mean().item()
    assert differ < 0.002  # only pixels at the 0.5 threshold, by float rounding


def test_unknown_mask_roi_is_refused_by_name():
    cfg = get_tiny_cfg()
    cfg.MODEL.RETINAMASK.MASK_ROI = "rotated"
    with pytest.raises(ValueError, match="MODEL.RETINAMASK.MASK_ROI"):
        build_tiny_model(cfg)


def test_whole_image_paste_equals_the_cropped_paste():
    # The export's one-pass paste and the eager per-mask paste give the same pixels.
    torch.manual_seed(0)
    probs = torch.rand(3, 1, 28, 28)
    frames = torch.tensor([BAR, (60.0, 140.0, 90.0, 20.0, -0.5), (190.0, 10.0, 30.0, 30.0, 0.0)])
    for scale in [(1.0, 1.0), (0.75, 1.25)]:
        height, width = round(200 * scale[1]), round(200 * scale[0])
        cropped = paste_frame_masks(probs, frames, scale, height, width)
        whole = paste_frame_masks_whole(probs, frames, scale, height, width)
        assert torch.equal(cropped, whole) and cropped.any()


def _branch_with(options: dict):
    cfg = get_tiny_cfg()
    cfg.MODEL.RETINAMASK.MASK_ROI = "oriented"
    for key, value in options.items():
        cfg.MODEL.RETINAMASK.ORIENTED[key] = value
    shapes = {f"p{k}": ShapeSpec(channels=4, stride=2**k) for k in range(3, 8)}
    torch.manual_seed(0)
    return RetinaMaskBranch(cfg, shapes)


def test_oriented_keys_reach_the_frames_and_the_frame_loss():
    # A box of diagonal 100 (60 x 80) and a prediction of a rectangle 0.5 x 0.05 of it at 0 deg.
    box = torch.tensor([[0.0, 0.0, 60.0, 80.0]])
    outputs = torch.tensor([[0.0, 0.0, math.log(0.5), math.log(0.05), 1.0, 0.0]])
    head = _branch_with({"LENGTH_PAD": 1.5, "WIDTH_PAD": 2.0, "MIN_WIDTH_RATIO": 0.0}).frame_head
    assert head.frames(outputs, box)[0].tolist() == pytest.approx([30, 40, 75, 10, 0], abs=1e-4)
    head = _branch_with({"LENGTH_PAD": 1.0, "MIN_WIDTH_RATIO": 0.5}).frame_head
    assert head.frames(outputs, box)[0].tolist() == pytest.approx([30, 40, 50, 25, 0], abs=1e-4)
    assert _branch_with({"HEAD_CONV_DIM": 24}).frame_head.conv1.out_channels == 24

    # A 30 x 10 rectangle (elongation 3) has an angle target below MIN_ELONGATION 3, none above.
    rois = Instances((100, 100))
    rois.proposal_boxes = Boxes(torch.tensor([[30.0, 40.0, 60.0, 50.0]]))
    rois.gt_masks = PolygonMasks([[_rectangle_polygon(45.0, 45.0, 30.0, 10.0, 0.0)]])
    for min_elongation, angle_target in [(3.0, [1.0, 0.0]), (3.5, [0.0, 0.0])]:
        head = _branch_with({"MIN_ELONGATION": min_elongation}).frame_head
        targets, _ = head.targets([rois], rois.proposal_boxes.tensor)
        assert targets[0, 4:].tolist() == pytest.approx(angle_target, abs=1e-6)

    losses = [
        _branch_with({"LOSS_WEIGHT": w}).frame_head.losses(outputs, [rois])["loss_mask_frame"]
        for w in (1.0, 2.5)
    ]
    assert losses[0] > 0
    torch.testing.assert_close(losses[1], 2.5 * losses[0])


def test_frames_of_wild_outputs_stay_at_their_box():
    """Outputs of an untrained head on large features (a random backbone with FrozenBN at init)
    can be anything: the frame's centre stays within half a box diagonal of the box's centre
    and its sides within twice the diagonal, so the frame still covers its object's region."""
    head = OrientedFrameHead(4, 7, 8, 2.0, 1.2, 1.5, 0.1, 1.0)
    boxes = torch.tensor([[10.0, 20.0, 40.0, 100.0], [0.0, 0.0, 6.0, 8.0]])
    outputs = torch.tensor([[1e3, -1e3, 50.0, 50.0, 1.0, 0.0], [-7.0, 3.0, 9.0, 1.0, 0.0, -1.0]])
    frames = head.frames(outputs, boxes)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    diag = (boxes[:, 2:] - boxes[:, :2]).norm(dim=1)
    offset = (frames[:, :2] - centre).abs() / diag[:, None]
    assert torch.allclose(offset, torch.full_like(offset, 0.5))
    # Padded: at most 2 diagonals long, times LENGTH_PAD 1.2.
    assert (frames[:, 2] <= 2 * 1.2 * diag + 1e-4).all()


@pytest.mark.parametrize("kind", ["polygon", "bitmask"])
def test_gt_frames_fitted_once_per_object_equal_those_fitted_per_roi(kind):
    """The frame targets of RoIs that carry their GT's frame (``with_gt_frames``, fitted once per
    object) are those fitted from each RoI's own copy of the GT mask."""
    from retinamask_d2.modeling.mask_rois import select_mask_training_rois

    head = OrientedFrameHead(4, 7, 8, 2.0, 1.2, 1.5, 0.1, 1.0)
    masks = _bar_masks(kind)
    square = torch.zeros(1, 200, 200, dtype=torch.bool)
    square[0, 20:60, 30:70] = True
    gt = Instances((200, 200), gt_classes=torch.tensor([0, 1]))
    if kind == "polygon":
        gt.gt_masks = PolygonMasks(masks.polygons + [[_rectangle_polygon(50, 40, 40, 40, 0.0)]])
    else:
        gt.gt_masks = BitMasks(torch.cat([masks.tensor, square]))
    gt.gt_boxes = gt.gt_masks.get_bounding_boxes()
    jitter = torch.tensor([[1.0, -2.0, 0.0, 1.0], [0.0, 0.0, -1.0, 2.0], [2.0, 1.0, 1.0, 0.0]])
    detections = Instances((200, 200))
    boxes = gt.gt_boxes.tensor
    detections.pred_boxes = Boxes(torch.cat([boxes[:1] + jitter, boxes[1:] + jitter[:2]]))
    matcher = Matcher([0.5], [0, 1], allow_low_quality_matches=False)
    (per_roi,) = select_mask_training_rois([detections], [gt], matcher)
    (carried,) = select_mask_training_rois([detections], [head.with_gt_frames(gt)], matcher)
    assert carried.has("gt_frames") and not per_roi.has("gt_frames") and len(carried) == 7
    rois = per_roi.proposal_boxes.tensor
    expected, expected_long = head.targets([per_roi], rois)
    got, got_long = head.targets([carried], rois)
    assert torch.equal(got_long, expected_long) and expected_long.sum() == 4  # the bar's RoIs
    torch.testing.assert_close(got, expected)
