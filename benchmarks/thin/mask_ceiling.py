"""The mask AP a perfect mask head would reach at a given mask resolution: the ceiling that the
mask's grid puts on thin objects, with detection taken out of the picture.

Each GT mask is pooled over its own GT box into an M x M grid with detectron2's ROIAlign (the op
that feeds the mask head, here on the binary mask itself), pasted back with detectron2's
``paste_masks_in_image`` (the test-time paste) and compared with the GT mask. A GT whose oracle
mask has IoU below a COCO threshold is lost at that threshold whatever the network learns, so
the mean over the thresholds 0.50:0.05:0.95 of the share kept is the class's mask AP ceiling
(boxes exact, one detection per object, every score correct).

    python -m benchmarks.thin.mask_ceiling     # writes results/mask_ceiling.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.layers import ROIAlign
from detectron2.layers.mask_ops import paste_masks_in_image
from detectron2.structures import Boxes

from benchmarks.harness import RESULTS_DIR, write_json

RESOLUTIONS = (28, 56)
THRESHOLDS = np.arange(0.5, 0.96, 0.05)


def _gt_masks(gt: dict) -> dict[int, list[tuple[int, np.ndarray, list[float]]]]:
    """image id -> [(category id, HxW bool mask, XYWH box)]."""
    images = {im["id"]: im for im in gt["images"]}
    out: dict[int, list] = {}
    for ann in gt["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        im = images[ann["image_id"]]
        seg = ann["segmentation"]
        if isinstance(seg, list):
            rle = mask_util.merge(mask_util.frPyObjects(seg, im["height"], im["width"]))
        elif isinstance(seg["counts"], list):
            rle = mask_util.frPyObjects(seg, im["height"], im["width"])
        else:
            rle = seg
        mask = mask_util.decode(rle).astype(bool)
        out.setdefault(ann["image_id"], []).append((ann["category_id"], mask, ann["bbox"]))
    return out


def oracle_ious(gt: dict, resolution: int, scale: float) -> dict[int, list[float]]:
    """category id -> IoU of each GT with its oracle mask at ``resolution``, the image resized
    by ``scale`` first (as the model sees it)."""
    pool = ROIAlign((resolution, resolution), spatial_scale=1.0, sampling_ratio=0, aligned=True)
    ious: dict[int, list[float]] = {}
    for items in _gt_masks(gt).values():
        height, width = items[0][1].shape
        size = (round(height * scale), round(width * scale))
        masks = torch.stack([torch.from_numpy(m).float() for _, m, _ in items])[:, None]
        masks = torch.nn.functional.interpolate(masks, size=size, mode="bilinear") >= 0.5
        boxes = torch.tensor([[x, y, x + w, y + h] for _, _, (x, y, w, h) in items]) * scale
        rois = torch.cat([torch.arange(len(items), dtype=torch.float32)[:, None], boxes], 1)
        grids = pool(masks.float(), rois)[:, 0]
        pasted = paste_masks_in_image(grids, Boxes(boxes), size, threshold=0.5)
        for (category, _, _), target, mask in zip(items, masks[:, 0], pasted, strict=True):
            union = (target | mask).sum().item()
            iou = (target & mask).sum().item() / union if union else 0.0
            ious.setdefault(category, []).append(iou)
    return ious


def ceiling(ious: list[float]) -> float:
    """Mask AP ceiling (percent) of GT with these oracle IoUs."""
    values = np.asarray(ious)
    return float(100.0 * np.mean([(values >= t).mean() for t in THRESHOLDS]))


def measure(name: str, json_path: Path, long_side: int) -> dict:
    gt = json.loads(json_path.read_text())
    names = {c["id"]: c["name"] for c in gt["categories"]}
    scale = long_side / max(max(im["height"], im["width"]) for im in gt["images"])
    rows = {}
    for resolution in RESOLUTIONS:
        ious = oracle_ious(gt, resolution, scale)
        rows[str(resolution)] = {
            names[c]: {"ap_ceiling": ceiling(v), "mean_iou": float(np.mean(v)), "count": len(v)}
            for c, v in sorted(ious.items())
        }
        rows[str(resolution)]["all"] = {
            "ap_ceiling": ceiling([i for v in ious.values() for i in v]),
            "mean_iou": float(np.mean([i for v in ious.values() for i in v])),
            "count": sum(len(v) for v in ious.values()),
        }
    return {"dataset": name, "json": str(json_path), "long_side": long_side, "by_resolution": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quickstart-json", type=Path, default=Path("datasets/synthetic/val.json"))
    parser.add_argument("--thin-json", type=Path, default=Path("datasets/thin_shapes/val.json"))
    parser.add_argument("--thin-long-side", type=int, default=160)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "mask_ceiling.json")
    args = parser.parse_args()
    result = {"benchmark": "mask_ceiling", "thresholds": THRESHOLDS.round(2).tolist(), "sets": []}
    for name, path, side in (
        ("quickstart", args.quickstart_json, 128),
        ("thin_objects", args.thin_json, args.thin_long_side),
    ):
        if path.is_file():
            result["sets"].append(measure(name, path, side))
    write_json(args.out, result)
    for entry in result["sets"]:
        for resolution, classes in entry["by_resolution"].items():
            cells = ", ".join(f"{k} {v['ap_ceiling']:.1f}" for k, v in classes.items())
            print(f"{entry['dataset']} {resolution}x{resolution}: {cells}")


if __name__ == "__main__":
    main()
