"""The quickstart fine-tuned from ImageNet MobileNetV2 against the from-scratch ResNet-18 one, in
the same time budget: AP per class, 2 seeds each.

    python -m benchmarks.accuracy.mobilenetv2_quickstart budget      # s/iter of both, in turn
    python -m benchmarks.accuracy.mobilenetv2_quickstart train --seeds 0 1   # what is missing
    python -m benchmarks.accuracy.mobilenetv2_quickstart table       # markdown from the JSON
    python -m benchmarks.accuracy.mobilenetv2_quickstart budget \
        --models mnv2_imagenet mnv2_imagenet_oriented        # a variant's step time, in turn

``budget`` trains both quickstart models in one process, step by step in turn on the same
batches (real learning rate, MobileNetV2 from its ImageNet weights), so that load from elsewhere
slows both alike; MobileNetV2 gets the iterations that take the ResNet-18 quickstart's 1200
iterations' time (learning-rate steps scaled alike). ``train`` runs ``train_net.py`` on each
config and seed into ``output/mobilenetv2_quickstart/<model>_seed<seed>`` (a finished run is not
trained again) and records the final box and mask AP, per class too, in
``benchmarks/results/mobilenetv2_quickstart.json``; ``table`` writes the generated block of
docs/backbones.md from it (and from ``benchmarks.timing.mobilenetv2_inference``'s results).
Without ResNet-18 runs of its own, the table shows the shipped quickstart's recorded ones
(quickstart_variants.json).
Kept apart from the shared report module on purpose: one small table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

from benchmarks.harness import RESULTS_DIR, environment, load_average, write_json

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
CONFIGS = {
    "r18_scratch": ROOT / "configs" / "quickstart" / "retinamask_R18_synthetic.yaml",
    "mnv2_imagenet": ROOT / "configs" / "quickstart" / "retinamask_MNV2_synthetic.yaml",
}
LABELS = {
    "r18_scratch": "ResNet-18 GN, from scratch (the quickstart)",
    "mnv2_imagenet": "MobileNetV2, ImageNet (retinamask_MNV2_synthetic)",
}
# Variants trained like a model above with KEY VALUE overrides: (model, overrides)
VARIANTS_OF = {
    "mnv2_imagenet_ratios": (
        "mnv2_imagenet",
        ["MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[0.2,0.5,1.0,2.0,5.0]]"],
    ),
}
VARIANTS_OF["mnv2_imagenet_oriented"] = ("mnv2_imagenet", ["MODEL.RETINAMASK.MASK_ROI", "oriented"])
LABELS["mnv2_imagenet_ratios"] = "MobileNetV2, ImageNet, anchor ratios 0.2–5 (thin config's)"
LABELS["mnv2_imagenet_oriented"] = "MobileNetV2, ImageNet, oriented mask RoIs"
MODELS = [*CONFIGS, *VARIANTS_OF]
RESULTS = RESULTS_DIR / "mobilenetv2_quickstart.json"
VARIANTS = RESULTS_DIR / "quickstart_variants.json"
INFERENCE = RESULTS_DIR / "mobilenetv2_inference_cpu.json"
DOCS = ROOT / "docs" / "backbones.md"
BLOCK = "mobilenetv2"
CLASSES = ("bar", "disk", "square", "triangle")


def _cfg(name: str, data_dir: Path):
    from detectron2.config import get_cfg

    from retinamask_d2 import add_retinamask_config
    from retinamask_d2.data.user_datasets import setup_datasets

    base, overrides = VARIANTS_OF.get(name, (name, []))
    cfg = get_cfg()
    add_retinamask_config(cfg)
    cfg.merge_from_file(str(CONFIGS[base]))
    cfg.merge_from_list(list(overrides))
    cfg.DATASETS.COCO_JSON = (
        ("mnv2_bench_train", str(data_dir / "train.json"), str(data_dir / "train")),
    )
    cfg.DATASETS.TRAIN = ("mnv2_bench_train",)
    cfg.DATASETS.TEST = ()
    setup_datasets(cfg)
    return cfg


def budget(args: argparse.Namespace) -> dict:
    """Median s/iter of ``args.models`` (by default both quickstart models) trained in turn on
    the same batches; with both quickstart models, MobileNetV2's iterations in ResNet-18's time."""
    import torch
    from detectron2.modeling import build_model
    from detectron2.solver import build_lr_scheduler, build_optimizer
    from detectron2.utils.events import EventStorage

    from retinamask_d2.checkpoint.checked import CheckedCheckpointer
    from retinamask_d2.engine.trainer import Trainer

    torch.set_num_threads(args.threads)
    runs, batches = {}, None
    for name in args.models:
        cfg = _cfg(name, args.data_dir)
        torch.manual_seed(0)
        model = build_model(cfg).train()
        if cfg.MODEL.WEIGHTS:
            CheckedCheckpointer(model).load(cfg.MODEL.WEIGHTS)
        optimizer = build_optimizer(cfg, model)
        runs[name] = (model, optimizer, build_lr_scheduler(cfg, optimizer), [])
        if batches is None:
            loader = iter(Trainer.build_train_loader(cfg))
            batches = [next(loader) for _ in range(args.steps)]
    with EventStorage(0):
        for i, batch in enumerate(batches):
            for model, optimizer, scheduler, times in runs.values():
                start = time.perf_counter()
                loss = sum(model(batch).values())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                if i >= args.warmup:
                    times.append(time.perf_counter() - start)
    s_per_iter = {name: median(run[3]) for name, run in runs.items()}
    timed = {
        "s_per_iter": s_per_iter,
        "first_step": args.warmup,
        "steps_timed": args.steps - args.warmup,
        "threads": args.threads,
        "load_average_at_end": load_average(),
    }
    if set(CONFIGS) <= set(s_per_iter):
        ratio = s_per_iter["r18_scratch"] / s_per_iter["mnv2_imagenet"]
        timed["r18_iterations"] = 1200
        timed["mnv2_iterations"] = int(round(1200 * ratio / 50) * 50)  # whole 50s
    return timed


def _schedule(iterations: int) -> list[str]:
    """The quickstart's schedule (1200 iterations, LR steps at 900 and 1100) scaled."""
    steps = (round(iterations * 0.75), round(iterations * 1100 / 1200))
    return [
        "SOLVER.MAX_ITER", str(iterations),
        "SOLVER.STEPS", f"({steps[0]}, {steps[1]})",
        "SOLVER.CHECKPOINT_PERIOD", str(max(iterations // 4, 1)),
    ]  # fmt: skip


def train_one(name: str, seed: int, iterations: int, args: argparse.Namespace) -> Path:
    out = args.work_dir / f"{name}_seed{seed}"
    if (out / "model_final.pth").is_file() and (out / "metrics.json").is_file():
        return out
    base, overrides = VARIANTS_OF.get(name, (name, []))
    command = [
        sys.executable, str(ROOT / "train_net.py"), "--resume", "--config-file", str(CONFIGS[base]),
        "--train-json", str(args.data_dir / "train.json"),
        "--train-images", str(args.data_dir / "train"),
        "--test-json", str(args.data_dir / "val.json"),
        "--test-images", str(args.data_dir / "val"),
        "OUTPUT_DIR", str(out), "SEED", str(seed), *_schedule(iterations), *overrides,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    started = time.monotonic()
    subprocess.run(command, check=True, env=env, cwd=ROOT)
    (out / "wall_seconds.txt").write_text(f"{time.monotonic() - started:.1f}\n")
    return out


def collect(out: Path) -> dict | None:
    """Final AP (all, per class) and median step time of a finished run (None: not evaluated)."""
    if not (out / "model_final.pth").is_file() or not (out / "metrics.json").is_file():
        return None
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    evaluated = [r for r in records if "segm/AP" in r]
    if not evaluated:
        return None
    steps = [r["time"] for r in records if "time" in r]
    wall = out / "wall_seconds.txt"
    return {
        "ap": {k: v for k, v in evaluated[-1].items() if k.startswith(("bbox/AP", "segm/AP"))},
        "iterations": max(r["iteration"] for r in records if "time" in r) + 1,
        "s_per_iter": median(steps) if steps else None,
        "wall_seconds": float(wall.read_text()) if wall.is_file() else None,
    }


def train(args: argparse.Namespace) -> None:
    result = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if "budget" not in result:
        sys.exit(f"{RESULTS} has no budget: run `{Path(__file__).name} budget` first")
    mnv2 = result["budget"]["mnv2_iterations"]
    iterations = {"r18_scratch": 1200, **{name: mnv2 for name in MODELS if name != "r18_scratch"}}
    runs = []
    for seed in args.seeds:
        for name in args.models:
            out = train_one(name, seed, iterations[name], args)
            found = collect(out)
            if found is not None:
                runs.append({"model": name, "seed": seed, **found})
    kept = [r for r in result.get("runs", []) if (r["model"], r["seed"]) not in
            {(n["model"], n["seed"]) for n in runs}]  # fmt: skip
    result.update(
        runs=sorted(kept + runs, key=lambda r: (r["model"], r["seed"])),
        train_threads=args.threads,
        environment=environment(),
        load_average_at_end=load_average(),
    )
    write_json(RESULTS, result)
    print(table(result))


def r18_runs(result: dict) -> list[dict]:
    """The ResNet-18 runs: this benchmark's own, else the shipped quickstart's recorded ones
    (``quickstart_variants.json``, variant ``p2_dice``: the same config, 1200 iterations)."""
    own = [r for r in result.get("runs", []) if r["model"] == "r18_scratch"]
    if own or not VARIANTS.is_file():
        return own
    recorded = json.loads(VARIANTS.read_text())["runs"]
    return [
        {"model": "r18_scratch", "seed": r["seed"], "iterations": 1200, "ap": r["ap"],
         "recorded_in": VARIANTS.name}
        for r in recorded if r["variant"] == "p2_dice"
    ]  # fmt: skip


def table(result: dict) -> str:
    """Markdown: one row per model and seed, AP and AP per class, the budget and the verdict."""
    runs = r18_runs(result) + [r for r in result.get("runs", []) if r["model"] != "r18_scratch"]
    header = ["backbone", "seed", "iterations", "box AP", "mask AP"]
    header += [f"mask AP {c}" for c in CLASSES] + [f"box AP {c}" for c in CLASSES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        ap = run["ap"]
        label = LABELS[run["model"]] + (f" [{run['recorded_in']}]" if "recorded_in" in run else "")
        cells = [label, str(run["seed"]), str(run["iterations"])]
        cells += [_f(ap.get("bbox/AP")), _f(ap.get("segm/AP"))]
        cells += [_f(ap.get(f"segm/AP-{c}")) for c in CLASSES]
        cells += [_f(ap.get(f"bbox/AP-{c}")) for c in CLASSES]
        lines.append("| " + " | ".join(cells) + " |")
    b = result.get("budget")
    if b:
        s = b["s_per_iter"]
        lines.append(
            f"\nEqual time: {s['r18_scratch']:.3f} s/iter (ResNet-18) and "
            f"{s['mnv2_imagenet']:.3f} s/iter (MobileNetV2) measured in turn in one process "
            f"({b['threads']} thread, median of {b['steps_timed']} steps each"
            f"{_after(b)}, load average {b['load_average_at_end'][0]}), so MobileNetV2 trains "
            f"{b['mnv2_iterations']} iterations in the time of ResNet-18's {b['r18_iterations']}."
        )
    verdict = _verdict(runs)
    if verdict:
        lines.append("\n" + verdict)
    return "\n".join(lines)


def _after(budget: dict) -> str:
    return f" after {budget['first_step']} untimed ones" if "first_step" in budget else ""


def _verdict(runs: list[dict]) -> str:
    """Whether MobileNetV2's worst seed beats ResNet-18's best seed, mask AP per class."""
    by_model = {
        m: [r["ap"] for r in runs if r["model"] == m] for m in ("r18_scratch", "mnv2_imagenet")
    }
    if not all(by_model.values()):
        return ""
    losing = [
        c for c in CLASSES
        if min(a[f"segm/AP-{c}"] for a in by_model["mnv2_imagenet"])
        <= max(a[f"segm/AP-{c}"] for a in by_model["r18_scratch"])
    ]  # fmt: skip
    if not losing:
        return "MobileNetV2's worst seed beats ResNet-18's best seed in mask AP on every class."
    return "MobileNetV2 (worst seed) does not beat ResNet-18 (best seed) in mask AP on: " + (
        ", ".join(losing)
    )


def write_docs(markdown: str) -> None:
    """Replace the generated block of docs/backbones.md with ``markdown``."""
    text = DOCS.read_text(encoding="utf-8")
    start, end = f"<!-- generated:{BLOCK} -->", f"<!-- /generated:{BLOCK} -->"
    if start not in text or end not in text:
        raise SystemExit(f"{DOCS}: no {start} ... {end} block to fill")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    DOCS.write_text(f"{head}{start}\n{markdown}\n{end}{tail}", encoding="utf-8")


def inference_line() -> str:
    """The COCO-scale CPU inference comparison of mobilenetv2_inference.py, if measured."""
    if not INFERENCE.is_file():
        return ""
    r = json.loads(INFERENCE.read_text())
    ms, bottom_up = r["median_ms"], r["bottom_up_median_ms"]
    rows = [
        ("RetinaMask R-50-FPN", "retinamask_R50_FPN"),
        ("RetinaMask MobileNetV2-FPN", "retinamask_MNV2_FPN"),
        ("RetinaMask MobileNetV2-FPN-128 (COCO accuracy unmeasured)", "retinamask_MNV2_FPN_128"),
    ]
    r50 = ms["retinamask_R50_FPN"]
    lines = [
        f"CPU inference at 800x1333 ({r['threads']} thread, median of {r['repeats']} in turn, "
        f"random weights, 100 detections and 50 masks each; load average "
        f"{r['load_average_at_start'][0]} at the start, {r['load_average_at_end'][0]} at the end, "
        "on 2 cores shared with other jobs):",
        "",
        "| model | ms / image | of R-50-FPN | bottom-up network alone, ms |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {label} | {ms[key]:.0f} | {ms[key] / r50:.2f}x | {bottom_up[key]:.0f} |"
        for label, key in rows
        if key in ms
    ]
    return "\n".join(lines)


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["budget", "train", "table"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=MODELS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40, help="budget: steps per model")
    parser.add_argument("--warmup", type=int, default=8, help="budget: untimed first steps")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "datasets" / "synthetic")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "output" / "mobilenetv2_quickstart")
    args = parser.parse_args()
    if args.command == "table":
        markdown = table(json.loads(RESULTS.read_text()))
        markdown += "\n\n" + inference_line() if inference_line() else ""
        write_docs(markdown)
        print(markdown)
        return
    if not (args.data_dir / "val.json").is_file():
        from retinamask_d2.data.synthetic import generate

        generate(args.data_dir, {"train": 600, "val": 60}, 128, 0)
    if args.command == "budget":
        # The two quickstart models set the budget; other sets are step-time comparisons.
        key = "budget" if args.models == list(CONFIGS) else "+".join(args.models)
        result = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
        result["benchmark"] = "mobilenetv2_quickstart"
        result.setdefault("steps_in_turn", {})
        if key == "budget":
            result["budget"] = budget(args)
        else:
            result["steps_in_turn"][key] = budget(args)
        write_json(RESULTS, result)
        print(json.dumps(result.get(key) or result["steps_in_turn"][key], indent=2))
    else:
        train(args)


if __name__ == "__main__":
    main()
