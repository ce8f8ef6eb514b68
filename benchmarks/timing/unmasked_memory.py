"""Peak memory of inference when many detections are kept without masks (score threshold 0).

    python -m benchmarks.timing.unmasked_memory --before 95d7dcf

The tiny from-scratch model of ``configs/quick_schedules`` (random weights, score threshold 0, so
that ``TEST.DETECTIONS_PER_IMAGE`` detections are kept) runs on a 64 x 64 image whose results
are asked at ``--size`` x ``--size`` (the ``height`` / ``width`` of the input), for a few
``TEST_TOPK_MASKS``: the masks are pasted at that size, the other detections are kept unmasked.
Each case runs in a process of its own and reports the growth of its peak resident memory
(``ru_maxrss``) over a warm-up inference, and that of its resident memory once the results are
held.
``--before COMMIT`` also runs the package as it was at that commit (``git archive``), side by
side. One more case measures the alternative of an expanded (broadcast) view of one empty mask
for the unmasked detections: ``Instances.cat`` writes it out in full. Writes
``benchmarks/results/unmasked_memory.json``.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from benchmarks.harness import RESULTS_DIR, environment, load_average, write_json

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "quick_schedules" / "retinamask_R18_GN_scratch_instant_test.yaml"
TOPK_MASKS = (5, 50)
MB = 2**20


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _resident_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_model(size: int, topk: int) -> dict:
    """One inference at ``size`` x ``size``, in this process."""
    import torch
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from retinamask_d2 import add_retinamask_config

    cfg = get_cfg()
    add_retinamask_config(cfg)
    cfg.merge_from_file(str(CONFIG))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.RETINAMASK.TEST_TOPK_MASKS = topk
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    image = torch.randint(0, 256, (3, 64, 64), generator=torch.Generator().manual_seed(0)).float()
    with torch.no_grad():
        model([{"image": image}])  # warm-up at the input's size
        before, resident = _peak_bytes(), _resident_bytes()
        start = time.perf_counter()
        (output,) = model([{"image": image, "height": size, "width": size}])
        seconds = time.perf_counter() - start
    instances = output["instances"]
    masked = int(instances.pred_masks.flatten(1).any(1).sum())
    return {
        "detections": len(instances),
        "nonempty_masks": masked,
        "peak_growth_mb": (_peak_bytes() - before) / MB,
        "resident_growth_mb_holding_results": (_resident_bytes() - resident) / MB,
        "seconds": seconds,
    }


def measure_expanded_view(size: int, masked: int, unmasked: int) -> dict:
    """``Instances.cat`` of ``masked`` written masks and an expanded view of one empty mask."""
    import torch
    from detectron2.structures import Instances

    first = Instances((size, size), pred_masks=torch.ones(masked, size, size, dtype=torch.bool))
    rest = torch.zeros(1, size, size, dtype=torch.bool).expand(unmasked, -1, -1)
    before = _peak_bytes()
    joined = Instances.cat([first, Instances((size, size), pred_masks=rest)])
    return {
        "masked": masked,
        "unmasked": unmasked,
        "peak_growth_mb": (_peak_bytes() - before) / MB,
        "joined_masks_contiguous": joined.pred_masks.is_contiguous(),
    }


def run_child(args: list[str], package_root: Path) -> dict:
    # The package of ``package_root`` first, the benchmarks' helpers from this checkout.
    env = {**os.environ, "PYTHONPATH": f"{package_root}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.timing.unmasked_memory", "--child", *args],
        cwd=package_root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def package_at(commit: str, folder: Path) -> Path:
    """The ``retinamask_d2`` package of ``commit``, unpacked under ``folder``."""
    archive = folder / "package.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "archive", commit, "retinamask_d2"], cwd=ROOT, stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--before", help="also measure the package at this commit")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "unmasked_memory.json")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *numbers = args.child
        measure = measure_model if kind == "model" else measure_expanded_view
        print(json.dumps(measure(*map(int, numbers))))
        return

    load_before = load_average()
    versions = {"this checkout": ROOT}
    with tempfile.TemporaryDirectory() as folder:
        if args.before:
            versions[f"commit {args.before}"] = package_at(args.before, Path(folder))
        rows = []
        for topk in TOPK_MASKS:
            for version, root in versions.items():
                row = {"code": version, "size": args.size, "test_topk_masks": topk}
                row.update(run_child(["model", str(args.size), str(topk)], root))
                rows.append(row)
                print(row, flush=True)
        expanded = run_child(["expanded", str(args.size), "5", "95"], ROOT)
    write_json(
        args.out,
        {
            "benchmark": "unmasked_memory",
            "statistic": "growth of the peak resident memory over a warm-up inference, MiB",
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "environment": environment(),
            "rows": rows,
            "expanded_view_then_cat": expanded,
        },
    )
    print(f"unmasked_memory: wrote {args.out}")


if __name__ == "__main__":
    main()
