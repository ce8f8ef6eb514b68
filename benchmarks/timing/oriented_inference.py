"""What oriented mask RoIs cost at inference against box mask RoIs, on the CPU.

    python -m benchmarks.thin.oriented --seeds 0        # the trained models of the first part
    python -m benchmarks.timing.oriented_inference --threads 1

Two parts, each a ratio of rows measured in turn (the fastest of ``--repeats`` calls per image or
round, so that load from elsewhere slows both alike):

* ``thin``: the thin benchmark's trained RetinaMask models of ``--seed`` (box and oriented mask
  RoIs, MobileNetV2-FPN, 192-224 px) through ``RetinaMaskPredictor`` at the demo's threshold
  (``--threshold``) on the validation images, image by image; the median over the images.
* ``coco``: the R-50-FPN default (``configs/retinamask_R50_FPN.yaml``) on an 800x1333 image with
  random weights, box regressors zeroed and 5000 class scores passing the test threshold (as
  ``benchmarks.timing.inference_cost``'s headline rows), its top ``K`` detections masked with box
  and with oriented RoIs, for each ``K`` of ``--masks`` (a demo image keeps a handful at 0.5).

Writes ``benchmarks/results/oriented_inference_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path
from statistics import median

import torch

from benchmarks.harness import (
    RESULTS_DIR,
    device_description,
    environment,
    load_average,
    set_threads,
    time_calls,
    write_json,
)

MODES = ("box", "oriented")


def _fastest(call, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls (harness.time_calls, no warm-up)."""
    return min(time_calls(call, "cpu", 0, repeats))


def thin_part(args) -> dict:
    """ms per image of the two trained thin-benchmark models at ``args.threshold``."""
    from benchmarks.thin.oriented import DATA_NAME, SPEC, build_cfg
    from benchmarks.training import register
    from retinamask_d2.data.image_io import read_image
    from retinamask_d2.predictor import RetinaMaskPredictor

    register(args.data_dir, DATA_NAME)
    predictors = {}
    for mode in MODES:
        run_dir = args.work_dir / f"seed{args.seed}" / f"retinamask_{mode}"
        cfg = build_cfg(f"retinamask_{mode}", SPEC, args.data_dir, run_dir, "cpu")
        cfg.MODEL.WEIGHTS = str(run_dir / "model_final.pth")
        predictors[mode] = RetinaMaskPredictor(cfg, confidence_threshold=args.threshold)
    images = json.loads((args.data_dir / "val.json").read_text())["images"]
    seconds: dict[str, list[float]] = {m: [] for m in MODES}
    kept: dict[str, list[int]] = {m: [] for m in MODES}
    for image in images:
        rgb = read_image(str(args.data_dir / "val" / image["file_name"]), format="RGB")
        for mode, predictor in predictors.items():
            kept[mode].append(len(predictor.predict(rgb, format="RGB")))
            seconds[mode].append(
                _fastest(partial(predictor.predict, rgb, format="RGB"), args.repeats)
            )
    rows = {
        m: {"ms_per_image": 1000 * median(seconds[m]), "median_detections": median(kept[m])}
        for m in MODES
    }
    return {
        "models": str(args.work_dir / f"seed{args.seed}"),
        "threshold": args.threshold,
        "images": len(images),
        "rows": rows,
        "oriented_over_box": rows["oriented"]["ms_per_image"] / rows["box"]["ms_per_image"],
    }


def coco_part(args) -> dict:
    """ms per 800x1333 image of the R-50-FPN default with box and oriented RoIs, per mask count."""
    from detectron2.modeling import build_model

    from benchmarks.timing.coco_configs import (
        coco_scale_cfg,
        coco_scale_model_and_input,
        set_score_candidates,
    )
    from benchmarks.timing.inference_cost import TRAINED_LIKE

    box_model, inputs = coco_scale_model_and_input("retinamask_p2", "cpu", 800, 1333)
    cfg = coco_scale_cfg("retinamask_p2", "cpu")
    cfg.MODEL.RETINAMASK.MASK_ROI = "oriented"
    torch.manual_seed(0)
    oriented_model = build_model(cfg).eval()
    # The same weights where both have them (the frame head is the oriented model's own).
    missing = oriented_model.load_state_dict(box_model.state_dict(), strict=False)
    models = {"box": box_model, "oriented": oriented_model}
    passing = {m: set_score_candidates(model, inputs, TRAINED_LIKE) for m, model in models.items()}
    result = {"image": [800, 1333], "candidates": passing, "frame_head_only": missing.missing_keys}
    for count in args.masks:
        best = {m: float("inf") for m in MODES}
        for model in models.values():
            model.test_topk_masks = count
        with torch.no_grad():
            for model in models.values():
                model(inputs)  # warm-up
            for _ in range(args.rounds):
                for mode, model in models.items():
                    best[mode] = min(best[mode], _fastest(partial(model, inputs), 1))
        result[str(count)] = {
            **{f"{m}_ms": 1000 * best[m] for m in MODES},
            "oriented_over_box": best["oriented"] / best["box"],
        }
        print(f"oriented_inference: coco {count} masks: {result[str(count)]}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--masks", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parts", nargs="+", default=["thin", "coco"], choices=["thin", "coco"])
    parser.add_argument("--data-dir", type=Path, default=Path("datasets/thin_readable"))
    parser.add_argument("--work-dir", type=Path, default=Path("output/benchmarks/thin_oriented"))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "oriented_inference_cpu.json")
    args = parser.parse_args()
    set_threads(args.threads)
    result = {
        "benchmark": "oriented_inference",
        "device": device_description("cpu"),
        "threads": args.threads,
        "load_average_before": load_average(),
        "environment": environment(),
    }
    if "thin" in args.parts:
        result["thin"] = thin_part(args)
        print(f"oriented_inference: thin {result['thin']['rows']}", flush=True)
    if "coco" in args.parts:
        result["coco"] = coco_part(args)
    result["load_average_after"] = load_average()
    write_json(args.out, result)
    print(f"oriented_inference: wrote {args.out}")


if __name__ == "__main__":
    main()
