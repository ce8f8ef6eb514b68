"""The thin-objects benchmark: RetinaMask and its mechanisms against detectron2's RetinaNet and
Mask R-CNN, on data the project's defaults were not tuned on (``benchmarks/thin/data.py``).

Every model trains from scratch with the same backbone, heads, input size, schedule and seed
(``synthetic_configs``); RetinaMask variants start from the project's tiny recipe and change one
mechanism each (``TRAIN_VARIANTS``). Each trained RetinaMask is then evaluated under every
test-time variant (``TEST_VARIANTS``: mask-IoU NMS, class-agnostic NMS), which need no training
of their own. Runs go one after the other in this process (seed-major, so a stopped run still
has whole seeds), and the results file is rewritten after each: a run that is stopped keeps what
it finished, and a rerun skips it.

    python -m benchmarks.thin.objects --seeds 0 1 2    # writes results/thin_objects.json
    python -m benchmarks.thin.objects --quick          # a few iterations: checks the harness
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from statistics import median

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import build_detection_test_loader
from detectron2.evaluation.coco_evaluation import instances_to_coco_json

from benchmarks.harness import (
    RESULTS_DIR,
    device_description,
    environment,
    load_average,
    set_threads,
    write_json,
)
from benchmarks.synthetic_configs import SharedSpec, build_benchmark_model, set_keys
from benchmarks.thin.data import generate, is_generated
from benchmarks.thin.metrics import (
    anchor_recall,
    coco_ap,
    dataset_statistics,
    is_thin,
    loss_breakdown,
)
from benchmarks.training import benchmark_cfg, register, train

DATA_NAME = "thin_shapes"  # registered as <name>_train and <name>_val
HEAD_56 = {"MODEL.ROI_MASK_HEAD.NAME": "MaskRCNNConvUpsample2xHead"}
RATIOS = {"MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [[0.2, 0.5, 1.0, 2.0, 5.0]]}
DICE = {"MODEL.RETINAMASK.MASK_DICE_WEIGHT": 1.0}
BOX_15 = {"MODEL.RETINAMASK.MASK_BOX_SCALE": 1.5}
# The paper's recipe, one element at a time back to detectron2's RetinaNet value.
RECIPE_OFF: dict[str, dict] = {
    "no_sasl1": {
        "MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1.ENABLED": False,
        "MODEL.RETINANET.SMOOTH_L1_LOSS_BETA": 0.1,
    },
    "coder_1": {"MODEL.RETINANET.BBOX_REG_WEIGHTS": (1.0, 1.0, 1.0, 1.0)},
    "reg_weight_1": {"MODEL.RETINAMASK.BOX_REG_LOSS_WEIGHT": 1.0},
    "p6_res5": {"MODEL.BACKBONE.NAME": "build_retinanet_resnet_fpn_backbone"},
    "no_head_gn": {"MODEL.RETINANET.NORM": ""},
    "no_warmup": {"SOLVER.WARMUP_ITERS": 0},
}
NMS_05 = {"MODEL.RETINANET.NMS_THRESH_TEST": 0.5}
# detectron2's RetinaNet recipe (box loss, coder, P6, test NMS) with the mask branch; the GN heads
# and the warm-up stay, as the RetinaNet row has them.
D2_RECIPE = {
    k: v
    for name in ("no_sasl1", "coder_1", "reg_weight_1", "p6_res5")
    for k, v in RECIPE_OFF[name].items()
} | NMS_05
# name -> (model of synthetic_configs, keys changed on top of it)
TRAIN_VARIANTS: dict[str, tuple[str, dict]] = {
    "retinamask": ("retinamask", {}),
    "retinanet": ("retinanet", {}),
    "mask_rcnn": ("mask_rcnn", {}),
    "retinamask_56": ("retinamask", HEAD_56),
    "retinamask_p2": ("retinamask_p2", {}),
    "retinamask_56_p2": ("retinamask_p2", HEAD_56),
    "retinamask_ratios": ("retinamask", RATIOS),
    "retinamask_thin": ("retinamask_p2", {**HEAD_56, **RATIOS}),
    "retinamask_dice": ("retinamask", DICE),
    "retinamask_p2_dice": ("retinamask_p2", DICE),
    "retinamask_56_p2_dice": ("retinamask_p2", {**HEAD_56, **DICE}),
    "retinamask_p2_dice_box15": ("retinamask_p2", {**DICE, **BOX_15}),
    "retinamask_p2_dice_ratios": ("retinamask_p2", {**DICE, **RATIOS}),
    "retinamask_d2_recipe": ("retinamask", D2_RECIPE),
    **{f"retinamask_{name}": ("retinamask", keys) for name, keys in RECIPE_OFF.items()},
}
MAIN = ("retinamask", "retinanet", "mask_rcnn")
# Trained for every seed first; the single-mechanism rows follow, seed by seed, as time allows.
PRIMARY = (*MAIN, "retinamask_p2")
TEST_VARIANTS: dict[str, dict] = {
    "": {},
    "mask_nms": {"MODEL.RETINAMASK.MASK_NMS.ENABLED": True},
    "mask_nms_no_box_nms": {
        "MODEL.RETINAMASK.MASK_NMS.ENABLED": True,
        "MODEL.RETINAMASK.MASK_NMS.BOX_THRESH": 1.0,
    },
    "agnostic": {"MODEL.RETINAMASK.CLASS_AGNOSTIC_NMS": True},
    "nms_05": NMS_05,
}
# Which test-time variants each trained variant is evaluated with (an evaluation costs a few
# seconds): all for the default RetinaMask, mask NMS for the P2 and thin configs.
TESTS_OF = {
    "retinamask": tuple(TEST_VARIANTS),
    "retinamask_p2": ("", "mask_nms", "agnostic"),
    "retinamask_thin": ("", "mask_nms"),
}
SPEC = SharedSpec(image_size=160, max_iter=500, warmup_iters=50, anchor_size=16, base_lr=0.02)
QUICK_SPEC = SharedSpec(image_size=96, max_iter=3, warmup_iters=1, ims_per_batch=2)


def build_cfg(variant: str, spec: SharedSpec, data_dir: Path, output_dir: Path, device: str):
    model, keys = TRAIN_VARIANTS[variant]
    return benchmark_cfg(model, spec, data_dir, DATA_NAME, output_dir, device, keys)


def detect(model: torch.nn.Module, gt: dict, inputs: list) -> tuple[list[dict], list[float]]:
    """COCO results of ``model`` on ``inputs`` (``gt``'s category ids) and seconds per image."""
    id_map = {i: c["id"] for i, c in enumerate(gt["categories"])}
    model.eval()
    detections, seconds = [], []
    with torch.no_grad():
        for batch in inputs:
            start = time.perf_counter()
            output = model(batch)[0]["instances"].to("cpu")
            seconds.append(time.perf_counter() - start)
            for det in instances_to_coco_json(output, batch[0]["image_id"]):
                det["category_id"] = id_map[det["category_id"]]
                detections.append(det)
    return detections, seconds


def evaluate(model: torch.nn.Module, cfg, gt: dict, inputs: list) -> dict:
    """COCO box/mask AP (all, thin, per class), the loss breakdown and the median ms/image."""
    detections, seconds = detect(model, gt, inputs)
    has_masks = any("segmentation" in d for d in detections)
    box_dets = [{k: v for k, v in d.items() if k != "segmentation"} for d in detections]
    row = {
        "box": coco_ap(gt, box_dets, "bbox"),
        "ms_per_image": 1000.0 * median(seconds),
        "breakdown": loss_breakdown(gt, detections),
    }
    if has_masks:
        row["mask"] = coco_ap(gt, detections, "segm")
    return row


def _anchors(model: torch.nn.Module, height: int, width: int) -> np.ndarray:
    """(A, 4) XYXY anchors of ``model`` for an input of ``height`` x ``width``."""
    shapes = model.backbone.output_shape()
    grids = [
        torch.zeros(1, 1, math.ceil(height / shapes[f].stride), math.ceil(width / shapes[f].stride))
        for f in model.head_in_features
    ]
    return torch.cat([b.tensor for b in model.anchor_generator(grids)]).numpy()


def anchors_found(model: torch.nn.Module, gt: dict, inputs: list) -> dict | None:
    """Percentage of GT (all, thin) with an anchor of IoU >= 0.5 at the model's input size, and
    the anchor count of a square input (RetinaNet-style models only)."""
    if not hasattr(model, "anchor_generator"):
        return None
    by_image: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    boxes, anchors, thin = [], [], []
    for batch in inputs:
        item = batch[0]
        height, width = item["image"].shape[1:]
        scale = width / item["width"]
        anns = by_image.get(item["image_id"], [])
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        boxes.append(np.array(xyxy).reshape(-1, 4) * scale)
        anchors.append(_anchors(model, height, width))
        thin.append([is_thin(a) for a in anns])
    size = max(item["image"].shape[1:])
    return {**anchor_recall(boxes, anchors, thin), "count_square": len(_anchors(model, size, size))}


def run_one(variant: str, spec: SharedSpec, args, gt: dict) -> list[dict]:
    """Train one variant from ``spec.seed``; one row per test-time variant."""
    cfg = build_cfg(
        variant, spec, args.data_dir, args.work_dir / f"seed{spec.seed}" / variant, args.device
    )
    model, timing = train(cfg)
    inputs = list(build_detection_test_loader(cfg, f"{DATA_NAME}_val"))
    anchors = anchors_found(model, gt, inputs)
    rows = []
    for test in TESTS_OF.get(variant, ("",)):
        keys = TEST_VARIANTS[test]
        test_model = model
        if keys:
            test_cfg = cfg.clone()
            set_keys(test_cfg, keys)
            test_model = build_benchmark_model(test_cfg)
            test_model.load_state_dict(model.state_dict())
        row = {"variant": variant, "test": test, "seed": spec.seed, **timing}
        row.update(evaluate(test_model, cfg, gt, inputs))
        row["anchors"] = anchors
        rows.append(row)
        print(
            f"thin_objects: seed {spec.seed} {variant}{'+' + test if test else ''}: box "
            f"{row['box']['AP']:.1f} mask {row.get('mask', {}).get('AP', float('nan')):.1f} "
            f"thin mask {row.get('mask', {}).get('thin_AP', float('nan')):.1f}",
            flush=True,
        )
    return rows


TIMING_ITERS = 30


def time_one(variant: str, spec: SharedSpec, args) -> dict:
    """s/iter of ``TIMING_ITERS`` fresh training steps and ms/image of the trained seed's
    weights on the validation set, measured alone (``--timing``, on a quiet machine): the
    accuracy runs go side by side and their own timings carry the other run's load."""
    trained = args.work_dir / f"seed{spec.seed}" / variant / "model_final.pth"
    short = replace(spec, max_iter=TIMING_ITERS, warmup_iters=1)
    cfg = build_cfg(variant, short, args.data_dir, args.work_dir / "timing" / variant, args.device)
    model, timing = train(cfg)  # then the trained seed's weights in the same model
    DetectionCheckpointer(model).load(str(trained))
    model.eval()
    seconds = []
    with torch.no_grad():
        for batch in build_detection_test_loader(cfg, f"{DATA_NAME}_val"):
            start = time.perf_counter()
            model(batch)
            seconds.append(time.perf_counter() - start)
    return {
        "train_s_per_iter": timing["train_s_per_iter"],
        "ms_per_image": 1000.0 * median(seconds),
        "seed_of_weights": spec.seed,
        "load_average_before": load_average(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(TRAIN_VARIANTS))
    parser.add_argument("--max-iter", type=int)
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--num-val", type=int, default=60)
    parser.add_argument("--data-dir", type=Path, default=Path("datasets/thin_shapes"))
    parser.add_argument("--work-dir", type=Path, default=Path("output/benchmarks/thin_objects"))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "thin_objects.json")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--timing",
        action="store_true",
        help="time the trained variants of the first seed alone (a quiet machine): s/iter of a "
        "few fresh steps, ms/image of the trained weights; the report then uses these",
    )
    args = parser.parse_args()
    set_threads(args.threads)
    unknown = [v for v in args.variants if v not in TRAIN_VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(TRAIN_VARIANTS)}")
    spec = SPEC
    if args.quick:
        spec = QUICK_SPEC
        args.num_train, args.num_val = 6, 3
        args.data_dir = args.work_dir / "data_quick"
    if args.max_iter:
        spec = replace(spec, max_iter=args.max_iter)
    if args.image_size:
        spec = replace(spec, image_size=args.image_size)

    counts = {"train": args.num_train, "val": args.num_val}
    if not is_generated(args.data_dir, counts, 0):
        generate(args.data_dir, counts, 0)
    register(args.data_dir, DATA_NAME)
    gt = json.loads((args.data_dir / "val.json").read_text())

    result = {"rows": []}
    if args.out.is_file() and not args.quick:
        result = json.loads(args.out.read_text())
    done = {(r["variant"], r["seed"]) for r in result["rows"]}
    result.update(
        {
            "benchmark": "thin_objects",
            "device": device_description(args.device),
            "threads": args.threads,
            "quick": args.quick,
            "spec": {**spec.as_dict(), "seed": None},
            "data": {
                "generator": "python -m benchmarks.thin.data",
                "train_images": args.num_train,
                "val_images": args.num_val,
                "seed": 0,
                "statistics": dataset_statistics(gt),
            },
            "environment": environment(),
        }
    )
    if args.timing:
        trained = [v for v in args.variants if (v, args.seeds[0]) in done]
        timing = result.setdefault("timing", {})
        for variant in trained:
            first = replace(spec, seed=args.seeds[0])
            timing[variant] = time_one(variant, first, args)
            print(f"thin_objects: timed {variant}: {timing[variant]}", flush=True)
            write_json(args.out, result)
        return
    primary = [v for v in args.variants if v in PRIMARY]
    secondary = [v for v in args.variants if v not in PRIMARY]
    plan = [(v, s) for s in args.seeds for v in primary]
    plan += [(v, s) for s in args.seeds for v in secondary]
    for variant, seed in plan:
        if (variant, seed) in done:
            continue
        load = load_average()
        rows = run_one(variant, replace(spec, seed=seed), args, gt)
        result["rows"] += [{**row, "load_average_before": load} for row in rows]
        write_json(args.out, result)
    print(f"thin_objects: wrote {args.out}")


if __name__ == "__main__":
    main()
