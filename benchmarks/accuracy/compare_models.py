"""Train and evaluate RetinaMask, detectron2's RetinaNet and detectron2's Mask R-CNN side by side.

Same synthetic data, backbone, input size, schedule and seed for all (see
``synthetic_configs.SharedSpec``), plus RetinaMask with its mask loss off, which isolates what the
mask loss does to box AP. Each model trains in its own process with the benchmarks' driver
(``benchmarks.training``), the processes taking turns every few iterations so that the
machine's other load slows all of them alike. Then each is evaluated (COCO box and mask AP),
timed on the same validation images (one image per call, the fastest of ``--repeats`` calls per
image, the median over images) with the same thread count, and its peak memory is read.

    python -m benchmarks.accuracy.compare_models          # the full benchmark (~25 min, 2 cores)
    python -m benchmarks.accuracy.compare_models --quick  # a few iterations: checks the harness

Writes ``benchmarks/results/accuracy.json``.
"""

import argparse
import json
import threading
import time
from dataclasses import replace
from pathlib import Path
from statistics import fmean, median
from typing import TextIO

import torch
from detectron2.data import MetadataCatalog, build_detection_test_loader
from detectron2.engine import HookBase

from benchmarks.harness import (
    RESULTS_DIR,
    Worker,
    claim_stdout,
    device_description,
    environment,
    interleave,
    load_average,
    peak_memory_mb,
    serve,
    set_threads,
    summarize_ms,
    time_calls,
    write_json,
)
from benchmarks.synthetic_configs import MODELS, SharedSpec
from benchmarks.training import (
    ACCURACY_DATA,
    BenchmarkTrainer,
    benchmark_cfg,
    build_trainer,
    register,
    summary,
)

QUICK_SPEC = SharedSpec(max_iter=4, warmup_iters=2, ims_per_batch=2, image_size=96)
# One synthetic dataset for every seed: the seeds vary the models' initial weights and batches.
DATA_SEED = 0
SEEDS = (0, 1, 2)


def serve_model(
    model_name: str,
    spec: SharedSpec,
    data_dir: Path,
    output_dir: Path,
    turn: int,
    repeats: int,
    device: str,
    replies: TextIO,
):
    """Worker: build the model's trainer, then train, evaluate and time it on command."""
    train_name, val_name = register(data_dir, ACCURACY_DATA)
    cfg = benchmark_cfg(model_name, spec, data_dir, ACCURACY_DATA, output_dir / model_name, device)

    class TakeTurns(HookBase):
        """Pause training every ``turn`` iterations until the driver lets this model go on."""

        def __init__(self):
            self.go, self.paused = threading.Event(), threading.Event()

        def after_step(self):
            done = self.trainer.iter + 1
            if done % turn == 0 and done < self.trainer.max_iter:
                self.paused.set()
                self.go.wait()
                self.go.clear()

    # Appended last: it pauses after IterationTimer has recorded the step's time.
    hook = TakeTurns()
    trainer = build_trainer(cfg, [hook])
    state: dict = {"thread": None, "error": None, "done": False}

    def run_training() -> None:
        try:
            trainer.train()
        except BaseException as e:  # handed to the main thread, which reports it
            state["error"] = e
        state["done"] = True
        hook.paused.set()

    def train_turn() -> dict:
        if state["thread"] is None:
            state["thread"] = threading.Thread(target=run_training, daemon=True)
            state["thread"].start()
        else:
            hook.go.set()
        hook.paused.wait()
        hook.paused.clear()
        if state["error"] is not None:
            raise state["error"]
        return {"iter": trainer.iter + 1, "done": state["done"]}

    def evaluate() -> dict:
        state["thread"].join()
        eval_cfg = cfg.clone()
        eval_cfg.DATASETS.TEST = (val_name,)
        results = BenchmarkTrainer.test(eval_cfg, trainer.model)
        # The ablation's mask head learns nothing: its masks are not a result.
        masks = {} if model_name == "retinamask_no_mask_loss" else results.get("segm", {})
        return {"box": dict(results.get("bbox", {})), "mask": dict(masks), **summary(trainer)}

    model = trainer.model
    inputs = list(build_detection_test_loader(cfg, val_name))
    position = {"next": 0}

    def time_one() -> dict:
        """The fastest of ``repeats`` calls on the next image: other load only adds time."""
        batch = inputs[position["next"] % len(inputs)]
        position["next"] += 1
        model.eval()

        def call() -> None:
            with torch.no_grad():
                model(batch)

        return {"seconds": min(time_calls(call, device, warmup=0, iters=repeats))}

    handlers = {
        "ready": lambda: {"classes": MetadataCatalog.get(train_name).thing_classes},
        "train": train_turn,
        "evaluate": evaluate,
        "time": time_one,
        "finish": lambda: peak_memory_mb(device),
    }
    serve(handlers, replies)


def make_data(data_dir: Path, num_train: int, num_val: int, image_size: int, seed: int) -> None:
    """Write the synthetic splits into ``data_dir`` unless they are there already."""
    from retinamask_d2.data.synthetic import generate, is_generated

    counts = {"train": num_train, "val": num_val}
    if not is_generated(data_dir, counts, image_size, seed):
        print(f"accuracy: writing the synthetic dataset to {data_dir}", flush=True)
        generate(data_dir, counts, image_size, seed)


def train_one_seed(args: argparse.Namespace, spec: SharedSpec) -> tuple[dict[str, dict], float]:
    """Train, evaluate and time every model from ``spec.seed``: per model its row of results
    (under "timed_s" its inference timings in seconds), and the training's wall time."""
    spec_args = ["--spec", json.dumps(spec.as_dict()), "--data-dir", str(args.data_dir)]
    spec_args += ["--work-dir", str(args.work_dir), "--threads", str(args.threads)]
    spec_args += ["--turn", str(args.turn), "--repeats", str(args.repeats)]
    spec_args += ["--device", args.device]
    workers = []
    try:
        for name in MODELS:
            log = args.work_dir / "logs" / f"accuracy_{name}_seed{spec.seed}.log"
            workers.append(
                Worker(
                    name, "benchmarks.accuracy.compare_models", [*spec_args, "--model", name], log
                )
            )
        for worker in workers:
            worker.ask("ready")
        train_start = time.perf_counter()
        active = list(workers)
        while active:
            for worker in list(active):
                reply = worker.ask("train")
                if reply["done"]:
                    active.remove(worker)
            print(f"accuracy: seed {spec.seed}, trained to iteration {reply['iter']}", flush=True)
        train_wall = time.perf_counter() - train_start
        rows = {w.name: {"model": w.name, **w.ask("evaluate")} for w in workers}
        interleave(workers, "time", args.warmup)
        timed = interleave(workers, "time", args.timed_images)
        for worker in workers:
            rows[worker.name]["timed_s"] = [reply["seconds"] for reply in timed[worker.name]]
            rows[worker.name].update(worker.finish())
    finally:
        for worker in workers:
            worker.kill()
    return rows, train_wall


def combine_seeds(seeds: list[int], runs: list[dict[str, dict]]) -> list[dict]:
    """One row per model: each COCO metric averaged over the seeds, the seeds' own APs kept
    under "per_seed"; timings pooled over the seeds (median step, median image); peak memory
    the largest."""
    rows = []
    for name in MODELS:
        per_seed = [run[name] for run in runs]
        row = {"model": name}
        for task in ("box", "mask"):
            metrics = per_seed[0][task].keys()
            # fmean keeps a NaN (a COCO metric with no object of that size) as NaN.
            row[task] = {m: fmean(r[task][m] for r in per_seed) for m in metrics}
        row["per_seed"] = [
            {
                "seed": seed,
                "box_ap": r["box"].get("AP"),
                "mask_ap": r["mask"].get("AP"),
                "train_s_per_iter": r["train_s_per_iter"],
                "final_total_loss": r["final_total_loss"],
            }
            for seed, r in zip(seeds, per_seed)
        ]
        for key in ("train_s_per_iter", "data_s_per_iter", "final_total_loss"):
            row[key] = median(r[key] for r in per_seed)
        row["train_s_per_iter_min"] = min(r["train_s_per_iter_min"] for r in per_seed)
        row["train_steps_timed"] = sum(r["train_steps_timed"] for r in per_seed)
        row["inference"] = summarize_ms([s for r in per_seed for s in r["timed_s"]])
        for key in per_seed[0]:
            if key.startswith("peak_"):
                row[key] = max(r[key] for r in per_seed)
        rows.append(row)
    return rows


def run(args: argparse.Namespace, spec: SharedSpec) -> dict:
    """Train, evaluate and time every model once per seed; the results JSON."""
    start = time.perf_counter()
    load_before = load_average()
    make_data(args.data_dir, args.num_train, args.num_val, args.data_image_size, DATA_SEED)
    runs, train_walls = zip(*(train_one_seed(args, replace(spec, seed=s)) for s in args.seeds))
    return {
        "benchmark": "accuracy",
        "device": device_description(args.device),
        "device_kind": args.device.split(":")[0],
        "threads": args.threads,
        "quick": args.quick,
        "spec": {**spec.as_dict(), "seed": None},
        "seeds": args.seeds,
        "data": {
            "generator": "python -m retinamask_d2.data.synthetic",
            "train_images": args.num_train,
            "val_images": args.num_val,
            "image_size": args.data_image_size,
            "seed": DATA_SEED,
        },
        "turn_iters": args.turn,
        "timed_images": args.timed_images,
        "repeats_per_image": args.repeats,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "environment": environment(),
        "models": combine_seeds(args.seeds, runs),
        "train_wall_s": sum(train_walls),
        "wall_s": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads, same for all")
    parser.add_argument("--max-iter", type=int, help="training iterations (default: SharedSpec)")
    parser.add_argument("--num-train", type=int, default=600, help="synthetic training images")
    parser.add_argument("--num-val", type=int, default=100, help="synthetic validation images")
    parser.add_argument("--data-image-size", type=int, default=128, help="synthetic image side")
    parser.add_argument("--data-dir", type=Path, default=Path("datasets/benchmark_synthetic"))
    parser.add_argument("--timed-images", type=int, default=50, help="images timed per model")
    parser.add_argument(
        "--repeats", type=int, default=3, help="calls per image; the fastest counts"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed images per model")
    parser.add_argument("--turn", type=int, default=10, help="iterations per turn of a model")
    parser.add_argument(
        "--seeds", type=int, nargs="+", help="one training of every model per seed (default 0 1 2)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "accuracy.json")
    parser.add_argument("--work-dir", type=Path, default=Path("output/benchmarks"))
    parser.add_argument("--quick", action="store_true", help="a few iterations: seconds")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_threads(args.threads)
    if args.serve:
        replies = claim_stdout()
        spec = SharedSpec(**json.loads(args.spec))
        output_dir = args.work_dir / "accuracy" / f"seed{spec.seed}"
        serve_model(
            args.model,
            spec,
            args.data_dir,
            output_dir,
            args.turn,
            args.repeats,
            args.device,
            replies,
        )
        return

    spec = SharedSpec()
    if args.quick:
        spec = QUICK_SPEC
        args.num_train, args.num_val, args.data_image_size = 8, 4, spec.image_size
        args.timed_images, args.warmup, args.turn, args.repeats = 2, 0, 2, 1
        args.seeds = args.seeds or [0, 1]  # two, so that the seeds are combined
        args.data_dir = args.work_dir / "synthetic_quick"
    args.seeds = args.seeds or list(SEEDS)
    if args.max_iter is not None:
        spec = replace(spec, max_iter=args.max_iter)
    result = run(args, spec)
    write_json(args.out, result)
    print(f"accuracy: wrote {args.out} in {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
