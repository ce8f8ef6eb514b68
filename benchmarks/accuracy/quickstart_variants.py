"""The quickstart recipe with one mask-branch change at a time: AP per class, above all the bars.

Each variant trains ``configs/quickstart/retinamask_R18_synthetic.yaml`` (the quickstart: 1200
iterations of batch 4 on the synthetic shapes, evaluation on the 60 validation images) with its
``KEY VALUE`` overrides, one thread, into ``<work-dir>/<variant>_seed<seed>``, with the
benchmarks' training driver (the trainer and seeding of ``train_net.py``); a finished run is not
trained again, so a stopped benchmark continues. The results file holds each run's final box and
mask AP, per class too, and its median step time.

    python -m benchmarks.accuracy.quickstart_variants --seeds 0 1   # quickstart_variants.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import median

from detectron2.config import get_cfg

from benchmarks.harness import RESULTS_DIR, ROOT, environment, load_average, set_threads, write_json
from benchmarks.training import build_trainer, register
from retinamask_d2 import add_retinamask_config
from retinamask_d2.data.synthetic import generate, is_generated

CONFIG = ROOT / "configs" / "quickstart" / "retinamask_R18_synthetic.yaml"
PAPER = [
    "MODEL.RESNETS.OUT_FEATURES", '["res3","res4","res5"]',
    "MODEL.FPN.IN_FEATURES", '["res3","res4","res5"]',
    "MODEL.RETINAMASK.MASK_IN_FEATURES", '["p3","p4","p5"]',
    "MODEL.RETINAMASK.MASK_DICE_WEIGHT", "0.0",
]  # fmt: skip
DATA = {"train": 600, "val": 60}  # the quickstart's synthetic shapes
NO_DICE = ["MODEL.RETINAMASK.MASK_DICE_WEIGHT", "0.0"]
RATIOS = ["MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[0.2,0.5,1.0,2.0,5.0]]"]
BOX_15 = ["MODEL.RETINAMASK.MASK_BOX_SCALE", "1.5"]
# name -> (description, overrides on top of the shipped quickstart config)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "paper": ("paper's masks (P3–P5, BCE)", PAPER),
    "p2": ("P2–P5, BCE", NO_DICE),
    "p2_dice": ("P2–P5 + Dice (the default)", []),
    "p2_dice_ratios": ("P2–P5 + Dice, ratios 0.2–5 (thin config)", RATIOS),
    "p2_dice_box15": ("P2–P5 + Dice, masks over 1.5× boxes", BOX_15),
}  # fmt: skip


def train(variant: str, seed: int, args) -> Path:
    """Train one run unless it has finished; its output folder."""
    out = args.work_dir / f"{variant}_seed{seed}"
    if (out / "model_final.pth").is_file() and (out / "metrics.json").is_file():
        return out
    cfg = get_cfg()
    add_retinamask_config(cfg)
    cfg.merge_from_file(str(CONFIG))
    train_name, val_name = register(args.data_dir, "quickstart_variants")
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (train_name,), (val_name,)
    cfg.merge_from_list(["OUTPUT_DIR", str(out), "SEED", str(seed), *VARIANTS[variant][1]])
    build_trainer(cfg).train()
    return out


def collect(out: Path) -> dict | None:
    """Final AP (all, per class) and median step time of a finished run (None: not evaluated)."""
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    evaluated = [r for r in records if "segm/AP" in r or "bbox/AP" in r]
    if not (out / "model_final.pth").is_file() or not evaluated:
        return None
    final = evaluated[-1]
    steps = [r["time"] for r in records if "time" in r]
    return {
        "ap": {k: v for k, v in final.items() if k.startswith(("bbox/AP", "segm/AP"))},
        "s_per_iter": median(steps) if steps else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "datasets" / "synthetic")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "output" / "quickstart_variants")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "quickstart_variants.json")
    parser.add_argument(
        "--collect-only", action="store_true", help="only gather the finished runs' results"
    )
    args = parser.parse_args()
    set_threads(args.threads)
    if not args.collect_only and not is_generated(args.data_dir, DATA, 128, 0):
        generate(args.data_dir, DATA)
    result = {
        "benchmark": "quickstart_variants",
        "config": str(CONFIG.relative_to(ROOT)),
        "threads": args.threads,
        "variants": {name: {"description": d, "overrides": o} for name, (d, o) in VARIANTS.items()},
        "environment": environment(),
        "runs": [],
    }
    for variant in args.variants:
        for seed in args.seeds:
            out = args.work_dir / f"{variant}_seed{seed}"
            if not args.collect_only:
                out = train(variant, seed, args)
            found = collect(out) if (out / "metrics.json").is_file() else None
            if found is not None:
                result["runs"].append({"variant": variant, "seed": seed, **found})
    result["load_average_at_end"] = load_average()
    write_json(args.out, result)
    print(f"quickstart_variants: {len(result['runs'])} runs in {args.out}")


if __name__ == "__main__":
    main()
