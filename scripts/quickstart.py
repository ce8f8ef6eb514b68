#!/usr/bin/env python
"""The quickstart (``make quickstart``): RetinaMask fine-tuned from ImageNet MobileNetV2 on a 2-core
CPU, with real masks, in about 15 minutes.

1. makes the synthetic shapes dataset in ``<datasets root>/synthetic`` (``$RETINAMASK_DATASETS``,
   default ``datasets/`` of this checkout) unless it is already there;
2. trains ``configs/quickstart/retinamask_MNV2_synthetic.yaml`` (``--config``; ImageNet weights
   of ``make env``) with ``train_net.py --resume`` (so an interrupted quickstart continues where
   it stopped) and evaluates the final model on the validation split (COCO box and mask AP). It
   beats the from-scratch ResNet-18 (``retinamask_R18_synthetic.yaml``) on every class in the
   same time (docs/backbones.md);
3. runs ``demo/demo.py`` on held-out validation images and writes the drawings;
4. prints the AP and where everything is, and writes them to ``<output>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package
# The data lives in the checkout's datasets/ wherever this is started from; train_net.py runs
# in the checkout and inherits the variable.
os.environ.setdefault("RETINAMASK_DATASETS", str(ROOT / "datasets"))

from retinamask_d2.data import datasets_root  # noqa: E402
from retinamask_d2.data.synthetic import generate, is_generated  # noqa: E402

CONFIG = ROOT / "configs" / "quickstart" / "retinamask_MNV2_synthetic.yaml"
IMAGE_SIZE, SEED = 128, 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "output" / "quickstart")
    parser.add_argument(
        "--config",
        type=Path,
        default=CONFIG,
        help="e.g. configs/quickstart/retinamask_R18_synthetic.yaml: from scratch, no weights",
    )
    parser.add_argument("--train-images", type=int, default=600, help="synthetic training images")
    parser.add_argument("--val-images", type=int, default=60, help="synthetic validation images")
    parser.add_argument("--demo-images", type=int, default=8, help="validation images to draw")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides for train_net.py (KEY VALUE ...)"
    )
    return parser.parse_args(argv)


def make_data(args: argparse.Namespace) -> Path:
    folder = datasets_root() / "synthetic"
    counts = {"train": args.train_images, "val": args.val_images}
    if is_generated(folder, counts, IMAGE_SIZE, SEED):
        print(f"[quickstart] using the synthetic dataset in {folder}")
    else:
        print(f"[quickstart] making the synthetic dataset in {folder} ...", flush=True)
        generate(folder, counts, IMAGE_SIZE, SEED)
    return folder


def run(command: list[str]) -> None:
    print("[quickstart] $ " + " ".join(command), flush=True)
    code = subprocess.run(command, cwd=ROOT).returncode
    if code != 0:
        sys.exit(f"[quickstart] {Path(command[1]).name} failed (exit code {code}); see above")


def final_ap(output: Path) -> dict[str, float]:
    """The last evaluation that train_net.py wrote to metrics.json."""
    lines = (output / "metrics.json").read_text().splitlines()
    evaluations = [m for m in map(json.loads, lines) if "bbox/AP" in m]
    if not evaluations:
        raise RuntimeError(
            f"{output / 'metrics.json'} holds no evaluation; see {output / 'log.txt'}"
        )
    return {k: v for k, v in evaluations[-1].items() if k.startswith(("bbox/", "segm/"))}


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    output = args.output.resolve()
    started = time.monotonic()
    data = make_data(args)
    made_data = time.monotonic()

    run(
        [sys.executable, str(ROOT / "train_net.py"), "--resume", "--config-file", str(args.config)]
        + ["OUTPUT_DIR", str(output), *args.opts]
    )
    trained = time.monotonic()

    inputs = sorted((data / "val").glob("*.png"))[: args.demo_images]
    demo_dir = output / "demo"
    run(
        [sys.executable, str(ROOT / "demo" / "demo.py"), "--config-file"]
        + [str(output / "config.yaml"), "--input", *map(str, inputs), "--output", str(demo_dir)]
        + ["--overwrite", "--opts", "MODEL.WEIGHTS", str(output / "model_final.pth")]
    )
    finished = time.monotonic()

    ap = final_ap(output)
    times = {
        "data": made_data - started,
        "training and evaluation": trained - made_data,
        "demo": finished - trained,
    }
    lines = [
        f"[quickstart] done in {_minutes(finished - started)} ("
        + ", ".join(f"{name} {_minutes(t)}" for name, t in times.items())
        + ")",
        f"  box AP   {_ap_line(ap, 'bbox')}  on {args.val_images} validation images",
        f"  mask AP  {_ap_line(ap, 'segm')}",
        f"  data            {data}/{{train,val}}.json and images",
        f"  model           {output / 'model_final.pth'}  (config {output / 'config.yaml'})",
        f"  log, metrics    {output / 'log.txt'}, {output / 'metrics.json'}",
        f"  TensorBoard     tensorboard --logdir {output}",
        f"  COCO results    {output / 'inference'}",
        f"  visualizations  {demo_dir}/ ({len(inputs)} held-out images)",
        "  your images     python demo/demo.py --input photo.jpg",
    ]
    print("\n" + "\n".join(lines))
    summary = {
        "seconds": {name: round(t, 1) for name, t in times.items()},
        "total_seconds": round(finished - started, 1),
        "ap": ap,
        "val_images": args.val_images,
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    # benchmarks.report writes the generated quickstart line from a copy of this file.
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return ap


def _ap_line(ap: dict[str, float], task: str) -> str:
    return (
        f"{ap[task + '/AP']:5.1f}  (AP50 {ap[task + '/AP50']:.1f}, AP75 {ap[task + '/AP75']:.1f})"
    )


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


if __name__ == "__main__":
    main()
