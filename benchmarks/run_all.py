"""Run every benchmark, then write the generated tables of docs/benchmarks.md and the plots
(``make bench``).

    python -m benchmarks.run_all --threads 2      # ~1 hour on a 2-core CPU (make bench)
    python -m benchmarks.run_all --device cuda    # COCO-scale timings on the GPU as well
    python -m benchmarks.run_all --quick          # seconds; results in benchmarks/results/tmp

The accuracy benchmark always runs on the CPU (its numbers are the CPU's); the COCO-scale
inference benchmark runs on the CPU and, with ``--device cuda``, on the GPU too, each device
getting its own ``inference_cost_<device>.json``.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import RESULTS_DIR
from benchmarks.report import publish


def run_module(name: str, args: list[str]) -> None:
    """Run ``python -m benchmarks.<name>`` with this Python; stop everything if it fails."""
    cmd = [sys.executable, "-m", f"benchmarks.{name}", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="extra device for the COCO-scale timing")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads, same for all")
    parser.add_argument("--quick", action="store_true", help="check the harness in seconds")
    parser.add_argument("--results-dir", type=Path, help="default benchmarks/results (/tmp)")
    parser.add_argument("--work-dir", type=Path, default=Path("output/benchmarks"))
    parser.add_argument("--seeds", type=int, nargs="+", help="accuracy seeds (default 0 1 2)")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-inference", action="store_true")
    args = parser.parse_args()
    results = args.results_dir or (RESULTS_DIR / "tmp" if args.quick else RESULTS_DIR)
    common = ["--threads", str(args.threads), "--work-dir", str(args.work_dir)]
    common += ["--quick"] if args.quick else []

    start = time.perf_counter()
    if not args.skip_accuracy:
        seeds = ["--seeds", *map(str, args.seeds)] if args.seeds else []
        run_module(
            "accuracy.compare_models", [*common, *seeds, "--out", str(results / "accuracy.json")]
        )
    if not args.skip_inference:
        devices = ["cpu"] if args.device == "cpu" else ["cpu", args.device]
        for device in devices:
            out = results / f"inference_cost_{device.split(':')[0]}.json"
            run_module("timing.inference_cost", [*common, "--device", device, "--out", str(out)])
    print(publish(results)["benchmarks"])
    print(f"run_all: results in {results}, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
