"""Where a model's time goes: torch.profiler's operators and cProfile's Python functions.

    python -m benchmarks.timing.profile_model --model retinamask --mode train   # synthetic spec
    python -m benchmarks.timing.profile_model --model retinamask --mode infer --scale coco
    python -m benchmarks.timing.profile_model --model retinamask --weights \
        output/benchmarks/accuracy/seed0/retinamask/model_final.pth  # after compare_models

Profiles ``--steps`` training steps (forward + backward + SGD) on batches of the synthetic
training set, or inference calls on one image (a synthetic validation image, or the random
800x1333 image of ``inference_cost``), after one untimed warm-up, and prints two tables: the
operators with the most self time, and the Python functions (detectron2's and ours) with the
most cumulative time, which tells which part of the model runs them. ``--out`` also saves them.
"""

import argparse
import cProfile
import io
import pstats
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.harness import set_threads

MODELS = ("retinamask", "retinanet", "mask_rcnn")


def synthetic_model_and_inputs(model_name: str, mode: str, data_dir: Path, weights: str):
    """The accuracy benchmark's model (random init, or ``weights``: a trained model computes
    more RoIs than a random one) and a training batch or a test image."""
    from detectron2.data import build_detection_test_loader

    from benchmarks.training import ACCURACY_DATA, accuracy_model
    from retinamask_d2.data.train_loader import build_resumable_train_loader

    output = Path("output/benchmarks/profile")
    model, cfg = accuracy_model(model_name, data_dir, output, weights=weights)
    if mode == "train":
        return model, next(iter(build_resumable_train_loader(cfg)))
    loader = build_detection_test_loader(cfg, f"{ACCURACY_DATA}_val")
    return model.eval(), next(iter(loader))


def coco_model_and_inputs(model_name: str, mode: str):
    """The COCO-scale timing model (random weights) and its random 800x1333 image."""
    from benchmarks.timing.coco_configs import coco_scale_model_and_input

    if mode != "infer":
        raise ValueError("--scale coco profiles inference only (random weights, no data)")
    return coco_scale_model_and_input(model_name, "cpu", 800, 1333)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="retinamask")
    parser.add_argument("--mode", choices=("train", "infer"), default="train")
    parser.add_argument("--scale", choices=("synthetic", "coco"), default="synthetic")
    parser.add_argument("--data-dir", type=Path, default=Path("datasets/benchmark_synthetic"))
    parser.add_argument("--weights", default="", help="synthetic scale: a checkpoint to load")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=25, help="rows per table")
    parser.add_argument("--out", type=Path, help="also write the tables to this file")
    args = parser.parse_args()
    set_threads(args.threads)
    if args.scale == "coco":
        model, inputs = coco_model_and_inputs(args.model, args.mode)
    else:
        model, inputs = synthetic_model_and_inputs(
            args.model, args.mode, args.data_dir, args.weights
        )

    if args.mode == "train":
        from detectron2.utils.events import EventStorage

        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        storage = EventStorage(0)

        def step() -> None:
            with storage:
                loss = sum(model(inputs).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    else:

        def step() -> None:
            with torch.no_grad():
                model(inputs)

    step()  # warm-up
    python_profile = cProfile.Profile()
    with profile(activities=[ProfilerActivity.CPU]) as torch_profile:
        python_profile.enable()
        for _ in range(args.steps):
            step()
        python_profile.disable()

    title = f"{args.model}, {args.mode}, {args.scale} scale, {args.steps} steps, "
    title += f"{args.threads} thread(s), weights: {args.weights or 'random'}"
    operators = torch_profile.key_averages().table(
        sort_by="self_cpu_time_total", row_limit=args.top
    )
    functions = io.StringIO()
    stats = pstats.Stats(python_profile, stream=functions).sort_stats("cumulative")
    stats.print_stats(r"detectron2|retinamask_d2|torchvision", args.top)
    text = f"# {title}\n\n## operators by self time\n{operators}\n## functions by cumulative time\n"
    text += functions.getvalue()
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
