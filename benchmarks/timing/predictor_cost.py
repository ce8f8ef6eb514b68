"""What a user's call costs: ``RetinaMaskPredictor`` on the synthetic validation images with a
trained model, at a confidence threshold, against the same model without masks; and the AP of
inference in bf16 against fp32.

    make quickstart                        # trains output/quickstart/model_final.pth
    python -m benchmarks.timing.predictor_cost --threads 2

Rows, each a predictor on the same images, taking turns image by image (the fastest of
``--repeats`` calls per image, the median over the images):

* ``retinamask@T``: the predictor at ``--threshold`` T, as the demo runs it (masks only for the
  detections it keeps);
* ``boxes_only@T``: the same weights with ``TEST_TOPK_MASKS`` 0, i.e. RetinaNet's work: the box
  branch is detectron2's RetinaNet, so this is what RetinaNet costs with these detections;
* ``retinamask_all``: no threshold: the top-50 masks of the COCO evaluation, all detections.

It also counts the class scores of each image that pass the 0.05 test threshold (what a
trained model passes, for the COCO-scale benchmark's candidate counts). The AP part evaluates
the model on the validation split with COCOEvaluator in fp32 and under bf16 autocast, and
their wall time per image.
Writes ``benchmarks/results/predictor_cost.json``.
"""

import argparse
import time
from pathlib import Path
from statistics import median

import torch
from detectron2.data import DatasetCatalog

import retinamask_d2.data  # noqa: F401  (registers the synthetic splits)
from benchmarks.harness import (
    RESULTS_DIR,
    device_description,
    environment,
    load_average,
    set_threads,
    write_json,
)
from retinamask_d2.data.image_io import read_image
from retinamask_d2.predictor import RetinaMaskPredictor, load_config

QUICKSTART = Path("output/quickstart")


def evaluate(cfg, precision: str) -> dict:
    """COCO box and mask AP of ``cfg``'s model on ``cfg.DATASETS.TEST[0]`` in ``precision``."""
    from detectron2.data import build_detection_test_loader
    from detectron2.evaluation import COCOEvaluator, inference_on_dataset

    from retinamask_d2.predictor import autocast_context

    predictor = RetinaMaskPredictor(cfg)
    autocast = autocast_context(cfg.MODEL.DEVICE, precision)

    class Autocast(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, inputs):
            with autocast():
                return self.model(inputs)

    dataset = cfg.DATASETS.TEST[0]
    evaluator = COCOEvaluator(dataset, tasks=("bbox", "segm"), use_fast_impl=False)
    loader = build_detection_test_loader(cfg, dataset)
    start = time.perf_counter()
    results = inference_on_dataset(Autocast(predictor.model), loader, evaluator)
    seconds = time.perf_counter() - start
    ap = {task: {"AP": results[task]["AP"], "AP50": results[task]["AP50"]} for task in results}
    return {**ap, "s_per_image_with_evaluation": seconds / len(loader.dataset)}


def score_candidates(predictor: RetinaMaskPredictor, images: list) -> dict:
    """How many (anchor, class) scores of each image pass the model's test score threshold (the
    candidates RetinaNet's decoding sorts), and out of how many."""
    model = predictor.model
    passing, totals = [], []
    with torch.no_grad():
        for image in images:
            inputs = [predictor._model_input(image, "BGR", 0)]
            features = model.backbone(model.preprocess_image(inputs).tensor)
            logits = model.head([features[f] for f in model.head_in_features])[0]
            passing.append(int(sum((x.sigmoid() > model.test_score_thresh).sum() for x in logits)))
            totals.append(sum(x.numel() for x in logits))
    return {
        "threshold": model.test_score_thresh,
        "median_per_image": median(passing),
        "max_per_image": max(passing),
        "scores_per_image": median(totals),
        "fraction": median(p / t for p, t in zip(passing, totals)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=QUICKSTART / "config.yaml")
    parser.add_argument("--weights", type=Path, default=QUICKSTART / "model_final.pth")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=30, help="validation images timed")
    parser.add_argument("--repeats", type=int, default=3, help="calls per image and row")
    parser.add_argument("--skip-ap", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "predictor_cost.json")
    args = parser.parse_args()
    set_threads(args.threads)
    start, load_before = time.perf_counter(), load_average()
    cfg = load_config(args.config, args.weights, ["MODEL.DEVICE", "cpu"])
    boxes_only = cfg.clone()
    boxes_only.MODEL.RETINAMASK.TEST_TOPK_MASKS = 0
    t = args.threshold
    predictors = {
        f"retinamask@{t:g}": RetinaMaskPredictor(cfg, confidence_threshold=t),
        f"boxes_only@{t:g}": RetinaMaskPredictor(boxes_only, confidence_threshold=t),
        "retinamask_all": RetinaMaskPredictor(cfg),
    }
    files = [d["file_name"] for d in DatasetCatalog.get(cfg.DATASETS.TEST[0])][: args.images]
    images = [read_image(f, "BGR") for f in files]
    seconds: dict = {name: [] for name in predictors}
    kept: dict = {name: [] for name in predictors}
    for image in [images[0], *images]:  # the first image once more, untimed: warm-up
        for name, predictor in predictors.items():  # taking turns
            calls = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                instances = predictor.predict(image)
                calls.append(time.perf_counter() - t0)
            seconds[name].append(min(calls))
            kept[name].append(len(instances))
    rows = [
        {
            "name": name,
            "median_ms": median(s[1:]) * 1000,
            "mean_instances": sum(kept[name][1:]) / len(images),
            "images": len(images),
        }
        for name, s in seconds.items()
    ]
    by = {r["name"]: r["median_ms"] for r in rows}
    result = {
        "benchmark": "predictor_cost",
        "model": str(args.weights),
        "device": device_description("cpu"),
        "threads": args.threads,
        "threshold": t,
        "repeats": args.repeats,
        "statistic": "median over images of the fastest call per image, ms",
        "load_average_before": load_before,
        "rows": rows,
        "ratios": {
            "retinamask_over_boxes_only": by[f"retinamask@{t:g}"] / by[f"boxes_only@{t:g}"],
            "all_masks_over_boxes_only": by["retinamask_all"] / by[f"boxes_only@{t:g}"],
        },
    }
    result["score_candidates"] = score_candidates(predictors["retinamask_all"], images)
    if not args.skip_ap:
        result["ap"] = {p: evaluate(cfg, p) for p in ("fp32", "bf16")}
    result.update(
        load_average_after=load_average(),
        environment=environment(),
        wall_s=time.perf_counter() - start,
    )
    write_json(args.out, result)
    print(f"predictor_cost: {result['ratios']}; wrote {args.out}")


if __name__ == "__main__":
    main()
