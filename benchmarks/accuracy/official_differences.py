"""How much the official code's inference details that detectron2 does differently would change
a converted model's output, for the details the paper configs do not reproduce.

    python -m benchmarks.accuracy.official_differences  # writes results/official_differences.json

No trained weights exist here, so each detail is measured where it acts:

- anchor shapes (reproduced by ``RetinaMaskOfficialAnchorGenerator``; measured to show what it
  removes): IoU of each official anchor with detectron2's default one of the same size and
  ratio. Equal deltas decode to boxes of about that IoU.
- clip before NMS: the official code clips the decoded boxes to the image before NMS, detectron2
  after. Measured on the dense predictions of the paper R-50 model with random weights (logits
  rescaled to mean -8 and spread 1.5, so that a few thousand candidates pass the 0.05 score
  threshold as in a trained model; deltas to spread 1), on a random 800 x 1216 image: how many
  of the 100 detections change.
- mask RoIs: the official boxes have inclusive ends, so its unaligned RoIAlign pools
  ``[x1, x2 - 1]`` where this model pools ``[x1, x2]``. For a mask head that follows the object,
  that is the same mask pasted 1 px wider: IoU of an elliptic mask pasted both ways.
- mask pasting: the official (Detectron) paste, 1-cell padding and integer box corners, against
  detectron2's ``paste_masks_in_image``: IoU of the pasted masks; and both details together
  (the mask pasted by this model against the official paste of the official RoI's mask).
"""

import argparse
import math
from pathlib import Path

import torch
from detectron2.config import get_cfg
from detectron2.layers import batched_nms
from detectron2.layers.mask_ops import (
    pad_masks,
    paste_mask_in_image_old,
    paste_masks_in_image,
    scale_boxes,
)
from detectron2.modeling import build_model
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.structures import Boxes, pairwise_iou

from benchmarks.harness import RESULTS_DIR, environment, write_json
from retinamask_d2 import add_retinamask_config
from retinamask_d2.modeling.anchor_generator import RetinaMaskOfficialAnchorGenerator

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "paper" / "retinamask_R50_FPN_2x_ms.yaml"
BOX_SIZES = (16, 32, 64, 128, 256)


def _cfg():
    cfg = get_cfg()
    add_retinamask_config(cfg)
    cfg.merge_from_file(str(CONFIG))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RETINANET.NUM_CLASSES = 80
    return cfg


def anchor_shapes(cfg) -> dict:
    kwargs = {
        "sizes": cfg.MODEL.ANCHOR_GENERATOR.SIZES,
        "aspect_ratios": cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS,
        "strides": [8, 16, 32, 64, 128],
        "offset": 0.5,
    }
    official = RetinaMaskOfficialAnchorGenerator(**kwargs).cell_anchors
    default = DefaultAnchorGenerator(**kwargs).cell_anchors
    ious = [
        pairwise_iou(Boxes(a), Boxes(b)).diagonal() for a, b in zip(official, default, strict=True)
    ]
    per_ratio = torch.stack(ious).view(5, 3, 3)  # level, size, ratio (detectron2's order)
    return {
        "min_iou_per_ratio": dict(
            zip(["0.5", "1.0", "2.0"], per_ratio.amin(dim=(0, 1)).tolist(), strict=True)
        ),
        "min_iou_per_level": dict(
            zip(["p3", "p4", "p5", "p6", "p7"], per_ratio.amin(dim=(1, 2)).tolist(), strict=True)
        ),
    }


def _detections(model, anchors, logits, deltas, image_size, clip_before_nms: bool):
    pred = model._decode_multi_level_predictions(
        anchors,
        [x.sigmoid() for x in logits],
        deltas,
        model.test_score_thresh,
        model.test_topk_candidates,
        image_size,
    )
    if clip_before_nms:
        pred.pred_boxes.clip(image_size)
    keep = batched_nms(
        pred.pred_boxes.tensor, pred.scores, pred.pred_classes, model.test_nms_thresh
    )
    pred = pred[keep[: model.max_detections_per_image]]
    pred.pred_boxes.clip(image_size)  # detector_postprocess clips both in the end
    return pred


def clip_before_nms(cfg, seed: int) -> dict:
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    image = torch.rand(3, 800, 1216) * 255
    with torch.no_grad():
        images = model.preprocess_image([{"image": image}])
        feats = model.backbone(images.tensor)
        features = [feats[f] for f in model.head_in_features]
        logits, deltas = model._transpose_dense_predictions(
            model.head(features), [model.num_classes, 4]
        )
        anchors = model.anchor_generator(features)
    # head outputs in a trained model's range (see the module docstring)
    flat = torch.cat([x.flatten() for x in logits])
    logits = [(x[0] - flat.mean()) / flat.std() * 1.5 - 8.0 for x in logits]
    flat = torch.cat([x.flatten() for x in deltas])
    deltas = [(x[0] - flat.mean()) / flat.std() for x in deltas]
    size = images.image_sizes[0]
    ours = _detections(model, anchors, logits, deltas, size, clip_before_nms=False)
    theirs = _detections(model, anchors, logits, deltas, size, clip_before_nms=True)
    iou = pairwise_iou(ours.pred_boxes, theirs.pred_boxes)
    iou[ours.pred_classes[:, None] != theirs.pred_classes[None, :]] = 0
    best = iou.max(dim=1).values if len(theirs) else torch.zeros(len(ours))
    return {
        "detections": len(ours),
        "candidates_above_threshold": int(sum((x.sigmoid() > 0.05).sum() for x in logits)),
        "changed_detections": int((best < 0.999).sum()),
        "touching_the_border": int(_touching_border(ours.pred_boxes.tensor, size).sum()),
    }


def _touching_border(boxes: torch.Tensor, size) -> torch.Tensor:
    h, w = size
    return (boxes[:, 0] <= 0) | (boxes[:, 1] <= 0) | (boxes[:, 2] >= w) | (boxes[:, 3] >= h)


def _ellipse_mask(m: int = 28) -> torch.Tensor:
    """A soft ellipse filling most of the box, like a mask head's probabilities."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, m), torch.linspace(-1, 1, m), indexing="ij")
    r = (x / 0.8) ** 2 + (y / 0.7) ** 2
    return torch.sigmoid((1 - r) * 8)


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.bool(), b.bool()
    return ((a & b).sum() / (a | b).sum().clamp(min=1)).item()


def mask_geometry(seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    mask = _ellipse_mask()
    roi, paste, both = {}, {}, {}
    for size in BOX_SIZES:
        roi_ious, paste_ious, both_ious = [], [], []
        for _ in range(20):
            x0, y0 = (torch.rand(2, generator=gen) * 20 + 10).tolist()
            w, h = size * (0.8 + 0.4 * torch.rand(2, generator=gen)).numpy()
            img = (math.ceil(y0 + h) + 10, math.ceil(x0 + w) + 10)
            box = torch.tensor([[x0, y0, x0 + w, y0 + h]])
            wider = box + torch.tensor([[0.0, 0.0, 1.0, 1.0]])
            ours = paste_masks_in_image(mask[None], Boxes(box), img)[0]
            roi_ious.append(_mask_iou(ours, paste_masks_in_image(mask[None], Boxes(wider), img)[0]))
            # the official paste: inclusive ends (x2 - 1), padding 1, Detectron's resize
            padded, scale = pad_masks(mask[None], 1)
            official_box = scale_boxes(box - torch.tensor([[0.0, 0.0, 1.0, 1.0]]), scale)[0]
            theirs = paste_mask_in_image_old(padded[0], official_box, *img, 0.5)
            paste_ious.append(_mask_iou(ours, theirs))
            # both: the official model's mask for the 1 px wider RoI, pasted the official way
            official_wider = scale_boxes(box, scale)[0]
            both_ious.append(
                _mask_iou(ours, paste_mask_in_image_old(padded[0], official_wider, *img, 0.5))
            )
        roi[str(size)] = sum(roi_ious) / len(roi_ious)
        paste[str(size)] = sum(paste_ious) / len(paste_ious)
        both[str(size)] = sum(both_ious) / len(both_ious)
    return {
        "mask_roi_plus_one_mean_iou": roi,
        "official_paste_mean_iou": paste,
        "mask_roi_and_paste_mean_iou": both,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "official_differences.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = _cfg()
    result = {
        "environment": environment(),
        "config": str(CONFIG.relative_to(ROOT)),
        "anchor_shapes": anchor_shapes(cfg),
        "clip_before_nms": {str(s): clip_before_nms(cfg, s) for s in args.seeds},
        "mask_box_sizes_px": list(BOX_SIZES),
        **mask_geometry(args.seeds[0]),
    }
    write_json(args.out, result)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
