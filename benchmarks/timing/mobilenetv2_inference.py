"""CPU inference of RetinaMask MobileNetV2-FPN against RetinaMask R-50-FPN at COCO scale (800x1333).

    python -m benchmarks.timing.mobilenetv2_inference --threads 1 --repeats 5

Both COCO configs (configs/retinamask_MNV2_FPN.yaml, configs/retinamask_R50_FPN.yaml) with random
weights, in one process, taking turns image by image so that load from elsewhere slows both
alike. The classification layer is zeroed in both (every anchor scores 0.5, as a trained model's
crowded image would), so that both return 100 detections and compute the paper's 50 masks: the
same post-processing and mask work, the backbones make the difference. Writes
``benchmarks/results/mobilenetv2_inference_cpu.json``: median ms of each, their ratio, the load
average. Each model's bottom-up network is also timed alone on the same image (after the
whole model, same turn): the part the backbone choice changes. A third model, MobileNetV2 with
the FPN and heads at 128 channels (configs/retinamask_MNV2_FPN_128.yaml), shows the share of the
parts the first two share.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from statistics import median

import torch

from benchmarks.harness import RESULTS_DIR, environment, load_average, write_json

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
CONFIGS = {
    "retinamask_MNV2_FPN": ROOT / "configs" / "retinamask_MNV2_FPN.yaml",
    "retinamask_R50_FPN": ROOT / "configs" / "retinamask_R50_FPN.yaml",
    # FPN and heads at 128 channels: how much of the time the 256-channel parts take
    "retinamask_MNV2_FPN_128": ROOT / "configs" / "retinamask_MNV2_FPN_128.yaml",
}


def build(path: Path) -> torch.nn.Module:
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from retinamask_d2 import add_retinamask_config

    cfg = get_cfg()
    add_retinamask_config(cfg)
    cfg.merge_from_file(str(path))
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.head.cls_score.weight.zero_()
        model.head.cls_score.bias.zero_()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "mobilenetv2_inference_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = {name: build(path) for name, path in CONFIGS.items()}
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 800, 1333), generator=g, dtype=torch.uint8).float()
    times: dict[str, list[float]] = {name: [] for name in models}
    bottom_up: dict[str, list[float]] = {name: [] for name in models}
    detections = {}
    load_at_start = load_average()
    with torch.no_grad():
        for repeat in range(args.repeats + 1):  # the first round warms up, untimed
            for name, model in models.items():
                start = time.perf_counter()
                (out,) = model([{"image": image, "height": 800, "width": 1333}])
                elapsed = time.perf_counter() - start
                start = time.perf_counter()
                model.backbone.bottom_up((image[None] - model.pixel_mean) / model.pixel_std)
                if repeat:
                    times[name].append(elapsed)
                    bottom_up[name].append(time.perf_counter() - start)
                instances = out["instances"]
                detections[name] = {
                    "detections": len(instances),
                    "masks": int(instances.pred_masks.flatten(1).any(1).sum()),
                }
    ms = {name: round(median(t) * 1000, 1) for name, t in times.items()}
    result = {
        "benchmark": "mobilenetv2_inference",
        "image_size": [800, 1333],
        "threads": args.threads,
        "repeats": args.repeats,
        "median_ms": ms,
        "bottom_up_median_ms": {n: round(median(t) * 1000, 1) for n, t in bottom_up.items()},
        "all_ms": {name: [round(x * 1000, 1) for x in t] for name, t in times.items()},
        "ratio_mnv2_to_r50": round(ms["retinamask_MNV2_FPN"] / ms["retinamask_R50_FPN"], 3),
        "ratio_mnv2_128_to_r50": round(ms["retinamask_MNV2_FPN_128"] / ms["retinamask_R50_FPN"], 3),
        "outputs": detections,
        "load_average_at_start": load_at_start,
        "load_average_at_end": load_average(),
        "environment": environment(),
    }
    write_json(args.out, result)
    print(f"{args.out}: {ms} ms, ratio {result['ratio_mnv2_to_r50']}")


if __name__ == "__main__":
    main()
