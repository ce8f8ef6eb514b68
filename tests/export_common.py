"""A tiny RetinaMask that detects on random images, and how its exported outputs are compared with
its eager ones."""

import math
from pathlib import Path

import numpy as np
import torch

from tests.common import build_tiny_model, get_tiny_cfg, load_script

EXPORT_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "export_model.py"
export_model = load_script(EXPORT_SCRIPT, "retinamask_export_model")

# Integer means: an image filled with them normalises to exactly 0, so that every feature of the
# randomly initialised (bias-free under GN) network is 0 and each class score is sigmoid(bias).
PIXEL_MEAN = [104.0, 116.0, 124.0]
CLASS_BIAS = -3.5  # sigmoid 0.029: below the 0.05 score threshold, so that image has no detection
MASK_LOGIT_SCALE = 10.0
SAMPLE_SHAPE = (96, 128)
# Other sizes and aspect ratios than the sample's, each with detections.
OTHER_SHAPES = [(128, 96), (80, 200), (150, 64), (64, 64)]
CLASS_NAMES = ["circle", "square", "triangle"]


def detecting_cfg(opts: dict | None = None):
    """The tiny config with ``PIXEL_MEAN`` and ``CLASS_NAMES``, then ``opts`` (full key: value)."""
    cfg = get_tiny_cfg()
    cfg.MODEL.PIXEL_MEAN = PIXEL_MEAN
    cfg.MODEL.RETINAMASK.CLASS_NAMES = CLASS_NAMES
    cfg.merge_from_list([item for pair in (opts or {}).items() for item in pair])
    return cfg


def detecting_model(opts: dict | None = None):
    """The tiny model, with class logits spread (std ~1.5) around ``CLASS_BIAS``: random images
    get tens of well-separated scores above the threshold, the blank image none. Its mask
    logits are spread too, as a trained model's are: at init they are all near 0, every pixel's
    probability near the 0.5 threshold, where float rounding alone flips pixels. ``opts`` as in
    :func:`detecting_cfg`: the weights are the same whatever they say."""
    torch.manual_seed(0)
    model = build_tiny_model(detecting_cfg(opts)).eval()
    with torch.no_grad():
        model.head.cls_score.weight.mul_(10.0)
        model.head.cls_score.bias.fill_(CLASS_BIAS)
        model.mask_branch.mask_head.predictor.weight.mul_(MASK_LOGIT_SCALE)
    return model


def random_image(shape: tuple[int, int], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (*shape, 3), dtype=torch.uint8, generator=generator)


def blank_image(shape: tuple[int, int] = (100, 90)) -> torch.Tensor:
    return torch.tensor(PIXEL_MEAN, dtype=torch.uint8).expand(*shape, 3).contiguous()


def eager_instances(model, image: torch.Tensor):
    with torch.no_grad():
        return model([{"image": image.permute(2, 0, 1).float()}])[0]["instances"]


def matching(boxes, scores, classes, instances, box_tol=1e-3, score_tol=1e-4) -> list[int]:
    """For each exported detection, the eager one with its class, box and score (within the
    tolerances), each eager detection used once. Order is not compared: scores that differ by
    float rounding may come out in either order."""
    unused = list(range(len(instances)))
    eager_boxes, eager_scores = instances.pred_boxes.tensor, instances.scores
    order = []
    for box, score, cls in zip(boxes, scores, classes):
        same = [
            j
            for j in unused
            if int(instances.pred_classes[j]) == int(cls)
            and abs(float(eager_scores[j]) - float(score)) <= score_tol
            and float((eager_boxes[j] - box).abs().max()) <= box_tol
        ]
        assert same, f"no eager detection matches class {int(cls)} {score:.6f} {box.tolist()}"
        order.append(same[0])
        unused.remove(same[0])
    return order


def assert_same_results(outputs, instances) -> None:
    """The equality the export promises: same count; each detection's class, score (within
    1e-4) and box (within 1e-3 px) those of one eager detection; each mask's IoU with that
    detection's eager mask >= 0.99; the eager masks of the detections without one empty; a
    fifth output, ``frames``, exactly when the eager instances have ``pred_frames`` (oriented
    mask RoIs), each detection's within 1e-3 (px and radians, the angle modulo pi) of its
    eager detection's."""
    boxes, scores, classes, masks, *frames = (torch.as_tensor(np.asarray(o)) for o in outputs)
    assert len(boxes) == len(instances)
    assert masks.dtype == torch.bool and masks.shape[1:] == instances.image_size
    order = matching(boxes, scores, classes, instances)
    assert len(frames) == int(instances.has("pred_frames"))
    if frames:
        (frames,) = frames
        expected = instances.pred_frames[order]
        assert frames.shape == expected.shape == (len(boxes), 5)
        torch.testing.assert_close(frames[:, :4], expected[:, :4], atol=1e-3, rtol=0)
        turn = torch.remainder(frames[:, 4] - expected[:, 4] + math.pi / 2, math.pi) - math.pi / 2
        assert turn.abs().max() <= 1e-3 if len(turn) else True
    if not instances.has("pred_masks"):  # box-only inference
        assert len(masks) == 0
        return
    expected = instances.pred_masks[order[: len(masks)]]
    inter = (expected & masks).flatten(1).sum(1)
    union = (expected | masks).flatten(1).sum(1)
    iou = torch.where(union > 0, inter / union.clamp(min=1), 1.0)
    assert (iou >= 0.99).all(), iou
    assert not instances.pred_masks[order[len(masks) :]].any()
