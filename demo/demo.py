#!/usr/bin/env python
"""RetinaMask demo: predict instance masks on images, folders, a video or a webcam.

    python demo/demo.py --input photo.jpg                      # the quickstart's trained model
    python demo/demo.py --input photos/ --json --cutouts       # + COCO results, RGBA cut-outs
    python demo/demo.py --input photos/ --cutouts --upright    # cut-outs turned upright
    python demo/demo.py --config-file CFG.yaml --input 'photos/**/*.jpg' \\
        --output out/ --opts MODEL.WEIGHTS model_final.pth

Writes into ``--output`` (default ``output/demo``): one drawing per image (same name as the
input), ``results.json`` with ``--json`` and ``cutouts/`` with ``--cutouts``. Files that fail
are reported one by one and the others still processed; the exit code is 0 when every input
worked, 1 when any failed, 2 when nothing could start (bad options, no model, no inputs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml
from detectron2.config import CfgNode
from detectron2.structures import Instances
from tqdm import tqdm

from retinamask_d2.cli import USER_ERRORS, UsageError, fall_back_to_cpu, require_weights
from retinamask_d2.data.image_files import list_images
from retinamask_d2.data.image_io import DEFAULT_MAX_MEGAPIXELS, ImageReadError, read_image
from retinamask_d2.evaluation.coco_results import coco_results
from retinamask_d2.predictor import PRECISIONS, RetinaMaskPredictor, load_config
from retinamask_d2.visualization.cutouts import make_cutouts
from retinamask_d2.visualization.draw import draw_instances

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the demo's own modules, next to it
from plan_outputs import (  # noqa: E402
    DEFAULT_OUTPUT,
    ImageJob,
    existing_cutouts,
    existing_output,
    plan_image_outputs,
    write_bytes,
    write_image,
)
from video_demo import stream_frames, stream_output  # noqa: E402

# Where `make quickstart` leaves its trained model; used when no --config-file is given.
QUICKSTART_DIR = Path(__file__).resolve().parents[1] / "output" / "quickstart"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="RetinaMask demo: instance masks on images, a video or a webcam.",
    )
    parser.add_argument(
        "--config-file",
        metavar="FILE",
        help="model config; default: the quickstart's trained model in "
        f"{_shown(QUICKSTART_DIR)} (config.yaml and model_final.pth)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input",
        nargs="+",
        metavar="PATH",
        help="image files, folders (their image files) or glob patterns such as 'dir/**/*.jpg'",
    )
    source.add_argument("--video-input", metavar="FILE", help="a video file")
    source.add_argument("--webcam", action="store_true", help="the first webcam (camera 0)")
    parser.add_argument(
        "--output",
        metavar="PATH",
        help=f"a folder (default {DEFAULT_OUTPUT}), or a file name for one input image or a "
        "video (.mp4/.avi); for --webcam, a video file (default: show a window)",
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="",
        metavar="FILE",
        help="also write COCO results (RLE masks, XYWH boxes, scores, category ids, file names); "
        "default file: results.json in the output folder",
    )
    parser.add_argument(
        "--cutouts",
        nargs="?",
        const="",
        metavar="FOLDER",
        help="also write one RGBA PNG per instance, cropped to its mask, background transparent; "
        "default folder: cutouts/ in the output folder",
    )
    parser.add_argument(
        "--upright",
        action="store_true",
        help="with --cutouts: turn each instance so that the long side of its mask's "
        "minimum-area rectangle is horizontal, cropped tight (a tilted bar becomes a strip)",
    )
    parser.add_argument(
        "--class-agnostic",
        action="store_true",
        help="NMS across classes: one detection per object "
        "(MODEL.RETINAMASK.CLASS_AGNOSTIC_NMS True)",
    )
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.5,
        metavar="SCORE",
        help="keep detections scoring at least this (default 0.5)",
    )
    parser.add_argument(
        "--precision",
        choices=sorted(PRECISIONS),
        default="fp32",
        help="run the model under autocast in bf16 or fp16 (fp16: GPUs only); default fp32",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace outputs that exist already"
    )
    parser.add_argument(
        "--batch-size", type=int, default=1, metavar="N", help="images per forward pass (default 1)"
    )
    parser.add_argument(
        "--max-megapixels",
        type=float,
        metavar="MP",
        help="skip larger images: their full-size masks would need too much memory (default: "
        f"the config's INPUT.MAX_IMAGE_MEGAPIXELS, {DEFAULT_MAX_MEGAPIXELS:g} unless set)",
    )
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides, e.g. MODEL.WEIGHTS model.pth MODEL.DEVICE cpu",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        _check_args(args)
        cfg = setup_cfg(args)
        if args.input is not None:
            return run_images(args, cfg)
        return run_stream(args, cfg)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _check_args(args: argparse.Namespace) -> None:
    if not 0.0 <= args.confidence_threshold <= 1.0:
        raise UsageError(
            f"--confidence-threshold must be in [0, 1], got {args.confidence_threshold}"
        )
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_megapixels is not None and args.max_megapixels <= 0:
        raise UsageError(f"--max-megapixels must be positive, got {args.max_megapixels}")
    if args.input is None and (args.json is not None or args.cutouts is not None):
        raise UsageError("--json and --cutouts work with --input images, not video or webcam")
    if args.upright and args.cutouts is None:
        raise UsageError("--upright turns the cut-outs: use it with --cutouts")


# ---------------------------------------------------------------------------------------------
# The model


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    """The config of the model to run: --config-file (or the quickstart's), then --opts and the
    options that stand for config keys."""
    if args.config_file is not None:
        config_file, weights = Path(args.config_file), None
        if not config_file.is_file():
            raise UsageError(f"--config-file {config_file}: no such file")
    else:
        config_file, weights = QUICKSTART_DIR / "config.yaml", QUICKSTART_DIR / "model_final.pth"
        if not (config_file.is_file() and weights.is_file()):
            raise UsageError(_no_model_message())
    try:
        cfg = load_config(config_file, weights, args.opts)
    except (KeyError, ValueError, AssertionError, TypeError, OSError, yaml.YAMLError) as e:
        source = f"{config_file} or --opts" if args.opts else str(config_file)
        raise UsageError(f"bad config in {source}: {e}") from None
    if args.class_agnostic:
        cfg.MODEL.RETINAMASK.CLASS_AGNOSTIC_NMS = True
    if args.max_megapixels is not None:
        cfg.INPUT.MAX_IMAGE_MEGAPIXELS = args.max_megapixels
    fall_back_to_cpu(cfg)
    require_weights(cfg, config_file)
    cfg.freeze()
    return cfg


def _no_model_message() -> str:
    return (
        f"no --config-file given, and the quickstart's trained model is not in "
        f"{_shown(QUICKSTART_DIR)} (config.yaml and model_final.pth). Either train it first "
        "with `make quickstart`, or name a config and its weights:\n"
        "  python demo/demo.py --config-file CONFIG.yaml --input IMAGES... "
        "--opts MODEL.WEIGHTS path/to/model_final.pth"
    )


def build_predictor(cfg: CfgNode, args: argparse.Namespace) -> RetinaMaskPredictor:
    """The predictor; it applies --confidence-threshold (the model keeps only those detections)."""
    return RetinaMaskPredictor(
        cfg, confidence_threshold=args.confidence_threshold, precision=args.precision
    )


def _files_read(args: argparse.Namespace, cfg: CfgNode) -> dict[str, Path]:
    """The files besides the inputs that the run reads: no output may replace them."""
    config_file = Path(args.config_file) if args.config_file else QUICKSTART_DIR / "config.yaml"
    read = {"the config": config_file}
    if "://" not in cfg.MODEL.WEIGHTS:
        read["the weights"] = Path(cfg.MODEL.WEIGHTS)
    return read


# ---------------------------------------------------------------------------------------------
# Images


@dataclass
class Report:
    """What happened to each input, for the summary and the exit code."""

    succeeded: int = 0
    instances: int = 0
    cutouts: int = 0
    failures: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failures.append(message)
        tqdm.write(f"error: {message}", sys.stderr)


def run_images(args: argparse.Namespace, cfg: CfgNode) -> int:
    report = Report()
    listing = list_images(args.input)
    for note in listing.notes:
        tqdm.write(f"note: {note}", sys.stderr)
    for problem in listing.problems:
        report.fail(problem)
    paths = listing.paths
    if not paths:
        raise UsageError("no input images: " + "; ".join(report.failures))
    jobs, json_path = plan_image_outputs(paths, args, _files_read(args, cfg))
    if not args.overwrite:
        jobs = [job for job in jobs if _outputs_free(job, report)]
    predictor = build_predictor(cfg, args) if jobs else None
    results: list[dict] = []
    start = time.perf_counter()
    with tqdm(total=len(jobs), unit="image", disable=None) as progress:
        for i in range(0, len(jobs), args.batch_size):
            batch = jobs[i : i + args.batch_size]
            for job, image, instances in _predict_chunk(predictor, batch, report):
                try:
                    results += _write_image_outputs(job, image, instances, predictor, args, report)
                    report.succeeded += 1
                    report.instances += len(instances)
                except Exception as e:
                    report.fail(f"{job.path}: cannot write its outputs ({e})")
            progress.update(len(batch))
    if json_path is not None:
        write_bytes(json_path, json.dumps(results).encode(), args.overwrite)
    _print_image_summary(report, len(paths), time.perf_counter() - start, jobs, json_path, args)
    return 1 if report.failures else 0


def _outputs_free(job: ImageJob, report: Report) -> bool:
    problem = existing_output(job)
    if problem:
        report.fail(f"{job.path}: {problem}")
    return not problem


def _predict_chunk(predictor: RetinaMaskPredictor, jobs: list[ImageJob], report: Report):
    """(job, RGB image, instances) of the jobs whose image reads and predicts; others reported.

    Images outside the config's size limits are skipped with a message naming them. The chunk
    goes through the model in one pass; if that fails, image by image, so that the error is
    reported against the image that caused it.
    """
    limits = predictor.size_limits
    loaded = []
    for job in jobs:
        try:
            image = read_image(job.path, "RGB", limits.max_megapixels)
            limits.check(image.shape[1], image.shape[0], str(job.path))
            loaded.append((job, image))
        except ImageReadError as e:
            report.fail(str(e))
        except Exception as e:
            report.fail(f"{job.path}: cannot read it ({type(e).__name__}: {e})")
    if len(loaded) > 1:
        try:
            predictions = predictor.predict_batch([image for _, image in loaded], format="RGB")
            return [(job, image, inst) for (job, image), inst in zip(loaded, predictions)]
        except Exception:
            pass  # found and reported image by image below
    done = []
    for job, image in loaded:
        try:
            done.append((job, image, predictor.predict(image, format="RGB")))
        except Exception as e:
            report.fail(f"{job.path}: prediction failed ({type(e).__name__}: {e})")
    return done


def _write_image_outputs(
    job: ImageJob, image: np.ndarray, instances: Instances, predictor, args, report: Report
) -> list[dict]:
    """Write the drawing and cut-outs of one image; return its COCO results."""
    metadata = predictor.metadata
    drawing = draw_instances(image, instances, metadata)
    job.drawing.parent.mkdir(parents=True, exist_ok=True)
    write_image(job.drawing, drawing, args.overwrite)
    if job.cutout_dir is not None:
        job.cutout_dir.mkdir(parents=True, exist_ok=True)
        for stale in list(existing_cutouts(job)):  # only reached with --overwrite
            stale.unlink()
        for cutout in make_cutouts(image, instances, metadata, upright=args.upright):
            write_image(job.cutout_dir / cutout.file_name(job.cutout_prefix), cutout.rgba, True)
            report.cutouts += 1
    return (
        coco_results(instances, job.image_id, job.name, metadata) if args.json is not None else []
    )


def _print_image_summary(report: Report, total: int, seconds: float, jobs, json_path, args) -> None:
    failed = len(report.failures)
    print(
        f"{report.succeeded} of {total} image(s) done in {seconds:.1f} s, {failed} problem(s); "
        f"{report.instances} instance(s) with score >= {args.confidence_threshold:g}"
    )
    if report.succeeded:
        folders = sorted({str(job.drawing.parent) for job in jobs})
        print(f"  drawings: {', '.join(folders[:3])}{' ...' if len(folders) > 3 else ''}")
        if args.cutouts is not None:
            cutout_dirs = sorted({str(job.cutout_dir) for job in jobs})
            print(f"  cut-outs: {report.cutouts} in {', '.join(cutout_dirs[:3])}")
        if json_path is not None:
            print(f"  COCO results: {json_path}")
    if report.failures:
        print("problems:")
        for message in report.failures:
            print(f"  {message}")


# ---------------------------------------------------------------------------------------------
# Video and webcam


def run_stream(args: argparse.Namespace, cfg: CfgNode) -> int:
    """Draw the predictions on every frame of --video-input or the webcam."""
    output = stream_output(args, DEFAULT_OUTPUT)
    if output is not None and output.exists() and not args.overwrite:
        print(f"error: {output} exists already; pass --overwrite", file=sys.stderr)
        return 1
    source = "webcam 0" if args.webcam else args.video_input
    capture = cv2.VideoCapture(0 if args.webcam else args.video_input)
    if not capture.isOpened():
        capture.release()
        print(f"error: {source}: cannot be opened as a video", file=sys.stderr)
        return 1
    frames = stream_frames(capture, build_predictor(cfg, args), output, source)
    print(f"{frames} frame(s) of {source} done" + (f"; video: {output}" if output else ""))
    return 0 if frames else 1


def _shown(path: Path) -> str:
    """A path relative to the working folder when it is below it (shorter messages)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
