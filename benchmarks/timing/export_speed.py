"""Speed of the exported model: eager vs TorchScript vs onnxruntime, ms per image.

Two scales: the quickstart's model (R18-GN, 128x128 input) and COCO's (R50-FPN, 800x1333), both
with random weights set up to return their full 100 detections, 50 of them with masks (the most
post-processing work): the quickstart model's class bias raised to 0 (scores near 0.5); the COCO
model's box regressors zeroed as in ``inference_cost`` and its class logits scaled down so
that its scores do not tie at 1.0. The three runtimes take turns on the
same image, one call each per round, in one process; the number reported is the fastest call
(other load only adds time), the median alongside. Each exported file's detections on that
image are matched with the eager model's (class, score within 1e-4, box within 1e-3 px).

    python -m benchmarks.timing.export_speed --threads 1                # both scales
    python -m benchmarks.timing.export_speed --scales quickstart --rounds 20

Writes ``benchmarks/results/export_speed_cpu.json``; ``benchmarks.report`` turns it into the
generated export table. CPU only: TorchScript files are traced for the CPU, and onnxruntime
runs here with its CPU provider.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import retinamask_d2
from benchmarks.harness import (
    RESULTS_DIR,
    device_description,
    environment,
    load_average,
    set_threads,
    summarize_ms,
    write_json,
)
from retinamask_d2.export import export_onnx, export_torchscript
from retinamask_d2.model_zoo import get_config_file

SCALES = ("quickstart", "coco")
RUNTIMES = ("eager", "torchscript", "onnxruntime")


def quickstart_model_and_image() -> tuple[torch.nn.Module, torch.Tensor]:
    """The quickstart config's model, random weights, class bias 0; a random 128 x 128 image."""
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    retinamask_d2.add_retinamask_config(cfg)
    cfg.merge_from_file(get_config_file("quickstart/retinamask_R18_synthetic.yaml"))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    torch.nn.init.zeros_(model.head.cls_score.bias)
    size = cfg.INPUT.MIN_SIZE_TEST
    return model, _random_image(size, size)


def coco_model_and_image() -> tuple[torch.nn.Module, torch.Tensor]:
    """``coco_configs``' R50-FPN RetinaMask, class bias 0, and an 800 x 1333 random image."""
    from benchmarks.timing.coco_configs import coco_scale_model_and_input

    model, _ = coco_scale_model_and_input("retinamask", "cpu", 800, 1333)
    # Random R50 class logits reach +-60 (std ~14): the top scores all round to 1.0, and which
    # of the tied anchors NMS keeps is arbitrary, so runtimes could not be compared. A tenth of
    # them (std ~1.4) keeps scores apart at the same cost.
    with torch.no_grad():
        model.head.cls_score.weight.mul_(0.1)
        torch.nn.init.zeros_(model.head.cls_score.bias)
    return model, _random_image(800, 1333)


def _random_image(height: int, width: int) -> torch.Tensor:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return torch.from_numpy(pixels)


def runtimes(model, image: torch.Tensor, folder: Path, threads: int) -> dict:
    """A callable per runtime, each returning (boxes, scores, classes, masks) for ``image``."""
    import onnxruntime

    ts_path, onnx_path = folder / "model.ts", folder / "model.onnx"
    export_torchscript(model, image, ts_path)
    export_onnx(model, image, onnx_path)
    traced = torch.jit.load(str(ts_path))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(onnx_path), options, providers=["CPUExecutionProvider"]
    )
    chw = image.permute(2, 0, 1).float()

    def eager():
        instances = model([{"image": chw}])[0]["instances"]
        return instances.pred_boxes.tensor, instances.scores, instances.pred_classes

    return {
        "eager": eager,
        "torchscript": lambda: traced(image),
        "onnxruntime": lambda: session.run(None, {"image": image.numpy()}),
    }


def agreement(outputs, reference) -> dict:
    """How the exported results on the benchmark image compare with the eager ones: how many
    exported detections have an eager one of the same class, score (within 1e-4) and box
    (within 1e-3 px), each eager one used once, and the largest differences among those.
    Matched as a set, not by position: detections of equal scores may come in either order."""
    boxes, scores, classes = (torch.as_tensor(np.asarray(o)) for o in outputs[:3])
    ref_boxes, ref_scores, ref_classes = reference
    unused = set(range(len(ref_boxes)))
    box_diffs, score_diffs = [], []
    for box, score, cls in zip(boxes, scores, classes):
        for j in sorted(unused):
            box_diff = float((ref_boxes[j] - box).abs().max())
            score_diff = abs(float(ref_scores[j] - score))
            if int(ref_classes[j]) == int(cls) and box_diff <= 1e-3 and score_diff <= 1e-4:
                unused.remove(j)
                box_diffs.append(box_diff)
                score_diffs.append(score_diff)
                break
    return {
        "detections": len(boxes),
        "masks": len(outputs[3]),
        "matched_eager": len(box_diffs),
        "max_box_diff_px": max(box_diffs, default=None),
        "max_score_diff": max(score_diffs, default=None),
    }


def measure(scale: str, rounds: int, threads: int) -> dict:
    model, image = quickstart_model_and_image() if scale == "quickstart" else coco_model_and_image()
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        start = time.perf_counter()
        calls = runtimes(model, image, Path(folder), threads)
        export_seconds = time.perf_counter() - start
        results = {name: call() for name, call in calls.items()}  # also the warm-up call
        seconds = {name: [] for name in calls}
        for _ in range(rounds):
            for name, call in calls.items():
                begin = time.perf_counter()
                call()
                seconds[name].append(time.perf_counter() - begin)
    row = {
        "scale": scale,
        "model": "R18-GN-FPN (quickstart)" if scale == "quickstart" else "R50-FPN",
        "input": list(image.shape[:2]),
        "export_seconds": export_seconds,
        "eager_detections": len(results["eager"][0]),
        # Detections whose score equals another's: their order, and which of them NMS keeps,
        # may differ between runtimes.
        "eager_tied_scores": len(results["eager"][1]) - len(results["eager"][1].unique()),
    }
    for name in RUNTIMES:
        timing = summarize_ms(seconds[name])
        row[name] = {"ms": timing["min_ms"], **timing}
        if name != "eager":
            row[name].update(agreement(results[name], results["eager"]))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", nargs="+", choices=SCALES, default=list(SCALES))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads, same for all")
    parser.add_argument("--rounds", type=int, default=None, help="timed calls per runtime")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "export_speed_cpu.json")
    args = parser.parse_args()
    set_threads(args.threads)
    import onnxruntime

    # Rows of scales not measured now are kept, so that the scales can be run one at a time.
    previous = json.loads(args.output.read_text()) if args.output.is_file() else {"rows": []}
    rows = [r for r in previous["rows"] if r["scale"] not in args.scales]
    for scale in args.scales:
        rounds = args.rounds or (50 if scale == "quickstart" else 3)
        rows.append(measure(scale, rounds, args.threads))
        print(rows[-1])
    write_json(
        args.output,
        {
            "device": device_description("cpu"),
            "threads": args.threads,
            "onnxruntime": onnxruntime.__version__,
            "load_average": load_average(),
            "environment": environment(),
            "rows": sorted(rows, key=lambda r: SCALES.index(r["scale"])),
        },
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
