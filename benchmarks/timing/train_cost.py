"""Training cost side by side: RetinaMask, detectron2's RetinaNet and Mask R-CNN, s/iter and memory.

    python -m benchmarks.timing.train_cost --scale synthetic --threads 2  # accuracy setting
    python -m benchmarks.timing.train_cost --scale coco --device cuda --amp both  # R50-FPN 800x1333

All models live in one process and take turns step by step on the same batches, so load that
comes and goes slows them alike; the ratios are the result. ``synthetic``: the accuracy
benchmark's models (``synthetic_configs``) on its training batches. ``coco``: the R50-FPN
configs of ``coco_configs`` (batch 2 of random 800x1333 images, 4 random boxes with masks
each). The learning rate is 0, so that the weights, hence the work of every step (detections,
RoIs), stay those of the initialisation; the SGD update still runs. ``--amp`` also times the
steps under autocast (fp16 with a gradient scaler on a GPU, bf16 on the CPU). Writes
``benchmarks/results/train_cost_<scale>_<device>.json``.
"""

import argparse
import time
from pathlib import Path
from statistics import median

import torch

from benchmarks.harness import (
    RESULTS_DIR,
    device_description,
    environment,
    load_average,
    set_threads,
    synchronize,
    write_json,
)

MODELS = ("retinamask", "retinanet", "mask_rcnn")


def synthetic_models_and_batches(
    models: list[str], device: str, data_dir: Path, count: int, weights: str = "", opts=()
) -> tuple[dict, list]:
    """The accuracy benchmark's models and ``count`` of its training batches.

    The models start from random weights, or from the checkpoint ``weights`` where its names
    and shapes fit (detectron2's checkpointer skips the rest): a trained RetinaMask finds more
    objects, so its mask branch trains on more RoIs than a random one. ``opts`` (KEY VALUE ...)
    change RetinaMask's config.
    """
    from benchmarks.training import accuracy_model
    from retinamask_d2.data.train_loader import build_resumable_train_loader

    built, loader = {}, None
    for name in models:
        output = Path("output/benchmarks/train_cost")
        changes = opts if name == "retinamask" else ()
        model, cfg = accuracy_model(name, data_dir, output, device, weights, changes)
        built[name] = model.train()
        if loader is None:
            loader = iter(build_resumable_train_loader(cfg))
    return built, [next(loader) for _ in range(count)]


def coco_models_and_batches(models: list[str], device: str, count: int, size=(800, 1333)):
    """The COCO-scale R50-FPN models (random init) and ``count`` random batches of 2 images."""
    from detectron2.modeling import build_model
    from detectron2.structures import BitMasks, Boxes, Instances

    from benchmarks.timing.coco_configs import coco_scale_cfg

    built = {}
    for name in models:
        torch.manual_seed(0)
        built[name] = build_model(coco_scale_cfg(name, device)).train()
    g = torch.Generator().manual_seed(0)
    height, width = size
    batches = []
    for _ in range(count):
        batch = []
        for _ in range(2):
            xy = torch.rand(4, 2, generator=g) * torch.tensor([width * 0.6, height * 0.6])
            wh = 64 + torch.rand(4, 2, generator=g) * torch.tensor([width * 0.35, height * 0.35])
            boxes = torch.cat([xy, xy + wh], dim=1).round()
            masks = torch.zeros(4, height, width, dtype=torch.bool)
            for m, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
                m[y0:y1, x0:x1] = True
            instances = Instances(size)
            instances.gt_boxes = Boxes(boxes)
            instances.gt_classes = torch.randint(0, 80, (4,), generator=g)
            instances.gt_masks = BitMasks(masks)
            image = torch.randint(0, 256, (3, height, width), generator=g, dtype=torch.uint8)
            batch.append({"image": image, "instances": instances})
        batches.append(batch)
    return built, batches


def step_fn(model: torch.nn.Module, device: str, amp: bool):
    """One training step of ``model`` (forward, backward, SGD with lr 0), in AMP if asked, and
    the ``EventStorage`` its scalars go to."""
    from detectron2.utils.events import EventStorage

    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    device_type = torch.device(device).type
    dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device_type, enabled=amp and dtype == torch.float16)
    storage = EventStorage(0)

    def step(batch) -> None:
        with storage, torch.autocast(device_type, dtype=dtype, enabled=amp):
            losses = sum(model(batch).values())
        optimizer.zero_grad()
        scaler.scale(losses).backward()
        scaler.step(optimizer)
        scaler.update()

    return step, storage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=("synthetic", "coco"), default="synthetic")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model")
    parser.add_argument("--iters", type=int, default=20, help="timed steps per model")
    parser.add_argument("--amp", choices=("off", "on", "both"), default="off")
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1333), metavar=("H", "W"))
    parser.add_argument("--data-dir", type=Path, default=Path("datasets/benchmark_synthetic"))
    parser.add_argument("--weights", default="", help="synthetic: a checkpoint to start from")
    parser.add_argument("--opts", nargs="+", default=[], help="synthetic: RetinaMask KEY VALUE")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    set_threads(args.threads)
    start, load_before = time.perf_counter(), load_average()
    count = args.warmup + args.iters
    if args.scale == "synthetic":
        models, batches = synthetic_models_and_batches(
            args.models, args.device, args.data_dir, count, args.weights, args.opts
        )
    else:
        models, batches = coco_models_and_batches(args.models, args.device, count, args.size)
    amp_modes = {"off": [False], "on": [True], "both": [False, True]}[args.amp]
    runs = [(name, amp) for amp in amp_modes for name in args.models]
    steps, storages = {}, {}
    for run in runs:
        steps[run], storages[run] = step_fn(models[run[0]], args.device, run[1])
    seconds: dict = {run: [] for run in runs}
    peak_gpu: dict = {run: 0.0 for run in runs}
    cuda = args.device.startswith("cuda")
    for i, batch in enumerate(batches):
        for run in runs:  # taking turns, step by step
            if cuda:
                torch.cuda.reset_peak_memory_stats(args.device)
            synchronize(args.device)
            t0 = time.perf_counter()
            steps[run](batch)
            synchronize(args.device)
            if i >= args.warmup:
                seconds[run].append(time.perf_counter() - t0)
            if cuda:
                peak = torch.cuda.max_memory_allocated(args.device) / 2**20
                peak_gpu[run] = max(peak_gpu[run], peak)
        print(f"train_cost: step {i + 1}/{count}", flush=True)

    rows = []
    for name, amp in runs:
        row = {
            "model": name,
            "amp": amp,
            "s_per_iter": median(seconds[(name, amp)]),
            "s_per_iter_min": min(seconds[(name, amp)]),
            "steps": len(seconds[(name, amp)]),
        }
        if cuda:
            row["peak_gpu_mb"] = peak_gpu[(name, amp)]
        history = storages[(name, amp)].histories().get("retinamask/num_mask_rois")
        if history is not None:
            row["mask_rois_per_image"] = median(v for v, _ in history.values())
        rows.append(row)
    by = {(r["model"], r["amp"]): r["s_per_iter"] for r in rows}
    ratios = {
        f"{a}_over_{b}{'_amp' if amp else ''}": by[(a, amp)] / by[(b, amp)]
        for amp in amp_modes
        for a, b in (("retinamask", "retinanet"), ("retinamask", "mask_rcnn"))
        if (a, amp) in by and (b, amp) in by
    }
    kind = args.device.split(":")[0]
    result = {
        "benchmark": "train_cost",
        "scale": args.scale,
        "device": device_description(args.device),
        "device_kind": kind,
        "threads": args.threads,
        "image_size": list(args.size) if args.scale == "coco" else None,
        "weights": args.weights or "random",
        "retinamask_opts": args.opts,
        "warmup": args.warmup,
        "iters": args.iters,
        "statistic": "median s/iter",
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "environment": environment(),
        "rows": rows,
        "ratios": ratios,
        "wall_s": time.perf_counter() - start,
    }
    out = args.out or RESULTS_DIR / f"train_cost_{args.scale}_{kind}.json"
    write_json(out, result)
    print(f"train_cost: {ratios}; wrote {out}")


if __name__ == "__main__":
    main()
