"""Inference cost of the mask branch at COCO scale: R50-FPN, 800x1333 input, random weights.

Times RetinaMask, detectron2's RetinaNet and detectron2's Mask R-CNN on the same image with the
same thread count (and RetinaMask with masks from P2-P5, what that option costs), and RetinaMask
for each number of masked detections
(``MODEL.RETINAMASK.TEST_TOPK_MASKS``); the number of masks actually computed is counted at the
mask head. Each variant runs in its own process; their timed calls take turns. The number
reported is the fastest call (as ``timeit`` does): on a shared machine, other processes only ever
add time, so the minimum is the best estimate of what the model itself costs; the median is kept
alongside.

    python benchmarks/inference_cost.py --device cpu --threads 2
    python benchmarks/inference_cost.py --device cuda   # the same table on a GPU

Writes ``benchmarks/results/inference_cost_<cpu|cuda>.json``.
"""

import argparse
import time
from pathlib import Path
from typing import TextIO

import torch
from harness import (
    RESULTS_DIR,
    Worker,
    claim_stdout,
    count_mask_rois,
    device_description,
    environment,
    interleave,
    load_average,
    peak_memory_mb,
    serve,
    set_threads,
    summarize_ms,
    synchronize,
    write_json,
)

MASK_COUNTS = (0, 10, 50, 100)
DEFAULT_MASKS = 50  # RetinaMask's TEST_TOPK_MASKS in Base-RetinaMask.yaml


def serve_model(
    model_name: str, topk_masks: int | None, device: str, size: tuple[int, int], replies: TextIO
):
    """Worker: build the model with random weights, then time one call per ``time`` command."""
    from coco_configs import coco_scale_model_and_input

    height, width = size
    model, inputs = coco_scale_model_and_input(model_name, device, height, width, topk_masks)
    last: dict = {}

    def time_one() -> dict:
        synchronize(device)
        start = time.perf_counter()
        with torch.no_grad(), count_mask_rois(model) as mask_counts:
            last["instances"] = model(inputs)[0]["instances"]
        synchronize(device)
        last["masked"] = mask_counts[-1] if mask_counts else 0
        return {"seconds": time.perf_counter() - start}

    def finish() -> dict:
        instances = last["instances"]
        return {
            "detections": len(instances),
            "masked": last["masked"],
            "mean_box_area_frac": float(instances.pred_boxes.area().mean()) / (height * width),
            **peak_memory_mb(device),
        }

    serve({"ready": lambda: {"built": True}, "time": time_one, "finish": finish}, replies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads, same for all")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per model")
    parser.add_argument("--iters", type=int, default=8, help="timed calls per model")
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1333), metavar=("H", "W"))
    parser.add_argument("--mask-counts", type=int, nargs="+", default=MASK_COUNTS)
    parser.add_argument("--out", type=Path, help="JSON path (default results/inference_cost_<dev>)")
    parser.add_argument("--work-dir", type=Path, default=Path("output/benchmarks"), help="logs")
    parser.add_argument("--quick", action="store_true", help="a small image, 1 call: seconds")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--topk-masks", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.iters, args.size, args.mask_counts = 0, 1, (160, 224), (0, DEFAULT_MASKS)
    if args.iters < 1:
        parser.error("--iters must be >= 1")
    set_threads(args.threads)
    if args.serve:
        replies = claim_stdout()
        serve_model(args.model, args.topk_masks, args.device, tuple(args.size), replies)
        return

    start = time.perf_counter()
    load_before = load_average()
    common = ["--device", args.device, "--threads", str(args.threads)]
    common += ["--size", *map(str, args.size)]
    # RetinaMask's default (TEST_TOPK_MASKS 50) is also a point of the sweep.
    variants = {"retinanet": [], "mask_rcnn": [], "retinamask_p2": []}
    for k in sorted(set(args.mask_counts) | {DEFAULT_MASKS}):
        variants[f"retinamask@{k}"] = ["--topk-masks", str(k)]
    script = Path(__file__).resolve()
    workers = []
    try:
        for name, extra in variants.items():
            model = name.split("@")[0]
            log = args.work_dir / "logs" / f"inference_cost_{name}.log"
            workers.append(Worker(name, script, [*common, "--model", model, *extra], log))
        for worker in workers:
            worker.ask("ready")
        print(f"inference_cost: {len(workers)} models built; timing", flush=True)
        interleave(workers, "time", args.warmup)
        timed = interleave(workers, "time", args.iters)
        rows = {}
        for worker in workers:
            seconds = [reply["seconds"] for reply in timed[worker.name]]
            rows[worker.name] = {"name": worker.name, **summarize_ms(seconds), **worker.finish()}
    finally:
        for worker in workers:
            worker.kill()

    default = rows[f"retinamask@{DEFAULT_MASKS}"]
    models = [
        {**default, "model": "retinamask", "topk_masks": DEFAULT_MASKS},
        {**rows["retinanet"], "model": "retinanet", "topk_masks": None},
        {**rows["mask_rcnn"], "model": "mask_rcnn", "topk_masks": None},
        {**rows["retinamask_p2"], "model": "retinamask_p2", "topk_masks": DEFAULT_MASKS},
    ]
    sweep = [
        {**rows[f"retinamask@{k}"], "model": "retinamask", "topk_masks": k}
        for k in args.mask_counts
    ]
    result = {
        "benchmark": "inference_cost",
        "device": device_description(args.device),
        "device_kind": args.device.split(":")[0],
        "threads": args.threads,
        "image_size": list(args.size),
        "weights": "random (box regressors zeroed, see coco_configs.zero_box_regressors)",
        "warmup": args.warmup,
        "iters": args.iters,
        "statistic": "min_ms",
        "quick": args.quick,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "environment": environment(),
        "models": models,
        "mask_count_sweep": sweep,
        "ratios": {
            "retinamask_over_retinanet": default["min_ms"] / rows["retinanet"]["min_ms"],
            "retinamask_over_mask_rcnn": default["min_ms"] / rows["mask_rcnn"]["min_ms"],
        },
        "wall_s": time.perf_counter() - start,
    }
    out = args.out or RESULTS_DIR / f"inference_cost_{result['device_kind']}.json"
    write_json(out, result)
    print(f"inference_cost: wrote {out} in {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
