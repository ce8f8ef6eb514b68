"""Trained models compared on the thin objects of a COCO-format set, by the angle of each
object: how many are found (a detection of its class with box IoU >= 0.5, any score) and how
well a found one is cut out (mask IoU of its best-box detection), plus per-class AP.

Written for the two switches of issue #22 (``MODEL.RETINAMASK.MASK_ROI`` "oriented" and
``MODEL.RETINAMASK.ATSS``) on the quickstart's synthetic shapes, whose thin class is "bar": a
bar's angle is that of the rectangle fitted to its polygon, binned by its distance from the
nearest image axis.

    python -m benchmarks.thin.axis_recall --json val.json --images val/ \\
        --run box=output/box --run oriented=output/oriented --thin-class bar
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.evaluation.coco_evaluation import instances_to_coco_json

from benchmarks.harness import RESULTS_DIR, write_json
from benchmarks.thin.metrics import coco_ap
from retinamask_d2.modeling.oriented_rois import fit_frames, fit_polygon_rectangle
from retinamask_d2.predictor import RetinaMaskPredictor, load_config

ANGLE_BINS = ((0.0, 10.0), (10.0, 30.0), (30.0, 45.0))  # degrees from the nearest axis
FOUND_IOU = 0.5


def axis_angle(annotation: dict, height: int, width: int) -> float:
    """Degrees between the long side of the rectangle fitted to the GT's mask and the nearest
    image axis (0-45): exactly from polygons, from the pixels of an RLE mask."""
    segmentation = annotation["segmentation"]
    if isinstance(segmentation, list):
        theta = fit_polygon_rectangle([np.asarray(p, dtype=np.float64) for p in segmentation])[4]
    else:
        if isinstance(segmentation["counts"], list):
            segmentation = mask_util.frPyObjects(segmentation, height, width)
        mask = torch.from_numpy(mask_util.decode(segmentation)).bool()
        box = torch.tensor([[0.0, 0.0, float(width), float(height)]])
        frames, _ = fit_frames(mask[None], box, min_elongation=1.0)
        theta = float(frames[0, 4])
    degrees = abs(math.degrees(theta)) % 90.0
    return min(degrees, 90.0 - degrees)


def predict(run_dir: Path, dataset: dict, images: Path) -> tuple[list[dict], float]:
    """COCO results (dataset category ids) of the model in ``run_dir`` on every image, and the
    median seconds per image."""
    cfg = load_config(run_dir / "config.yaml", run_dir / "model_final.pth", ["MODEL.DEVICE", "cpu"])
    to_dataset = list(cfg.MODEL.RETINAMASK.DATASET_CATEGORY_IDS)
    predictor = RetinaMaskPredictor(cfg)
    results, seconds = [], []
    for image in dataset["images"]:
        start = time.perf_counter()
        instances = predictor.predict(str(images / image["file_name"]))
        seconds.append(time.perf_counter() - start)
        for result in instances_to_coco_json(instances, image["id"]):
            if to_dataset:
                result["category_id"] = to_dataset[result["category_id"]]
            results.append(result)
    return results, float(np.median(seconds))


def per_object(dataset: dict, results: list[dict], thin_id: int) -> list[dict]:
    """For every thin GT: its angle, whether it is found, and the mask IoU of the detection of
    its class with the highest box IoU (None when not found)."""
    by_image: dict[int, list[dict]] = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    heights = {i["id"]: (i["height"], i["width"]) for i in dataset["images"]}
    rows = []
    for ann in dataset["annotations"]:
        if ann["category_id"] != thin_id:
            continue
        same = [r for r in by_image.get(ann["image_id"], []) if r["category_id"] == thin_id]
        h, w = heights[ann["image_id"]]
        row = {"angle": axis_angle(ann, h, w), "found": False, "mask_iou": None}
        if same:
            box_iou = mask_util.iou([r["bbox"] for r in same], [ann["bbox"]], [0])[:, 0]
            best = int(np.argmax(box_iou))
            if box_iou[best] >= FOUND_IOU:
                gt_rle = _rle(ann["segmentation"], h, w)
                mask_iou = mask_util.iou([same[best]["segmentation"]], [gt_rle], [0])[0, 0]
                row.update(found=True, mask_iou=float(mask_iou))
        rows.append(row)
    return rows


def _rle(segmentation, height: int, width: int) -> dict:
    if isinstance(segmentation, list):
        return mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_util.frPyObjects(segmentation, height, width)
    return segmentation


def by_angle(rows: list[dict]) -> dict:
    """Count, recall and mean matched mask IoU per angle bin."""
    table = {}
    for lo, hi in ANGLE_BINS:
        inside = [r for r in rows if lo <= r["angle"] < hi or (hi == 45.0 and r["angle"] == 45.0)]
        found = [r for r in inside if r["found"]]
        table[f"{lo:g}-{hi:g}"] = {
            "objects": len(inside),
            "recall": len(found) / len(inside) if inside else None,
            "mask_iou": float(np.mean([r["mask_iou"] for r in found])) if found else None,
        }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="COCO annotations")
    parser.add_argument("--images", type=Path, required=True, help="their image folder")
    parser.add_argument("--run", action="append", required=True, help="NAME=OUTPUT_DIR")
    parser.add_argument("--thin-class", default="bar", help="the thin class's name")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "thin_axis_recall.json")
    args = parser.parse_args()
    dataset = json.loads(args.json.read_text())
    thin_id = next(c["id"] for c in dataset["categories"] if c["name"] == args.thin_class)
    report = {"dataset": str(args.json), "images": len(dataset["images"]), "runs": {}}
    per_object(dataset, [], thin_id)  # the GT's angles, before any inference
    for spec in args.run:
        name, folder = spec.split("=", 1)
        results, seconds = predict(Path(folder), dataset, args.images)
        report["runs"][name] = {
            "run_dir": folder,
            "segm": coco_ap(dataset, results, "segm"),
            "bbox": coco_ap(dataset, results, "bbox"),
            f"{args.thin_class}_by_angle": by_angle(per_object(dataset, results, thin_id)),
            "median_seconds_per_image": seconds,
        }
        print(name, json.dumps(report["runs"][name], indent=1))
    write_json(args.output, report)


if __name__ == "__main__":
    main()
