"""Eager inference time of this checkout's RetinaMask against the model as it was at a commit,
side by side in one process, on the same weights and images.

    python -m benchmarks.timing.eager_speed_before_after --before 95d7dcf --threads 1

Measures whether a change of the inference code (here: the post-processing written as public
steps that the export traces) costs eager speed. The two models are the tiny from-scratch one of
``configs/quick_schedules`` on a 128 x 128 image and the R-50-FPN of
``configs/retinamask_R50_FPN.yaml`` on an 800 x 1333 one, both with random weights and score
threshold 0, so that every image has ``TEST.DETECTIONS_PER_IMAGE`` detections and the top
``TEST_TOPK_MASKS`` get masks: the whole post-processing runs. The commit's ``modeling`` package
is loaded from ``git archive`` under another name; the two models take turns, and the fastest
and the median of ``--iters`` calls are reported with their ratio. Writes
``benchmarks/results/eager_speed_before_after.json``.
"""

import argparse
import importlib
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from statistics import median

import torch
from detectron2.config import get_cfg
from detectron2.modeling import (
    ANCHOR_GENERATOR_REGISTRY,
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    ROI_MASK_HEAD_REGISTRY,
    build_model,
)
from detectron2.utils.registry import Registry

from benchmarks.harness import RESULTS_DIR, environment, load_average, set_threads, write_json
from retinamask_d2 import add_retinamask_config

ROOT = Path(__file__).resolve().parents[2]
CASES = {  # name: (config file, image height, width)
    "tiny R18 GN": ("quick_schedules/retinamask_R18_GN_scratch_instant_test.yaml", 128, 128),
    "R-50-FPN": ("retinamask_R50_FPN.yaml", 800, 1333),
}
BEFORE_PACKAGE = "retinamask_before"


def model_class_at(commit: str, folder: Path) -> type:
    """``RetinaMask`` of ``commit``: its ``retinamask_d2/modeling`` unpacked under ``folder`` as
    ``retinamask_before.modeling`` and imported; its registrations are undone, so that the
    registries keep this checkout's classes."""
    archive = folder / "modeling.tar"
    with open(archive, "wb") as f:
        command = ["git", "archive", commit, "retinamask_d2/modeling"]
        subprocess.run(command, cwd=ROOT, stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    (folder / "retinamask_d2").rename(folder / BEFORE_PACKAGE)
    (folder / BEFORE_PACKAGE / "__init__.py").write_text("")
    registries = (META_ARCH_REGISTRY, BACKBONE_REGISTRY, ROI_MASK_HEAD_REGISTRY)
    registries += (ANCHOR_GENERATOR_REGISTRY,)
    saved = [dict(r._obj_map) for r in registries]
    register = Registry._do_register
    Registry._do_register = lambda self, name, obj: self._obj_map.__setitem__(name, obj)
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module(f"{BEFORE_PACKAGE}.modeling.retinamask")
    finally:
        Registry._do_register = register
        sys.path.remove(str(folder))
        for registry, objects in zip(registries, saved, strict=True):
            registry._obj_map.clear()
            registry._obj_map.update(objects)
    return module.RetinaMask


def build_pair(config: str, before_class: type) -> tuple[torch.nn.Module, torch.nn.Module]:
    cfg = get_cfg()
    add_retinamask_config(cfg)
    cfg.merge_from_file(str(ROOT / "configs" / config))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0
    torch.manual_seed(0)
    after = build_model(cfg).eval()
    before = before_class(cfg).eval()
    before.load_state_dict(after.state_dict())
    return after, before


def call_s(model: torch.nn.Module, inputs: list[dict]) -> tuple[float, object]:
    start = time.perf_counter()
    with torch.no_grad():
        outputs = model(inputs)
    return time.perf_counter() - start, outputs[0]["instances"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the commit to compare with")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "eager_speed_before_after.json")
    args = parser.parse_args()
    set_threads(args.threads)
    load_before = load_average()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        before_class = model_class_at(args.before, Path(folder))
        for name, (config, height, width) in CASES.items():
            after, before = build_pair(config, before_class)
            generator = torch.Generator().manual_seed(0)
            image = torch.randint(0, 256, (3, height, width), generator=generator).float()
            inputs = [{"image": image}]
            times = {"after": [], "before": []}
            results = {}
            for i in range(args.iters + 1):  # the first call of each warms up, not counted
                for label, model in (("after", after), ("before", before)):
                    seconds, results[label] = call_s(model, inputs)
                    if i > 0:
                        times[label].append(seconds)
            same = all(
                torch.equal(results["after"].get(k), results["before"].get(k))
                for k in ("scores", "pred_classes", "pred_masks")
            )
            row = {
                "model": name,
                "input": [height, width],
                "detections": len(results["after"]),
                "masked": int(results["after"].pred_masks.flatten(1).any(1).sum()),
                "identical_results": same,
                **{f"{k}_fastest_s": min(v) for k, v in times.items()},
                **{f"{k}_median_s": median(v) for k, v in times.items()},
            }
            row["after_over_before_fastest"] = row["after_fastest_s"] / row["before_fastest_s"]
            row["after_over_before_median"] = row["after_median_s"] / row["before_median_s"]
            rows.append(row)
            print(row, flush=True)
    write_json(
        args.out,
        {
            "benchmark": "eager_speed_before_after",
            "before": args.before,
            "threads": args.threads,
            "iters": args.iters,
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "environment": environment(),
            "rows": rows,
        },
    )
    print(f"eager_speed_before_after: wrote {args.out}")


if __name__ == "__main__":
    main()
