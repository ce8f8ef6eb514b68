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
import time
from pathlib import Path

import numpy as np
from detectron2.evaluation.coco_evaluation import instances_to_coco_json

from benchmarks.harness import RESULTS_DIR, write_json
from benchmarks.thin.metrics import coco_ap
from benchmarks.thin.object_metrics import by_angle, per_object
from retinamask_d2.predictor import RetinaMaskPredictor, load_config


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
    per_object(dataset, [], {thin_id})  # the GT's angles, before any inference
    for spec in args.run:
        name, folder = spec.split("=", 1)
        results, seconds = predict(Path(folder), dataset, args.images)
        report["runs"][name] = {
            "run_dir": folder,
            "segm": coco_ap(dataset, results, "segm"),
            "bbox": coco_ap(dataset, results, "bbox"),
            f"{args.thin_class}_by_angle": by_angle(per_object(dataset, results, {thin_id})),
            "median_seconds_per_image": seconds,
        }
        print(name, json.dumps(report["runs"][name], indent=1))
    write_json(args.output, report)


if __name__ == "__main__":
    main()
