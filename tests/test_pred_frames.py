"""``pred_frames``: with MASK_ROI "oriented", each detection's frame at the output size, in the
model's results, the predictor's, the demo's COCO results and its upright cut-outs."""

import json
import math

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from PIL import Image

from retinamask_d2.modeling.oriented_rois import scale_frames
from retinamask_d2.predictor import RetinaMaskPredictor, load_config
from retinamask_d2.visualization.cutouts import make_cutouts
from tests.common import (
    build_tiny_model,
    demo,
    get_tiny_cfg,
    model_args,
    noise_image,
    set_retinamask_keys,
    training_batch,
    weights_args,
)

ANGLE = math.pi / 6  # the frame head's angle for every RoI
LENGTH_LOG, WIDTH_LOG = -0.3, -2.5  # its sides, log of a fraction of the box diagonal
LENGTH_PAD, WIDTH_PAD, MIN_WIDTH_RATIO = 1.2, 1.5, 0.1  # the ORIENTED defaults
INPUT_HW = (96, 128)  # training_batch's images
BASE_FIELDS = {"pred_boxes", "scores", "pred_classes", "pred_masks"}


def _model(mask_roi: str = "oriented", options: dict | None = None):
    """The tiny model, detecting (class bias 0), its masks saturated at 1 and, oriented, its
    frame head giving every RoI a rectangle at ``ANGLE`` centred on its box. ``options``:
    ``MODEL.RETINAMASK`` keys below it."""
    cfg = get_tiny_cfg()
    set_retinamask_keys(cfg, {"MASK_ROI": mask_roi, **(options or {})})
    torch.manual_seed(0)
    model = build_tiny_model(cfg).eval()
    with torch.no_grad():
        model.head.cls_score.bias.fill_(0.0)
        model.mask_branch.mask_head.predictor.weight.zero_()
        model.mask_branch.mask_head.predictor.bias.fill_(20.0)
        if mask_roi == "oriented":
            predictor = model.mask_branch.frame_head.predictor
            predictor.weight.zero_()
            outputs = [0.0, 0.0, LENGTH_LOG, WIDTH_LOG, math.cos(2 * ANGLE), math.sin(2 * ANGLE)]
            predictor.bias.copy_(torch.tensor(outputs))
    model.test_topk_masks = 10
    return model


def _results(model, height: int, width: int):
    image = training_batch()[0]["image"]
    with torch.no_grad():
        return model([{"image": image, "height": height, "width": width}])[0]["instances"]


def _input_frame(box_in: list[float]) -> tuple[float, float, float, float]:
    """The frame (cx, cy, w, h) the forced frame head gives an input-pixel box: centred on it,
    sides of the diagonal padded (the angle is ``ANGLE``)."""
    x0, y0, x1, y1 = box_in
    diag = math.hypot(x1 - x0, y1 - y0)
    w = diag * math.exp(LENGTH_LOG) * LENGTH_PAD
    h = max(diag * math.exp(WIDTH_LOG) * WIDTH_PAD, MIN_WIDTH_RATIO * w)
    return (x0 + x1) / 2, (y0 + y1) / 2, w, h


def _box_frame(box: list[float]) -> list[float]:
    """The frame of an axis-aligned box, long side first: angle 0 wide, -pi/2 tall."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    return [(x0 + x1) / 2, (y0 + y1) / 2, max(w, h), min(w, h), 0.0 if w >= h else -math.pi / 2]


def _inside(frame, height: int, width: int) -> torch.Tensor:
    """(H, W) bool: the pixels whose centre is inside ``frame``."""
    cx, cy, w, h, theta = frame
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) + 0.5,
        torch.arange(width, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    u = (xs - cx) * math.cos(theta) + (ys - cy) * math.sin(theta)
    v = -(xs - cx) * math.sin(theta) + (ys - cy) * math.cos(theta)
    return (u.abs() <= w / 2) & (v.abs() <= h / 2)


def test_scaled_frames_against_hand_numbers():
    # sx = 2, sy = 0.5 on a 30 deg frame of 8 x 2 at (10, 20): the long side's direction
    # (cos 30, sin 30) becomes (2 cos 30, 0.5 sin 30) = (sqrt 3, 0.25), of length 1.75 and angle
    # atan2(0.25, sqrt 3); the short side's (-sin 30, cos 30) becomes (-1, sqrt(3) / 4), of
    # length sqrt(1.1875).
    frames = torch.tensor([[10.0, 20.0, 8.0, 2.0, math.pi / 6]], dtype=torch.float64)
    expected = [20.0, 10.0, 14.0, 2 * math.sqrt(1.1875), math.atan2(0.25, math.sqrt(3))]
    assert scale_frames(frames, (2.0, 0.5))[0].tolist() == pytest.approx(expected, abs=1e-9)
    # A side that grows past the other is the long side, a quarter turn on (wrapped).
    frames = torch.tensor([[4.0, 6.0, 10.0, 5.0, 0.0], [0.0, 0.0, 10.0, 4.0, -1.2]])
    scaled = scale_frames(frames, (1.0, 10.0))
    assert scaled[0].tolist() == pytest.approx([4.0, 60.0, 50.0, 10.0, -math.pi / 2], abs=1e-5)
    # -1.2 rad: along (cos, 10 sin) = (0.3624, -9.3204), across (-sin, 10 cos) = (0.9320, 3.6236)
    along = math.hypot(math.cos(-1.2), 10 * math.sin(-1.2))
    across = math.hypot(math.sin(-1.2), 10 * math.cos(-1.2))
    angle = math.atan2(10 * math.sin(-1.2), math.cos(-1.2))
    assert scaled[1].tolist() == pytest.approx([0.0, 0.0, 10 * along, 4 * across, angle], abs=1e-5)
    # A uniform scale keeps the angle and scales everything else.
    frames = torch.tensor([[3.0, 4.0, 9.0, 2.0, -1.0], [3.0, 4.0, 9.0, 9.0, 0.0]])
    expected = frames * torch.tensor([3.0, 3.0, 3.0, 3.0, 1.0])
    torch.testing.assert_close(scale_frames(frames, (3.0, 3.0)), expected)


def test_frames_at_a_non_uniform_output_size_are_the_scaled_model_frames():
    # Input 96 x 128, output 192 x 384: sx = 3, sy = 2. The frame head gives every masked
    # detection the rectangle at 30 deg on its box; at the output size the angle is
    # atan2(2 sin 30, 3 cos 30) = atan2(1, 1.5 sqrt 3) = 0.367422 rad, the long side times
    # |(3 cos 30, 2 sin 30)| = sqrt(7.75), the short side times |(-3 sin 30, 2 cos 30)| =
    # sqrt(5.25).
    model = _model()
    results = _results(model, 192, 384)
    sx, sy = 384 / INPUT_HW[1], 192 / INPUT_HW[0]
    assert (sx, sy) == (3.0, 2.0)
    assert set(results.get_fields()) == BASE_FIELDS | {"pred_frames"}
    frames = results.pred_frames
    assert frames.shape == (len(results), 5) and frames.dtype == torch.float32
    k = model.test_topk_masks
    assert len(results) > k  # masked and unmasked detections
    boxes = results.pred_boxes.tensor
    for frame, box in zip(frames[:k].tolist(), boxes[:k].tolist()):
        cx, cy, w, h = _input_frame([box[0] / sx, box[1] / sy, box[2] / sx, box[3] / sy])
        expected = [cx * 3, cy * 2, w * math.sqrt(7.75), h * math.sqrt(5.25), 0.367422]
        assert frame == pytest.approx(expected, rel=1e-4, abs=1e-4)
    # The detections without a mask have their box's frame.
    for frame, box in zip(frames[k:].tolist(), boxes[k:].tolist()):
        assert frame == pytest.approx(_box_frame(box), abs=1e-4)
    # Every frame: centred in its box, long side first, angle in [-pi/2, pi/2).
    assert ((frames[:, 0] >= boxes[:, 0]) & (frames[:, 0] <= boxes[:, 2])).all()
    assert ((frames[:, 1] >= boxes[:, 1]) & (frames[:, 1] <= boxes[:, 3])).all()
    assert (frames[:, 2] >= frames[:, 3]).all()
    assert ((frames[:, 4] >= -math.pi / 2) & (frames[:, 4] < math.pi / 2)).all()


def test_frames_are_where_the_masks_are_pasted():
    # Uniform scale 2: each saturated mask is its frame's rectangle, at the output size.
    results = _results(_model(), 192, 256)
    checked = 0
    for frame, mask in zip(results.pred_frames[:10].tolist(), results.pred_masks[:10]):
        expected = _inside(frame, 192, 256)
        assert frame[4] == pytest.approx(ANGLE, abs=1e-5)
        if expected.sum() >= 20:  # frames of a few pixels are all edge
            iou = float((mask & expected).sum()) / float((mask | expected).sum())
            assert iou >= 0.9
            checked += 1
    assert checked >= 3


def test_box_mode_results_have_no_frames_and_are_unchanged_by_them():
    # MASK_ROI "box": the fields detectron2's RetinaNet plus masks have, nothing else; and the
    # oriented model's boxes, scores and classes are those of the box model (same weights).
    box_model = _model("box")
    box_results = _results(box_model, 192, 256)
    assert set(box_results.get_fields()) == BASE_FIELDS
    oriented = _model()
    oriented.load_state_dict(box_model.state_dict(), strict=False)
    oriented_results = _results(oriented, 192, 256)
    assert torch.equal(box_results.pred_boxes.tensor, oriented_results.pred_boxes.tensor)
    assert torch.equal(box_results.scores, oriented_results.scores)


def test_frames_follow_masks_only_and_every_instance_gets_one():
    # Box-only inference (TEST_TOPK_MASKS 0) predicts no frame; DROP_UNMASKED leaves only
    # predicted ones.
    model = _model()
    model.test_topk_masks = 0
    results = _results(model, 96, 128)
    assert len(results) > 0 and not results.has("pred_frames") and not results.has("pred_masks")
    model = _model(options={"DROP_UNMASKED": True})
    results = _results(model, 96, 128)
    assert len(results) == model.test_topk_masks
    torch.testing.assert_close(results.pred_frames[:, 4], torch.full((len(results),), ANGLE))


def test_mask_nms_keeps_each_frame_with_its_detection():
    # Mask NMS removes masked detections: the frames that remain are still their own
    # detections' (the 30 deg frame of its box for a masked one, its box's frame otherwise).
    options = {"MASK_NMS.ENABLED": True, "MASK_NMS.THRESH": 0.3, "MASK_NMS.PRE_TOPK": 30}
    model = _model(options=options)
    results = _results(model, 96, 128)
    assert results.pred_frames.shape == (len(results), 5)
    masked = (results.pred_frames[:, 4] - ANGLE).abs() < 1e-5
    assert 0 < int(masked.sum()) < 30  # some were suppressed, some kept
    for frame, box, is_masked in zip(
        results.pred_frames.tolist(), results.pred_boxes.tensor.tolist(), masked.tolist()
    ):
        expected = [*_input_frame(box), ANGLE] if is_masked else _box_frame(box)
        assert frame == pytest.approx(expected, rel=1e-4, abs=1e-4)
    assert not results.pred_masks[~masked].any()  # only the masked ones have masks


@pytest.fixture(scope="module")
def oriented_model_dir(tmp_path_factory):
    """config.yaml and model_final.pth of ``_model()``, for the predictor and the demo."""
    model = _model()
    cfg = get_tiny_cfg()
    cfg.MODEL.RETINAMASK.MASK_ROI = "oriented"
    cfg.MODEL.RETINAMASK.TEST_TOPK_MASKS = 3
    cfg.TEST.DETECTIONS_PER_IMAGE = 6
    folder = tmp_path_factory.mktemp("oriented_model")
    DetectionCheckpointer(model, save_dir=str(folder)).save("model_final")
    (folder / "config.yaml").write_text(cfg.dump())
    return folder


def test_predictor_and_upright_cutouts_take_the_model_angle(oriented_model_dir):
    cfg = load_config(oriented_model_dir / "config.yaml", oriented_model_dir / "model_final.pth")
    predictor = RetinaMaskPredictor(cfg, confidence_threshold=0.0)
    rgb = noise_image(150, 200, 3)  # resized to 96 x 128 for the model: scale 1.5625 (uniform)
    instances = predictor.predict(rgb, format="RGB")
    assert len(instances) == 6 and instances.pred_frames.shape == (6, 5)
    torch.testing.assert_close(instances.pred_frames[:3, 4], torch.full((3,), ANGLE))
    cutouts = make_cutouts(rgb, instances, predictor.metadata, upright=True)
    assert [c.index for c in cutouts] == [0, 1, 2]  # the masked ones
    for cutout in cutouts:
        assert cutout.angle == pytest.approx(30.0, abs=1e-4)
        # The mask is its frame's rectangle: turned by the frame's angle it lies flat, as
        # high as the frame is wide.
        frame = instances.pred_frames[cutout.index].tolist()
        assert cutout.rgba.shape[0] == pytest.approx(frame[3], abs=2)
        assert cutout.rgba.shape[1] == pytest.approx(frame[2], abs=2)


def test_demo_json_has_each_instance_frame_in_degrees(oriented_model_dir, tmp_path):
    image = tmp_path / "in.png"
    Image.fromarray(noise_image(96, 128, 4)).save(image)
    out = tmp_path / "out"
    args = ["--input", str(image), "--output", str(out), "--json", "--cutouts", "--upright"]
    assert demo.main(model_args(oriented_model_dir) + args + weights_args(oriented_model_dir)) == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results) == 6
    for i, result in enumerate(results):
        cx, cy, w, h, angle = result["frame"]
        x, y, bw, bh = result["bbox"]
        assert x <= cx <= x + bw and y <= cy <= y + bh and w >= h
        if i < 3:  # masked: the model's frame
            assert angle == pytest.approx(30.0, abs=1e-3)
        else:  # unmasked: its box's
            assert [cx, cy, w, h, math.radians(angle)] == pytest.approx(
                _box_frame([x, y, x + bw, y + bh]), abs=1e-3
            )
    assert len(list((out / "cutouts").iterdir())) == 3
