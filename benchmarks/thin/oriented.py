"""Thin objects at the resolution the models see: RetinaMask with box and with oriented mask RoIs
against detectron2's RetinaNet and Mask R-CNN, all fine-tuned from ImageNet MobileNetV2.

The data is the thin-objects generator's ``READABLE`` layout (``benchmarks/thin/data.py``:
192-224 px images, every stroke at least 3 px wide), trained and tested at its own size (never
scaled down). Every model has the same backbone and weights (``imagenet://MobileNetV2``),
FPN, head sizes, anchors, schedule and seed; the RetinaMask rows are the project's default mask
branch (P2-P5, Dice) and differ only in ``MODEL.RETINAMASK.MASK_ROI``. Thin objects are the
thin classes (hairline, rod, plank, arc), whatever their angle. Besides COCO AP (all, thin, per
class), every thin object is measured by its angle from the nearest axis
(``benchmarks/thin/object_metrics.py``).

Each run (variant, seed) writes ``row.json`` in its own folder under ``--work-dir`` and the
results file is rebuilt from all of them, so runs of different seeds can go in parallel
processes, and a stopped run keeps what it finished; a rerun skips finished runs.

    python -m benchmarks.thin.oriented --seeds 0 1 2     # results/thin_oriented.json
    python -m benchmarks.thin.oriented --quick           # a few iterations: checks the harness
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from statistics import median

from detectron2.data import build_detection_test_loader

from benchmarks.harness import (
    RESULTS_DIR,
    device_description,
    environment,
    load_average,
    set_threads,
    write_json,
)
from benchmarks.synthetic_configs import (
    PRETRAINED,
    PRETRAINED_KEYS,
    SharedSpec,
    recipe_values,
)
from benchmarks.thin.data import READABLE, THIN, generate, is_generated
from benchmarks.thin.metrics import coco_ap, dataset_statistics
from benchmarks.thin.object_metrics import by_angle, per_object, summarise
from benchmarks.thin.objects import anchors_found, detect
from benchmarks.training import benchmark_cfg, register, train

DATA_NAME = "thin_readable"
ORIENTED = {"MODEL.RETINAMASK.MASK_ROI": "oriented"}
# name -> (model of synthetic_configs, keys changed on top of it and of the pretrained backbone)
VARIANTS: dict[str, tuple[str, dict]] = {
    "retinamask_box": ("retinamask_p2", {}),
    "retinamask_oriented": ("retinamask_p2", ORIENTED),
    "retinanet": ("retinanet", {}),
    "mask_rcnn": ("mask_rcnn", {}),
    "retinamask_oriented_atss": (
        "retinamask_p2",
        {**ORIENTED, "MODEL.RETINAMASK.ATSS.ENABLED": True},
    ),
    # Frames at least a quarter of their length wide: tolerate angle errors up to 17 degrees.
    "retinamask_oriented_wide": (
        "retinamask_p2",
        {**ORIENTED, "MODEL.RETINAMASK.ORIENTED.MIN_WIDTH_RATIO": 0.25},
    ),
}
MAIN = ("retinamask_box", "retinamask_oriented", "retinanet", "mask_rcnn")
SPEC = SharedSpec(image_size=224, max_iter=1200, warmup_iters=50, anchor_size=16, base_lr=0.01)
QUICK_SPEC = SharedSpec(image_size=224, max_iter=3, warmup_iters=1, ims_per_batch=2)


def variant_keys(variant: str) -> dict:
    """Everything ``variant`` sets on its synthetic_configs model: the pretrained backbone, the
    project's default mask loss for RetinaMask rows (synthetic_configs starts them from the
    paper's), then the variant's own keys."""
    model, keys = VARIANTS[variant]
    pretrained = recipe_values(PRETRAINED_KEYS, PRETRAINED)
    if model.startswith("retinamask"):
        pretrained |= recipe_values(("MODEL.RETINAMASK.MASK_DICE_WEIGHT",), "Base-RetinaMask.yaml")
    return {**pretrained, **keys}


def build_cfg(variant: str, spec: SharedSpec, data_dir: Path, output_dir: Path, device: str):
    model, _ = VARIANTS[variant]
    keys = variant_keys(variant)
    return benchmark_cfg(model, spec, data_dir, DATA_NAME, output_dir, device, keys)


def thin_category_ids(gt: dict) -> set[int]:
    return {c["id"] for c in gt["categories"] if c["name"] in THIN}


def run_one(variant: str, spec: SharedSpec, args, gt: dict) -> dict:
    """Train ``variant`` from ``spec.seed`` and measure it on the validation split."""
    output_dir = args.work_dir / f"seed{spec.seed}" / variant
    cfg = build_cfg(variant, spec, args.data_dir, output_dir, args.device)
    load = load_average()
    model, timing = train(cfg)
    inputs = list(build_detection_test_loader(cfg, f"{DATA_NAME}_val"))
    detections, seconds = detect(model, gt, inputs)
    thin_ids = thin_category_ids(gt)

    def thin(annotation: dict) -> bool:
        return annotation["category_id"] in thin_ids

    boxes = [{k: v for k, v in d.items() if k != "segmentation"} for d in detections]
    objects = per_object(gt, detections, thin_ids)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    row = {
        "variant": variant,
        "seed": spec.seed,
        "max_iter": spec.max_iter,
        **timing,
        "load_average_before": load,
        "ms_per_image": 1000.0 * median(seconds),
        "box": coco_ap(gt, boxes, "bbox", thin),
        "thin_by_angle": by_angle(objects),
        "thin_by_class": {
            names[i]: summarise([o for o in objects if o["category_id"] == i]) for i in thin_ids
        },
        "anchors": anchors_found(model, gt, inputs),
    }
    if any("segmentation" in d for d in detections):
        row["mask"] = coco_ap(gt, detections, "segm", thin)
    write_json(output_dir / "row.json", row)
    return row


def collect(work_dir: Path) -> list[dict]:
    """Every finished run's row under ``work_dir``, seed-major."""
    rows = [json.loads(p.read_text()) for p in sorted(work_dir.glob("seed*/*/row.json"))]
    order = {variant: i for i, variant in enumerate(VARIANTS)}  # unknown ones (newer code) last
    return sorted(
        rows, key=lambda r: (r["seed"], order.get(r["variant"], len(order)), r["variant"])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(MAIN), choices=list(VARIANTS))
    parser.add_argument("--max-iter", type=int)
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--num-val", type=int, default=100)
    parser.add_argument("--data-dir", type=Path, default=Path("datasets/thin_readable"))
    parser.add_argument("--work-dir", type=Path, default=Path("output/benchmarks/thin_oriented"))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "thin_oriented.json")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    set_threads(args.threads)
    spec = SPEC
    if args.quick:
        spec = QUICK_SPEC
        args.num_train, args.num_val = 6, 4
        args.data_dir = args.work_dir / "data_quick"
        args.work_dir = args.work_dir / "quick"
        args.out = args.work_dir / "thin_oriented.json"
    if args.max_iter:
        spec = replace(spec, max_iter=args.max_iter)

    counts = {"train": args.num_train, "val": args.num_val}
    if not is_generated(args.data_dir, counts, 0, READABLE):
        generate(args.data_dir, counts, 0, READABLE)
    register(args.data_dir, DATA_NAME)
    gt = json.loads((args.data_dir / "val.json").read_text())
    header = {
        "benchmark": "thin_oriented",
        "device": device_description(args.device),
        "threads": args.threads,
        "quick": args.quick,
        "spec": {**spec.as_dict(), "seed": None},
        "backbone": recipe_values(PRETRAINED_KEYS, PRETRAINED),
        "variants": {v: variant_keys(v) for v in VARIANTS},
        "data": {
            "generator": "python -m benchmarks.thin.data (READABLE layout)",
            "layout": READABLE.params()["layout"],
            "train_images": args.num_train,
            "val_images": args.num_val,
            "seed": 0,
            "statistics": dataset_statistics(gt),
        },
        "environment": environment(),
    }
    for seed in args.seeds:
        for variant in args.variants:
            if (args.work_dir / f"seed{seed}" / variant / "row.json").is_file():
                continue
            row = run_one(variant, replace(spec, seed=seed), args, gt)
            mask = row.get("mask", {})
            print(
                f"thin_oriented: seed {seed} {variant}: box {row['box']['AP']:.1f} mask "
                f"{mask.get('AP')} thin mask {mask.get('thin_AP')} thin IoU "
                f"{row['thin_by_angle']['all']['mask_iou']}",
                flush=True,
            )
            write_json(args.out, {**header, "rows": collect(args.work_dir)})
    write_json(args.out, {**header, "rows": collect(args.work_dir)})
    print(f"thin_oriented: wrote {args.out}")


if __name__ == "__main__":
    main()
